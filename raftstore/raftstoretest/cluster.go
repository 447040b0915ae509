package raftstoretest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/fsm"
)

// WaitTimeout bounds every wait of a Cluster: for a leader, for a join,
// for a node to open.
const WaitTimeout = 15 * time.Second

// Option configures NewCluster.
type Option func(*options)

type options struct {
	configure []func(*raftstore.Config)
	logger    *slog.Logger
}

// WithConfig changes the configuration of every node before it opens,
// after the cluster's test defaults are set.
func WithConfig(f func(*raftstore.Config)) Option {
	return func(o *options) { o.configure = append(o.configure, f) }
}

// WithLogStore keeps every node's Raft log in the log store kind
// (raftstore.LogStoreWAL or raftstore.LogStoreBoltDB).
func WithLogStore(kind string) Option {
	return WithConfig(func(c *raftstore.Config) { c.LogStore = kind })
}

// WithLogger sends every node's logs to l, with a "node" attribute
// naming the node; by default they are dropped.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// Cluster is a set of raftstore nodes in this process, on 127.0.0.1. Its
// methods are safe for concurrent use.
type Cluster struct {
	tb   testing.TB
	nw   *Network
	opts options

	mu       sync.Mutex
	nodes    []*node
	sessions map[string]uint64 // client id -> session opened by Commit
}

type node struct {
	id, addr, dir string
	store         *raftstore.Store // nil while stopped
	fresh         bool             // no state on disk: must join when started
	removed       bool
}

// NewCluster starts n nodes, named n0, n1, ...: n0 bootstraps the cluster,
// the others join it through the leader. It returns once every node has
// joined and applied the cluster's metadata. The nodes are closed when the
// test ends.
func NewCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{tb: t, nw: NewNetwork()}
	for _, o := range opts {
		o(&c.opts)
	}
	// The first TempDir registers the removal of every node's directory;
	// registering the close after it makes the close run first.
	t.TempDir()
	t.Cleanup(c.closeAll)
	for range n {
		c.AddNode(t)
	}
	return c
}

// AddNode starts a new node, joins it to the cluster as a voter (the first
// node bootstraps instead) and waits until it has applied the join. It
// returns the node's index.
func (c *Cluster) AddNode(t testing.TB) int {
	t.Helper()
	addr, err := FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	i := len(c.nodes)
	n := &node{id: fmt.Sprintf("n%d", i), addr: addr, dir: c.tb.TempDir(), fresh: true}
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	c.nw.Register(n.id, n.addr)
	c.start(t, i)
	return i
}

// FreeLoopbackAddr picks a free port on 127.0.0.1 below the kernel's
// ephemeral range. A node keeps its address across restarts, and a port
// from the ephemeral range (what listening on port 0 gives) may be taken
// meanwhile as the source port of some outgoing connection, which would
// make the restart fail to listen. test/ and bench/ pick the ports of
// their `stated run` processes with it too.
func FreeLoopbackAddr() (string, error) {
	lo, hi := 20000, 32768 // Linux's ephemeral range starts at 32768 by default
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var start, end int
		if _, err := fmt.Sscan(string(b), &start, &end); err == nil && start > lo+1000 {
			hi = start
		}
	}
	for range 200 {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", lo+rand.IntN(hi-lo)))
		if err != nil {
			continue
		}
		addr := ln.Addr().String()
		return addr, ln.Close()
	}
	// No luck below the range: fall back on any free port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("raftstoretest: reserve a port: %w", err)
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

