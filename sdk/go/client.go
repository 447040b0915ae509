package stated

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/internal/grpccodec"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// DefaultMaxMessageSize is the largest gRPC message a Client sends or
// receives unless WithMaxMessageSize says otherwise. It matches the daemon's
// default, so a commit too large for the daemon fails on the client at once.
const DefaultMaxMessageSize = 64 << 20

// Client is a connection to a stated daemon (one at a time of the
// addresses it was given). It is safe for concurrent
// use by many goroutines; open one per process and share it.
//
// A Client remembers the highest commit index it has seen (LastIndex), and
// by default its reads wait until the daemon has applied that index, so a
// read always sees the client's own earlier commits (read-your-writes).
type Client struct {
	conn        *grpc.ClientConn
	rpc         statedv1.StateClient
	cluster     statedv1.ClusterClient
	windows     statedv1.WindowsClient
	id          string
	consistency Consistency
	retry       retryPolicy

	sess      sessionState
	lineage   *lineage
	addrs     *addrList       // nil unless Dial was given several addresses
	batch     *coalescer      // nil: WithCommitCoalescing(false)
	life      context.Context // ends when the Client is closed
	stop      context.CancelFunc
	lastIndex atomic.Uint64 // highest commit index seen
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// Option configures a Client in Dial.
type Option func(*clientOptions)

type clientOptions struct {
	dialOpts      []grpc.DialOption
	clientID      string
	consistency   Consistency
	maxMsgSize    int
	block         bool
	waitForDaemon bool
	// reconnectBackoff bounds the connection backoff (reconnectParams).
	reconnectBackoff time.Duration
	addresses        []string
	retry            retryPolicy
	lazySession      bool
	tls              *tls.Config
	token            string
	noCoalescing     bool
	// lineage is what the connection's interceptors send; Dial sets it.
	lineage *lineage
	// addrs is the address list of a Client given several; nil otherwise.
	addrs *addrList
}

// WithDialOptions adds gRPC dial options, applied after the Client's own
// (transport credentials, message size limits, the connection backoff), so
// they can override them: pass grpc.WithTransportCredentials to use TLS.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *clientOptions) { o.dialOpts = append(o.dialOpts, opts...) }
}

// WithTLS makes the Client connect with TLS configured by cfg: RootCAs
// holds the CA that issued the daemon's --tls-cert (nil: the system's),
// and Certificates a client certificate when the daemon requires one
// (--tls-client-ca). gRPC verifies the server's name against the address's
// host unless cfg.ServerName is set; with several addresses, set it. A
// daemon serves TLS on its TCP port only; its unix socket is plaintext.
func WithTLS(cfg *tls.Config) Option {
	return func(o *clientOptions) { o.tls = cfg }
}

// WithToken makes every call send "authorization: Bearer <token>", the
// bearer token a daemon with --token-file checks. It is sent on the unix
// socket and on plaintext TCP too: without WithTLS anyone who can watch
// the network between the Client and the daemon can read the token, so
// use TLS for TCP beyond loopback.
//
// A token that may not write (read or admin only) is refused a session,
// which Dial opens for commits: Dial does not fail on that, even with
// WithBlock. The Client reads without a session, and its first commit
// asks for one again, failing with PermissionDenied unless the token has
// since been granted write. A writer's session still opens at Dial,
// fencing an older Client of its client id as before.
func WithToken(token string) Option {
	return func(o *clientOptions) { o.token = token }
}

// bearerToken is the per-RPC credential of WithToken. It does not require
// transport security, because the unix socket is plaintext.
type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return false }

// WithClientID sets the id the Client opens its session for and sends with
// every commit: 1 to 256 bytes of UTF-8 without control characters (Dial
// refuses another with ErrInvalidArgument). The default is 16 random hex
// characters. A process that
// restarts may reuse its id (a Kafka processor with a fixed id, say): its
// new Client opens a new session, which fences the old one, so a zombie of
// the previous process can no longer commit (its commits fail with
// ErrSessionFenced). Two live Clients with one id fence each other: the
// one that dialled last wins.
func WithClientID(id string) Option {
	return func(o *clientOptions) { o.clientID = id }
}

