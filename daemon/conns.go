package daemon

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/statedhq/stated/internal/grpccodec"
)

// errConnsClosed is returned by connCache.Conn once the daemon is closing.
var errConnsClosed = errors.New("daemon: closing; no new connections to other nodes")

// connCache keeps one gRPC client connection per address of another node,
// for forwarding calls to the leader (it is the grpcapi.Forwarder). It
// holds one connection per leader address seen, which in a cluster of a few
// nodes is a few; Close closes them all.
type connCache struct {
	maxMsg int
	creds  func(addr string) credentials.TransportCredentials

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

func newConnCache(maxMsg int, creds func(addr string) credentials.TransportCredentials) *connCache {
	return &connCache{maxMsg: maxMsg, creds: creds, conns: make(map[string]*grpc.ClientConn)}
}

// Conn returns the connection to addr, creating it on first use. gRPC
// connects lazily and reconnects by itself, so a cached connection to a
// node that restarted recovers.
func (c *connCache) Conn(addr string) (grpc.ClientConnInterface, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errConnsClosed
	}
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	cc, err := dialNode(addr, c.maxMsg, c.creds(addr))
	if err != nil {
		return nil, err
	}
	c.conns[addr] = cc
	return cc, nil
}

// Close closes every connection; later Conn calls fail.
func (c *connCache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for addr, cc := range c.conns {
		if err := cc.Close(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
		}
		delete(c.conns, addr)
	}
	return errors.Join(errs...)
}

// peerBackoff is how a connection to another node tries again after a
// failure. gRPC's default grows to 2 minutes; a node that comes back (a
// restarted pod, under its name with a new IP) must be reached again
// within the time clients retry a forwarded write, so it grows to 2 s.
var peerBackoff = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
	MinConnectTimeout: 5 * time.Second,
}

// peerKeepalive has a connection to another node ping it after 10 s
// without a frame from it (gRPC's minimum), idle or not, and close it when
// the ping is not answered within 3 s. Without it a connection whose
// packets are dropped (a partition that black-holes rather than resets)
// stays open for as long as TCP retransmits: calls forwarded on it hung
// until the partition healed, and for up to a minute after, until TCP's
// retransmission timer, backed off meanwhile, fired again. Closed, the
// connection is dialled again with peerBackoff. Servers permit it
// (serverKeepalive).
var peerKeepalive = keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 3 * time.Second, PermitWithoutStream: true}

// serverKeepalive lets the other nodes' connections ping every 10 s
// (peerKeepalive), where gRPC's default refuses pings more often than
// every 5 minutes and closes the connection for them.
var serverKeepalive = keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}

// dialNode opens a connection to another node's gRPC server at addr
// (host:port) with creds (the peer certificate with peer TLS, plaintext
// without). It does not wait for the connection. The address's name is
// resolved at every connection attempt.
func dialNode(addr string, maxMsg int, creds credentials.TransportCredentials) (*grpc.ClientConn, error) {
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(maxMsg), grpc.MaxCallRecvMsgSize(maxMsg), grpc.ForceCodecV2(grpccodec.Codec)),
		grpc.WithConnectParams(peerBackoff),
		grpc.WithKeepaliveParams(peerKeepalive),
	)
	if err != nil {
		return nil, fmt.Errorf("daemon: connect to %s: %w", addr, err)
	}
	return cc, nil
}