func (c *Cluster) config(n *node, bootstrap bool) raftstore.Config {
	cfg := raftstore.DefaultConfig()
	cfg.NodeID = n.id
	cfg.Dir = n.dir
	cfg.RaftBind = n.addr
	cfg.GRPCAddr = grpcAddr(n.id)
	cfg.Bootstrap = bootstrap
	cfg.StreamLayer = c.nw.Layer
	if c.opts.logger != nil {
		cfg.Logger = c.opts.logger.With("node", n.id)
	}
	cfg.ApplyTimeout = 5 * time.Second
	cfg.HeartbeatTimeout = 200 * time.Millisecond
	cfg.ElectionTimeout = 200 * time.Millisecond
	cfg.LeaderLeaseTimeout = 100 * time.Millisecond
	for _, f := range c.opts.configure {
		f(&cfg)
	}
	return cfg
}

// grpcAddr is the gRPC address node id advertises: no server listens
// there, but it is unique and shows up in Members, Leader and Status.
func grpcAddr(id string) string { return id + ".grpc.invalid:1" }

// start opens node i; a node without state bootstraps the cluster when it
// is the only live node ever started, and joins it otherwise.
func (c *Cluster) start(t testing.TB, i int) {
	t.Helper()
	if err := c.open(i); err != nil {
		t.Fatal(err)
	}
}

// RestartInBackground is Restart without waiting: it opens stopped node i
// and, for a wiped node, keeps trying to join it through whichever node
// leads. The channel receives the outcome (nil once the node runs and has
// caught up) and is closed. Tests use it when the join cannot succeed
// yet, e.g. while the cluster has no leader.
func (c *Cluster) RestartInBackground(i int) <-chan error {
	done := make(chan error, 1)
	go func() {
		defer close(done)
		done <- c.open(i)
	}()
	return done
}

func (c *Cluster) open(i int) error {
	c.mu.Lock()
	n := c.nodes[i]
	if n.store != nil || n.removed {
		c.mu.Unlock()
		return fmt.Errorf("raftstoretest: start %s: already running or removed", n.id)
	}
	bootstrap := n.fresh && i == 0 && len(c.nodes) == 1
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	s, err := raftstore.Open(ctx, c.config(n, bootstrap))
	if err != nil {
		return fmt.Errorf("raftstoretest: open %s: %w", n.id, err)
	}
	c.mu.Lock()
	n.store = s
	c.mu.Unlock()

	switch {
	case bootstrap:
		if err := s.WaitReady(ctx); err != nil {
			return fmt.Errorf("raftstoretest: %s: %w", n.id, err)
		}
	case s.NeedsJoin():
		if err := c.join(ctx, n); err != nil {
			return err
		}
	}
	c.mu.Lock()
	n.fresh = false
	c.mu.Unlock()
	return nil
}

// join adds n through whichever node is leader, tells n it joined, then
// waits until n has applied the join.
func (c *Cluster) join(ctx context.Context, n *node) error {
	m := raftstore.Member{ID: n.id, RaftAddr: n.addr, GRPCAddr: grpcAddr(n.id), Voter: true, Incarnation: c.store(n).Incarnation()}
	var last error
	for {
		if l := c.CurrentLeader(); l != nil && l != c.store(n) {
			if _, err := l.Join(ctx, m, ""); err == nil {
				if err := c.store(n).Joined(); err != nil {
					return fmt.Errorf("raftstoretest: %s joined: %w", n.id, err)
				}
				break
			} else if !retryable(err) {
				return fmt.Errorf("raftstoretest: join %s: %w", n.id, err)
			} else {
				last = err
			}
		}
		if !sleep(ctx, 10*time.Millisecond) {
			return fmt.Errorf("raftstoretest: join %s: %w (last error: %v)", n.id, ctx.Err(), last)
		}
	}
	// The join proposed the member's metadata; once n has applied what
	// the leader applied it is caught up and knows the whole cluster. (The
	// leader's commit index may be that of a no-op or barrier entry, which
	// no state machine applies.)
	for {
		l := c.CurrentLeader()
		if l != nil {
			idx := l.AppliedIndex()
			if _, err := c.store(n).ReadBarrier(ctx, raftstore.Session, idx); err == nil {
				return nil
			} else if ctx.Err() != nil {
				return fmt.Errorf("raftstoretest: %s did not catch up to index %d: %w", n.id, idx, err)
			}
		}
		if !sleep(ctx, 10*time.Millisecond) {
			return fmt.Errorf("raftstoretest: %s did not catch up: %w", n.id, ctx.Err())
		}
	}
}