// maxClientIDBytes is the daemon's limit on a client id.
const maxClientIDBytes = 256

// checkClientID refuses, at Dial, a client id the daemon refuses: empty,
// over 256 bytes, not UTF-8, or with a control character.
func checkClientID(id string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("stated: dial: client id: %s: %w", fmt.Sprintf(format, args...), ErrInvalidArgument)
	}
	switch {
	case len(id) > maxClientIDBytes:
		return bad("%d bytes, limit %d", len(id), maxClientIDBytes)
	case !utf8.ValidString(id):
		return bad("not valid UTF-8")
	}
	for i, r := range id {
		if unicode.IsControl(r) {
			return bad("control character %U at byte %d", r, i)
		}
	}
	return nil
}

// WithLazySession makes the Client open its session at its first commit
// rather than when it is dialled: for clients that mostly read, such as
// command-line tools, so that they leave no session behind when they never
// commit. A Client that replaces a dead process under the same client id
// should not use it: the dial is what fences the old process.
func WithLazySession() Option {
	return func(o *clientOptions) { o.lazySession = true }
}

// WithDefaultConsistency sets the consistency of reads that do not choose
// one with WithConsistency. ConsistencyDefault (the default) means
// read-your-writes: ConsistencySession once the Client has committed,
// ConsistencyLocal before.
func WithDefaultConsistency(c Consistency) Option {
	return func(o *clientOptions) { o.consistency = c }
}

// WithMaxMessageSize caps the size of one gRPC message in both directions
// (default DefaultMaxMessageSize, 64 MiB). A commit larger than that fails
// on the client, without reaching the daemon, with an error for which
// status.Code returns codes.ResourceExhausted. A commit whose answer is
// larger (the emissions of the windows it closed) has applied: Commit sends
// it again, alone, and returns the retry's answer, a Duplicate without
// emissions (they wait in the outbox). A size of zero or less keeps the
// default.
func WithMaxMessageSize(bytes int) Option {
	return func(o *clientOptions) {
		if bytes > 0 {
			o.maxMsgSize = bytes
		}
	}
}

// WithBlock makes Dial wait until the connection to the daemon is ready. It
// fails with ErrUnavailable as soon as the first attempt to connect fails,
// and with ctx's error if ctx ends first. Without it Dial returns at once and
// an unreachable daemon shows up as ErrUnavailable from the first call.
func WithBlock() Option {
	return func(o *clientOptions) { o.block = true }
}

// WithWaitForDaemon makes Dial wait until the connection to the daemon is
// ready, through failed attempts, until ctx ends: for a service that may
// start before its stated (a sidecar starting in the same pod, or `stated
// run &` a moment earlier). The Client tries to connect again with a
// backoff from 100 ms growing to at most maxBackoff (0:
// DefaultReconnectBackoff), now and whenever its daemon goes away later.
// When ctx ends first, Dial fails with ErrUnavailable, saying what the
// last attempt met.
func WithWaitForDaemon(maxBackoff time.Duration) Option {
	return func(o *clientOptions) {
		o.block, o.waitForDaemon = true, true
		if maxBackoff > 0 {
			o.reconnectBackoff = maxBackoff
		}
	}
}

// DefaultReconnectBackoff bounds the wait between a Client's attempts to
// connect to a daemon it cannot reach (see "Retries" in the package
// documentation). gRPC's own default grows to two minutes: a Client whose
// daemon was down for a minute went on failing for another 13 s after the
// daemon was back (BENCHMARKS.md), and after longer outages for up to two
// minutes.
const DefaultReconnectBackoff = time.Second

