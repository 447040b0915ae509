package stated

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
)

// multiScheme is the scheme of the Client's own resolver for a list of
// addresses; each Client has a resolver of its own, so nothing is
// registered globally.
const multiScheme = "stated-addrs"

// unixPrefix marks a unix socket in a resolved address, for dialAddr.
const unixPrefix = "unix:"

// multiTarget returns the gRPC target and dial options that connect to
// one of addrs at a time: gRPC's pick_first balancer over a fixed list
// connects to the first address that accepts and, when that connection
// breaks, to the first one that accepts again. Calls then fail with
// Unavailable until it has, which the Client's retries absorb. The
// addrList it returns moves the connection off an address where a node
// of another cluster answers (see addrList.avoid).
func multiTarget(addrs []string) (string, []grpc.DialOption, *addrList, error) {
	l := &addrList{r: manual.NewBuilderWithScheme(multiScheme), remote: map[string]string{}}
	for _, a := range addrs {
		ep, err := endpointOf(a)
		if err != nil {
			return "", nil, nil, err
		}
		l.all = append(l.all, ep)
	}
	l.r.InitialState(resolver.State{Endpoints: endpoints(l.all)})
	return multiScheme + ":///stated", []grpc.DialOption{
		grpc.WithResolvers(l.r),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"pick_first":{}}]}`),
		grpc.WithContextDialer(l.dial),
		grpc.WithChainUnaryInterceptor(l.unary),
		grpc.WithChainStreamInterceptor(l.stream),
	}, l, nil
}

func endpoints(eps []string) []resolver.Endpoint {
	out := make([]resolver.Endpoint, len(eps))
	for i, ep := range eps {
		out[i] = resolver.Endpoint{Addresses: []resolver.Address{{Addr: ep}}}
	}
	return out
}

// avoidFor is how long a Client given several addresses leaves out one
// where a node of another cluster answered.
const avoidFor = 30 * time.Second

// addrList is the address list of a Client given several addresses.
// pick_first stays on a connection as long as it is up, so a Client whose
// connection reaches a node of another cluster (one of its addresses was
// taken by it) would have every call refused there while its own
// cluster's members answer at the other addresses. avoid hands gRPC the
// list without that address for avoidFor, which moves the connection, and
// the refused call is retried there.
type addrList struct {
	r   *manual.Resolver
	all []string // the endpoints, in the order given

	// update orders avoid's and restore's resolver updates: held around
	// each, outside mu (the update may dial, and dial takes mu).
	update sync.Mutex
	mu     sync.Mutex
	// remote maps the remote address of a dialled connection (what the
	// call's peer says) to the endpoint dialled.
	remote map[string]string
	// avoided holds the endpoints left out; restore clears it, avoidFor
	// after the last was added.
	avoided map[string]bool
	timer   *time.Timer
	closed  bool
}

// dial dials an address from endpointOf and records which endpoint the
// connection's remote address belongs to.
func (l *addrList) dial(ctx context.Context, ep string) (net.Conn, error) {
	c, err := dialAddr(ctx, ep)
	if err == nil && c.RemoteAddr() != nil {
		l.mu.Lock()
		l.remote[c.RemoteAddr().String()] = ep
		l.mu.Unlock()
	}
	return c, err
}

// avoid leaves out the endpoint whose connection has the remote address
// remote, with any left out before, until avoidFor after the last one;
// it reports whether it did, which it does not when no other endpoint
// would be left.
func (l *addrList) avoid(remote string) bool {
	l.update.Lock()
	defer l.update.Unlock()
	l.mu.Lock()
	ep, ok := l.remote[remote]
	if !ok {
		l.mu.Unlock()
		return false
	}
	var keep []string
	for _, a := range l.all {
		if a != ep && !l.avoided[a] {
			keep = append(keep, a)
		}
	}
	if len(keep) == 0 || l.closed {
		l.mu.Unlock()
		return false
	}
	if l.avoided == nil {
		l.avoided = map[string]bool{}
	}
	l.avoided[ep] = true
	if l.timer == nil {
		l.timer = time.AfterFunc(avoidFor, l.restore)
	} else {
		l.timer.Reset(avoidFor)
	}
	l.mu.Unlock()
	l.r.UpdateState(resolver.State{Endpoints: endpoints(keep)})
	return true
}

// close stops the timer that would restore the list: the Client is
// closed.
func (l *addrList) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.timer != nil {
		l.timer.Stop()
	}
}

// restore hands gRPC every endpoint again, avoidFor after the last one
// was left out. pick_first keeps a connection that is up on an endpoint
// still in the list, so this moves nothing by itself; the endpoint is
// tried again only when the connection breaks.
func (l *addrList) restore() {
	l.update.Lock()
	defer l.update.Unlock()
	l.mu.Lock()
	l.avoided = nil
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return
	}
	l.r.UpdateState(resolver.State{Endpoints: endpoints(l.all)})
}

// refused turns a refusal by a node of another cluster, reached through
// p, into Unavailable once the connection has been moved off its address,
// so that the Client retries the call at its next address; every other
// error, and the refusal when no other address is left, are returned as
// they are.
func (l *addrList) refused(err error, p *peer.Peer) error {
	if err == nil || p.Addr == nil {
		return err
	}
	st, ok := status.FromError(err)
	if !ok || !isOtherCluster(st) || !l.avoid(p.Addr.String()) {
		return err
	}
	return status.Errorf(codes.Unavailable, "stated: the node at %s belongs to another cluster (%s); moving to the next address", p.Addr, st.Message())
}

func (l *addrList) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var p peer.Peer
	return l.refused(invoker(ctx, method, req, reply, cc, append(opts, grpc.Peer(&p))...), &p)
}

func (l *addrList) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	p := new(peer.Peer)
	s, err := streamer(ctx, desc, cc, method, append(opts, grpc.Peer(p))...)
	if err != nil {
		return nil, l.refused(err, p)
	}
	return &avoidingStream{ClientStream: s, l: l, p: p}, nil
}

// avoidingStream applies addrList.refused to a stream's end: a refusal
// by the lineage check comes as the stream's status.
type avoidingStream struct {
	grpc.ClientStream
	l *addrList
	p *peer.Peer
}

func (s *avoidingStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil || err == io.EOF {
		return err
	}
	return s.l.refused(err, s.p)
}

// endpointOf turns one address of a list into what dialAddr dials:
// "unix:/abs/path" for a unix socket, else host:port.
func endpointOf(addr string) (string, error) {
	target, err := parseAddr(addr)
	if err != nil {
		return "", err
	}
	switch {
	case strings.HasPrefix(target, "unix://"):
		u, err := url.Parse(target)
		if err != nil {
			return "", fmt.Errorf("stated: dial %q: %w", addr, err)
		}
		return unixPrefix + u.Path, nil
	case strings.HasPrefix(target, "unix:"):
		return target, nil
	case strings.Contains(target, ":///"), strings.HasPrefix(target, "unix-abstract:"):
		return "", fmt.Errorf("stated: dial %q: in a list of addresses, give unix socket paths or host:port", addr)
	}
	return target, nil
}

// dialAddr dials an address from endpointOf.
func dialAddr(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	if path, ok := strings.CutPrefix(addr, unixPrefix); ok {
		return d.DialContext(ctx, "unix", path)
	}
	return d.DialContext(ctx, "tcp", addr)
}