func (c *Cluster) store(n *node) *raftstore.Store {
	c.mu.Lock()
	defer c.mu.Unlock()
	return n.store
}

// retryable reports whether a cluster operation that failed with err may
// succeed when tried again, perhaps at another node.
func retryable(err error) bool {
	return errors.Is(err, raftstore.ErrNotLeader) || errors.Is(err, raftstore.ErrClosed) ||
		errors.Is(err, raftstore.ErrUnreachable) || errors.Is(err, context.DeadlineExceeded)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// CurrentLeader returns the running node that considers itself leader in
// the highest term, or nil. During a partition an old leader may still
// believe it leads; the highest term wins.
func (c *Cluster) CurrentLeader() *raftstore.Store {
	var best *raftstore.Store
	var bestTerm uint64
	for _, s := range c.Running() {
		if !s.IsLeader() {
			continue
		}
		if term := s.Status().Term; best == nil || term > bestTerm {
			best, bestTerm = s, term
		}
	}
	return best
}

// Leader waits until a leader is elected and ready (it has applied every
// entry committed before its election), and returns it.
func (c *Cluster) Leader(t testing.TB) *raftstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	for {
		if l := c.CurrentLeader(); l != nil && l.WaitReady(ctx) == nil && l.IsLeader() {
			return l
		}
		if !sleep(ctx, 10*time.Millisecond) {
			t.Fatalf("raftstoretest: no leader within %v", WaitTimeout)
		}
	}
}

// Running returns the nodes that are running and not removed.
func (c *Cluster) Running() []*raftstore.Store {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*raftstore.Store
	for _, n := range c.nodes {
		if n.store != nil && !n.removed {
			out = append(out, n.store)
		}
	}
	return out
}

// Followers returns the running nodes that are not leader now.
func (c *Cluster) Followers() []*raftstore.Store {
	var out []*raftstore.Store
	for _, s := range c.Running() {
		if !s.IsLeader() {
			out = append(out, s)
		}
	}
	return out
}

// Node returns node i, or nil while it is stopped.
func (c *Cluster) Node(i int) *raftstore.Store {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].store
}

// Index returns the index of the node whose id is id, or -1.
func (c *Cluster) Index(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, n := range c.nodes {
		if n.id == id {
			return i
		}
	}
	return -1
}

// ID returns node i's id, whether it runs or not.
func (c *Cluster) ID(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].id
}

// Dir returns node i's data directory.
func (c *Cluster) Dir(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].dir
}

// Len is the number of nodes ever started, removed ones included.
func (c *Cluster) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.nodes)
}

// Network is the cluster's fault controller.
func (c *Cluster) Network() *Network { return c.nw }

// Stop closes node i and keeps its data directory; Restart opens it again.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	n := c.nodes[i]
	s := n.store
	n.store = nil
	c.mu.Unlock()
	if s != nil {
		if err := s.Close(); err != nil {
			c.tb.Errorf("raftstoretest: close %s: %v", n.id, err)
		}
	}
}

// Restart opens stopped node i again on its directory and address. A
// wiped node joins the cluster again, under the same id and address, and
// is caught up before Restart returns; any other node is merely opened.
func (c *Cluster) Restart(t testing.TB, i int) {
	t.Helper()
	c.start(t, i)
}

// Wipe stops node i and deletes its data directory.
func (c *Cluster) Wipe(i int) {
	c.Stop(i)
	c.mu.Lock()
	n := c.nodes[i]
	n.fresh = true
	c.mu.Unlock()
	if err := os.RemoveAll(n.dir); err != nil {
		c.tb.Errorf("raftstoretest: wipe %s: %v", n.id, err)
	}
}