// clientKeepalive pings the daemon after 10 s in which its connection
// brought nothing, and drops the connection when a ping goes unanswered
// for 3 s: a daemon whose host died or was cut off (its packets dropped,
// no reset) leaves a TCP connection that looks open until the kernel's
// retransmissions give up, a quarter of an hour later, and every retry of
// a call would go to it and time out. Dropped, the Client connects again,
// to another of its addresses if it has several. It pings without a call
// in flight too, so that an idle Client's next call does not meet a dead
// connection first. The daemon permits pings every 5 s.
var clientKeepalive = keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 3 * time.Second, PermitWithoutStream: true}

// reconnectParams are the Client's connection backoff: from 100 ms (or
// maxBackoff, if smaller), growing 1.6-fold with 20% jitter to maxBackoff.
// An attempt may take 5 s to connect (gRPC's default, 20 s, holds a
// Client with several addresses on one that drops its packets).
func reconnectParams(maxBackoff time.Duration) grpc.ConnectParams {
	return grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: min(100*time.Millisecond, maxBackoff), Multiplier: 1.6, Jitter: 0.2, MaxDelay: maxBackoff},
		MinConnectTimeout: 5 * time.Second,
	}
}

// WithAddresses adds daemon addresses to the one(s) given to Dial, in the
// same forms. With more than one address the Client talks to one daemon
// at a time, the first in the list that accepts a connection, and moves
// on to the next that does when its daemon goes away.
func WithAddresses(addrs ...string) Option {
	return func(o *clientOptions) { o.addresses = append(o.addresses, addrs...) }
}

// Dial opens a Client to the daemon at addr. addr may list several
// daemons of one cluster separated by commas (see WithAddresses); each is
// one of
//
//   - a unix socket: a file path that starts with "/", "./" or "../", or
//     ends in ".sock"; or "unix:" and a path ("unix:x.sock",
//     "unix:/abs/x.sock"); or "unix://" and an absolute path
//     ("unix:///abs/x.sock") or one starting with "./" or "../"
//     ("unix://./x.sock"). A relative path is resolved against the
//     working directory now, the same in every form; "unix://x.sock" is
//     refused with a message saying how to write it;
//   - "host:port": TCP, without TLS unless WithTLS is given;
//   - any other gRPC target with an explicit "dns:" or "passthrough:" scheme.
//
// With several addresses, only unix socket paths and host:port are
// accepted.
//
// Dial does not wait for the connection unless given WithBlock; ctx bounds
// that wait only. Close the Client when done.
func Dial(ctx context.Context, addr string, opts ...Option) (*Client, error) {
	o := clientOptions{maxMsgSize: DefaultMaxMessageSize, retry: defaultRetryPolicy(), reconnectBackoff: DefaultReconnectBackoff}
	for _, opt := range opts {
		opt(&o)
	}
	var addrs []string
	for _, a := range append(strings.Split(addr, ","), o.addresses...) {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	var target string
	var targetOpts []grpc.DialOption
	var err error
	switch len(addrs) {
	case 0:
		return nil, fmt.Errorf("stated: dial: empty address")
	case 1:
		target, err = parseAddr(addrs[0])
	default:
		target, targetOpts, o.addrs, err = multiTarget(addrs)
	}
	if err != nil {
		return nil, err
	}
	if o.clientID == "" {
		if o.clientID, err = randomClientID(); err != nil {
			return nil, err
		}
	} else if err := checkClientID(o.clientID); err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if o.tls != nil {
		creds = credentials.NewTLS(o.tls)
	}
	dialOpts := append(append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallSendMsgSize(o.maxMsgSize),
			grpc.MaxCallRecvMsgSize(o.maxMsgSize),
			grpc.ForceCodecV2(grpccodec.Codec), // buffers not cleared (internal/grpccodec)
		),
		grpc.WithConnectParams(reconnectParams(o.reconnectBackoff)),
		grpc.WithKeepaliveParams(clientKeepalive),
	}, targetOpts...), o.dialOpts...)
	if o.token != "" {
		dialOpts = append(dialOpts, grpc.WithPerRPCCredentials(bearerToken(o.token)))
	}
	o.lineage = new(lineage)
	dialOpts = append(dialOpts, grpc.WithChainUnaryInterceptor(o.lineage.unary), grpc.WithChainStreamInterceptor(o.lineage.stream))
	conn, err := grpc.NewClient(target, dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("stated: dial %q: %w", addr, err)
	}
	c := newClient(conn, statedv1.NewStateClient(conn), o)
	c.cluster = statedv1.NewClusterClient(conn)
	c.windows = statedv1.NewWindowsClient(conn)
	if o.block {
		if err := waitReady(ctx, conn, o.waitForDaemon); err != nil {
			c.Close()
			return nil, fmt.Errorf("stated: dial %q: %w", addr, err)
		}
		if !o.lazySession {
			if _, err := c.acquireLane(ctx); err != nil && !sessionNotGranted(err) {
				c.Close()
				return nil, fmt.Errorf("stated: dial %q: %w", addr, err)
			}
		}
		return c, nil
	}
	conn.Connect()
	if !o.lazySession {
		c.openSessionAsync()
	}
	return c, nil
}

