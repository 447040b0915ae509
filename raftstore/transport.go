package raftstore

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
)

// guardedTransport is the Raft transport with its heartbeat fast path
// guarded. hashicorp/raft's NetworkTransport calls the heartbeat handler
// on the connection's goroutine, outside Raft's own goroutines, so
// Raft's Shutdown does not wait for it: a heartbeat that passed Raft's
// shutdown check just before could still write the current term after
// Close had closed the log store, and Raft panics on that write ("failed
// to save current term: database not open", seen in CI). Close stops the
// heartbeats, waiting for those in flight, before it closes the stores.
//
// It also sends replication calls and snapshots again to a peer it
// cannot reach (see AppendEntries and InstallSnapshot).
type guardedTransport struct {
	*raft.NetworkTransport
	mu      sync.RWMutex
	stopped bool

	leads    atomic.Pointer[func(raft.ServerID, raft.ServerAddress, uint64) bool]
	retryCap time.Duration
	// snapshotFor bounds how long one snapshot is sent again
	// (snapshotResendFor; shorter in tests).
	snapshotFor time.Duration
	logger      *slog.Logger
	quit        chan struct{} // closed by stopRetries
	quitOnce    sync.Once
}

func newGuardedTransport(t *raft.NetworkTransport) *guardedTransport {
	return &guardedTransport{NetworkTransport: t, quit: make(chan struct{}), snapshotFor: snapshotResendFor}
}

// SetHeartbeatHandler installs cb behind the guard.
func (g *guardedTransport) SetHeartbeatHandler(cb func(raft.RPC)) {
	if cb == nil {
		g.NetworkTransport.SetHeartbeatHandler(nil)
		return
	}
	g.NetworkTransport.SetHeartbeatHandler(func(rpc raft.RPC) {
		g.mu.RLock()
		defer g.mu.RUnlock()
		if g.stopped {
			rpc.Respond(nil, raft.ErrRaftShutdown)
			return
		}
		cb(rpc)
	})
}

// stopHeartbeats waits for the heartbeats being handled and refuses the
// later ones.
func (g *guardedTransport) stopHeartbeats() {
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
}

// AppendEntries sends one AppendEntries RPC. A replication call (not a
// heartbeat) that cannot reach its peer is not given back to Raft as a
// failure while this node leads in the call's term and the peer is
// still a member at that address: it is sent again, first after
// retryFirst, then at most every retryCap, until the peer answers.
//
// hashicorp/raft backs a follower's replication off after each failure
// it is told of, doubling from 10 ms to 10.24 s (replicateTo's
// backoff, which nothing but Shutdown cuts short), while its heartbeats
// back off to at most half the heartbeat timeout. A follower that was
// down for ten seconds or more (a restart, a pod replaced) was heard
// from again by the heartbeats at once but received no entry for up to
// ten more seconds: the cluster ran that long with one replica fewer
// than it could have. Sent again here, the entries reach it within
// retryCap of its coming back, as etcd's leader probes a follower at
// each heartbeat. An error from a peer that answered (another cluster's
// node, a TLS alert, the peer's own error) goes back to Raft at once.
func (g *guardedTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	err := g.NetworkTransport.AppendEntries(id, target, args, resp)
	if err == nil || isHeartbeat(args) || !unreachable(err) {
		return err
	}
	return g.resend(id, target, args.Term, err, 0, nil, func() error {
		*resp = raft.AppendEntriesResponse{}
		return g.NetworkTransport.AppendEntries(id, target, args, resp)
	})
}

// InstallSnapshot sends a snapshot. One that cannot reach its peer
// before any of its data was read (the dial failed, or the request could
// not be sent) is sent again as AppendEntries sends a replication call
// again, for at most snapshotResendFor. hashicorp/raft backs a failed
// snapshot off as it does a failed replication call, up to 10.24 s, so a
// follower that needs a snapshot and is down (it went down while one was
// being sent to it, or a new leader's first call to it needs one) waited
// up to that long after its return for the snapshot. Past
// snapshotResendFor the error goes to Raft, which opens its newest
// snapshot for the next try rather than this one, older by then. A
// snapshot whose data was read, in part or whole, is not sent again: its
// reader cannot be rewound.
func (g *guardedTransport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	r := &countingReader{r: data}
	err := g.NetworkTransport.InstallSnapshot(id, target, args, resp, r)
	if err == nil || r.n > 0 || !unreachable(err) {
		return err
	}
	return g.resend(id, target, args.Term, err, g.snapshotFor, func() bool { return r.n == 0 }, func() error {
		*resp = raft.InstallSnapshotResponse{}
		return g.NetworkTransport.InstallSnapshot(id, target, args, resp, r)
	})
}