// Remove removes node i from the cluster through the leader, then stops
// it. A removed node cannot be restarted.
func (c *Cluster) Remove(t testing.TB, i int) {
	t.Helper()
	id := c.ID(i)
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	for {
		if l := c.CurrentLeader(); l != nil {
			err := l.Remove(ctx, id)
			if err == nil || errors.Is(err, raftstore.ErrUnknownMember) {
				break // unknown: an earlier attempt removed it
			}
			if !retryable(err) {
				t.Fatalf("raftstoretest: remove %s: %v", id, err)
			}
		}
		if !sleep(ctx, 10*time.Millisecond) {
			t.Fatalf("raftstoretest: remove %s: %v", id, ctx.Err())
		}
	}
	c.Stop(i)
	c.mu.Lock()
	c.nodes[i].removed = true
	c.mu.Unlock()
}

// Commit commits cmd through whichever node is leader, trying again on
// another leader after ErrNotLeader, a closed node or a timeout, until it
// is acknowledged, the state machine rejects it, or ctx ends. Each try
// waits at most attemptTimeout. Trying again is safe only for a commit
// with a ClientID and Seq: Commit opens a session for the client id the
// first time it sees it (see OpenSession) and sends the commit in it, so
// the state machine applies it once.
func (c *Cluster) Commit(ctx context.Context, cmd *command.Commit, attemptTimeout time.Duration) (uint64, error) {
	if cmd.ClientID != "" && cmd.Seq != 0 && cmd.SessionID == 0 {
		id, err := c.session(ctx, cmd.ClientID, attemptTimeout)
		if err != nil {
			return 0, err
		}
		cmd.SessionID = id
	}
	var idx uint64
	err := c.onLeader(ctx, attemptTimeout, "commit", func(ctx context.Context, l *raftstore.Store) error {
		var err error
		idx, _, err = l.Commit(ctx, cmd)
		return err
	})
	return idx, err
}

// OpenSession opens a new session for clientID through the leader and
// returns its id; Commit uses it for that client id from then on.
func (c *Cluster) OpenSession(ctx context.Context, clientID string, attemptTimeout time.Duration) (uint64, error) {
	var id uint64
	err := c.onLeader(ctx, attemptTimeout, "open session", func(ctx context.Context, l *raftstore.Store) error {
		s, err := l.OpenSession(ctx, clientID, 0)
		id = s.ID
		return err
	})
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	if c.sessions == nil {
		c.sessions = map[string]uint64{}
	}
	c.sessions[clientID] = id
	c.mu.Unlock()
	return id, nil
}

func (c *Cluster) session(ctx context.Context, clientID string, attemptTimeout time.Duration) (uint64, error) {
	c.mu.Lock()
	id, ok := c.sessions[clientID]
	c.mu.Unlock()
	if ok {
		return id, nil
	}
	return c.OpenSession(ctx, clientID, attemptTimeout)
}

// onLeader runs call on whichever node is leader until it succeeds, the
// state machine refuses it, or ctx ends.
func (c *Cluster) onLeader(ctx context.Context, attemptTimeout time.Duration, what string, call func(context.Context, *raftstore.Store) error) error {
	var last error = raftstore.ErrNotLeader
	for {
		if l := c.CurrentLeader(); l != nil {
			actx, cancel := context.WithTimeout(ctx, attemptTimeout)
			err := call(actx, l)
			cancel()
			if err == nil || errors.Is(err, fsm.ErrRejected) {
				return err
			}
			last = err
		}
		if !sleep(ctx, 5*time.Millisecond) {
			return fmt.Errorf("raftstoretest: %s: %w (last error: %v)", what, ctx.Err(), last)
		}
	}
}

func (c *Cluster) closeAll() {
	c.mu.Lock()
	n := len(c.nodes)
	c.mu.Unlock()
	for i := range n {
		c.Stop(i)
	}
}