// newClient builds a Client over rpc; conn may be nil in tests.
func newClient(conn *grpc.ClientConn, rpc statedv1.StateClient, o clientOptions) *Client {
	life, stop := context.WithCancel(context.Background())
	c := &Client{conn: conn, rpc: rpc, id: o.clientID, consistency: o.consistency, retry: o.retry, life: life, stop: stop, lineage: o.lineage, addrs: o.addrs}
	if c.lineage == nil {
		c.lineage = new(lineage)
	}
	if !o.noCoalescing {
		c.batch = &coalescer{rpc: rpc, life: life, lineage: c.lineage}
	}
	return c
}

// waitReady connects conn and waits until it is ready, ctx ended, or
// (unless throughFailures) its first attempt failed.
func waitReady(ctx context.Context, conn *grpc.ClientConn, throughFailures bool) error {
	conn.Connect()
	failed := false
	for {
		s := conn.GetState()
		switch s {
		case connectivity.Ready:
			return nil
		case connectivity.Shutdown:
			return wrapStatus("connect", status.Errorf(codes.Unavailable, "connection %s", strings.ToLower(s.String())))
		case connectivity.TransientFailure:
			if !throughFailures {
				return wrapStatus("connect", status.Errorf(codes.Unavailable, "connection %s", strings.ToLower(s.String())))
			}
			failed = true
		}
		if !conn.WaitForStateChange(ctx, s) {
			if failed {
				return wrapStatus("connect", status.Errorf(codes.Unavailable, "no daemon answered before %v; the last attempt: %s", ctx.Err(), lastConnectError(conn)))
			}
			return wrapStatus("connect", status.FromContextError(ctx.Err()).Err())
		}
	}
}

// lastConnectError says what conn's last attempt to connect met: a
// call that does not wait for the connection fails at once with it.
func lastConnectError(conn *grpc.ClientConn) string {
	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		return "none failed: a daemon answers now"
	}
	return status.Convert(err).Message()
}