// snapshotResendFor bounds how long InstallSnapshot sends one snapshot
// again: the snapshot it holds open ages while its peer is away.
const snapshotResendFor = 30 * time.Second

// resend sends a call whose first try could not reach its peer (err is
// that try's error) again, first after retryFirst, then at most every
// retryCap, while this node leads in term and the peer is still a member
// at target, and (when limit is positive) for at most limit. It stops
// when the peer answers, when a try fails otherwise, or when again (if
// not nil) reports that the call cannot be sent again; it returns the
// last error.
func (g *guardedTransport) resend(id raft.ServerID, target raft.ServerAddress, term uint64, err error, limit time.Duration, again func() bool, call func() error) error {
	lead := g.leads.Load()
	if lead == nil {
		return err
	}
	began, wait := time.Now(), retryFirst
	for {
		if !(*lead)(id, target, term) || (limit > 0 && time.Since(began) >= limit) {
			return err
		}
		select {
		case <-time.After(wait):
		case <-g.quit:
			return err
		}
		wait = min(2*wait, g.retryCap)
		if err = call(); err == nil || !unreachable(err) || (again != nil && !again()) {
			if d := time.Since(began); err == nil && d >= time.Second && g.logger != nil {
				g.logger.Info("raft: a peer answers again; replication to it resumes", "peer", string(id), "addr", string(target), "unreachable_for", d.Round(time.Millisecond))
			}
			return err
		}
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// boundedDial is the transport's stream layer with its dials bounded by
// max. NetworkTransport dials a peer with its I/O timeout (10 s), which
// is right for a call's reads and writes but long for a connect: a dial
// started while the peer's packets were dropped (a network partition, a
// node whose host went away) waits for a SYN retransmission or the whole
// timeout after the network heals, and the peer hears no heartbeat
// meanwhile. etcd bounds its peer dials by a second plus the election
// timeout; so does this. Join's and TransferLeadership's dials keep their
// own bounds: they do not go through the transport.
type boundedDial struct {
	raft.StreamLayer
	max time.Duration
}

func (b boundedDial) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 || timeout > b.max {
		timeout = b.max
	}
	return b.StreamLayer.Dial(addr, timeout)
}

// peerDialTimeout is the bound on the transport's dials for an election
// timeout: a second more, as etcd's.
func peerDialTimeout(election time.Duration) time.Duration {
	return time.Second + election
}

// retryFirst is the first wait before a replication call is sent again.
const retryFirst = 10 * time.Millisecond

// keepReplicating makes AppendEntries send a replication call again
// while lead(id, addr, term) holds; Close's stopRetries ends that.
func (g *guardedTransport) keepReplicating(lead func(id raft.ServerID, addr raft.ServerAddress, term uint64) bool, retryCap time.Duration, logger *slog.Logger) {
	g.retryCap, g.logger = retryCap, logger
	g.leads.Store(&lead)
}

// stopRetries ends the calls being sent again and stops later ones.
func (g *guardedTransport) stopRetries() {
	g.leads.Store(nil)
	g.quitOnce.Do(func() { close(g.quit) })
}

// isHeartbeat tells Raft's heartbeat from a replication call, as
// NetworkTransport's receiving side does.
func isHeartbeat(a *raft.AppendEntriesRequest) bool {
	return a.Term != 0 && a.PrevLogEntry == 0 && a.PrevLogTerm == 0 && len(a.Entries) == 0 && a.LeaderCommitIndex == 0
}

// unreachable reports whether err says the peer was not reached, or its
// connection broke or timed out, rather than that it answered: a refused
// or reset connection, a host or network unreachable, a name that does
// not resolve (a pod gone from DNS), a timeout, an EOF. A TLS alert from
// the peer (crypto/tls reports it as a net.OpError "remote error") and
// the cluster check's refusals are answers.
func unreachable(err error) bool {
	if errors.Is(err, ErrOtherCluster) || errors.Is(err, ErrSuperseded) {
		return false
	}
	if op := (*net.OpError)(nil); errors.As(err, &op) && op.Op == "remote error" {
		return false
	}
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.ETIMEDOUT)
}