// parseAddr turns a user's address into a gRPC target. Every form of a
// unix socket path becomes "unix://" and the absolute path, resolved
// against the working directory now, so that a relative path means the
// same in every form and in every program.
func parseAddr(addr string) (string, error) {
	switch {
	case addr == "":
		return "", fmt.Errorf("stated: dial: empty address")
	case strings.HasPrefix(addr, "unix://"):
		rest := strings.TrimPrefix(addr, "unix://")
		switch {
		case strings.HasPrefix(rest, "/"): // unix:///abs/path
			u, err := url.Parse(addr)
			if err != nil {
				return "", fmt.Errorf("stated: dial %q: %w", addr, err)
			}
			return unixTarget(addr, u.Path)
		case strings.HasPrefix(rest, "./"), strings.HasPrefix(rest, "../"): // unix://./rel
			return unixTarget(addr, rest)
		}
		return "", fmt.Errorf("stated: dial %q: after unix:// comes an absolute path (unix:///run/stated/stated.sock); "+
			"for a path relative to the working directory write ./%s, unix:%s or unix://./%s", addr, rest, rest, rest)
	case strings.HasPrefix(addr, "unix:"): // unix:rel or unix:/abs
		path := strings.TrimPrefix(addr, "unix:")
		if path == "" {
			return "", fmt.Errorf("stated: dial %q: no socket path after unix:", addr)
		}
		return unixTarget(addr, path)
	case strings.HasPrefix(addr, "unix-abstract:"),
		strings.HasPrefix(addr, "dns:"), strings.HasPrefix(addr, "passthrough:"):
		return addr, nil
	case strings.HasPrefix(addr, "/"), strings.HasPrefix(addr, "./"), strings.HasPrefix(addr, "../"),
		strings.HasSuffix(addr, ".sock"):
		return unixTarget(addr, addr)
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("stated: dial %q: not a unix socket path (/abs/x.sock, ./x.sock, x.sock, unix:x.sock, unix:///abs/x.sock) or host:port: %w", addr, err)
	}
	if port == "" {
		return "", fmt.Errorf("stated: dial %q: no port after the host", addr)
	}
	// A named port ("https") is left to the resolver; a number must be
	// one a daemon can listen on.
	if n, err := strconv.Atoi(port); err == nil && (n < 1 || n > 65535) {
		return "", fmt.Errorf("stated: dial %q: port %d is not 1..65535", addr, n)
	}
	return addr, nil
}

// unixTarget is the gRPC target of the unix socket at path, which may be
// relative to the working directory.
func unixTarget(addr, path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("stated: dial %q: %w", addr, err)
	}
	// Escaped, so that a path with '?', '#' or '%' survives gRPC's URL
	// parsing of the target.
	return "unix://" + (&url.URL{Path: filepath.ToSlash(abs)}).EscapedPath(), nil
}

// randomClientID returns 16 random hex characters.
func randomClientID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("stated: client id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Close closes the connection. Calls in flight fail with ErrClosed (a
// commit among them may have applied: its outcome is unknown); later calls
// return ErrClosed. Closing twice is harmless.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.stop()
		if c.addrs != nil {
			c.addrs.close()
		}
		if c.conn != nil {
			c.closeErr = c.conn.Close()
		}
	})
	return c.closeErr
}

// LastIndex returns the highest commit index this Client has seen: the Raft
// index of its latest successful commit. It is 0 before the first one.
func (c *Client) LastIndex() uint64 { return c.lastIndex.Load() }

// Conn returns the Client's gRPC connection, for daemon services the SDK
// does not wrap (such as stated.v1.Checkpoints, which the CLI uses). Calls
// on it get none of the Client's retries.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// ClientID returns the id the Client sends with its commits.
func (c *Client) ClientID() string { return c.id }

// observeIndex raises lastIndex to index if index is higher.
func (c *Client) observeIndex(index uint64) {
	for {
		cur := c.lastIndex.Load()
		if index <= cur || c.lastIndex.CompareAndSwap(cur, index) {
			return
		}
	}
}

// rpcErr converts an error from a call named op into the SDK's error, and
// into ErrClosed when the Client was closed under the call: the call was
// cancelled, or its connection closing (or a session's open that Close
// ended) left it unanswered.
func (c *Client) rpcErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if c.closed.Load() {
		if code := status.Code(err); code == codes.Canceled || code == codes.Unavailable || errors.Is(err, ErrUnavailable) {
			return fmt.Errorf("stated: %s: %w (%v)", op, ErrClosed, err)
		}
	}
	return wrapStatus(op, err)
}

// checkOpen returns ErrClosed once the Client is closed.
func (c *Client) checkOpen(op string) error {
	if c.closed.Load() {
		return fmt.Errorf("stated: %s: %w", op, ErrClosed)
	}
	return nil
}
