package raftstore

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// TestStopHeartbeatsWaitsForTheOneInFlightAndRefusesLaterOnes: Close
// must not close the log store under a heartbeat the transport is still
// handling outside Raft's goroutines.
func TestStopHeartbeatsWaitsForTheOneInFlightAndRefusesLaterOnes(t *testing.T) {
	newTrans := func() *raft.NetworkTransport {
		tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 5*time.Second, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		return tr
	}
	from := newTrans()
	g := newGuardedTransport(newTrans())
	entered, release := make(chan struct{}), make(chan struct{})
	calls := 0
	g.SetHeartbeatHandler(func(rpc raft.RPC) {
		calls++
		close(entered)
		<-release
		rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
	})
	heartbeat := func() <-chan error {
		done := make(chan error, 1)
		go func() {
			var resp raft.AppendEntriesResponse
			done <- from.AppendEntries("n", g.LocalAddr(), &raft.AppendEntriesRequest{
				RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("leader"), Addr: []byte(from.LocalAddr())},
				Term:      1,
			}, &resp)
		}()
		return done
	}

	first := heartbeat()
	<-entered
	stopped := make(chan struct{})
	go func() { g.stopHeartbeats(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("stopHeartbeats returned while a heartbeat was being handled")
	case <-time.After(100 * time.Millisecond): // the condition is that it keeps waiting
	}
	close(release)
	<-stopped
	if err := <-first; err != nil {
		t.Fatalf("the heartbeat in flight: %v", err)
	}
	if err := <-heartbeat(); err == nil {
		t.Fatal("a heartbeat after stopHeartbeats was answered as handled")
	}
	if calls != 1 {
		t.Fatalf("the handler ran %d times, want 1", calls)
	}
}

// replicationCall is an AppendEntries request as Raft's replication sends
// it (a heartbeat has no commit index, no previous entry and no entries).
func replicationCall(from raft.ServerAddress) *raft.AppendEntriesRequest {
	return &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("leader"), Addr: []byte(from)},
		Term:      3, PrevLogEntry: 7, PrevLogTerm: 3, LeaderCommitIndex: 7,
	}
}

// freeAddr is a loopback address nothing listens on (yet).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// answer serves AppendEntries on addr, answering each with fn's error
// (Success when nil), and counts them.
func answer(t *testing.T, addr string, fn func() error) *atomic.Int32 {
	t.Helper()
	tr, err := raft.NewTCPTransport(addr, nil, 2, 5*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	var n atomic.Int32
	go func() {
		for rpc := range tr.Consumer() {
			n.Add(1)
			err := fn()
			rpc.Respond(&raft.AppendEntriesResponse{Term: 3, Success: err == nil}, err)
		}
	}()
	return &n
}

func newSender(t *testing.T, lead func(raft.ServerID, raft.ServerAddress, uint64) bool) *guardedTransport {
	t.Helper()
	tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 5*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	g := newGuardedTransport(tr)
	if lead != nil {
		g.keepReplicating(lead, 50*time.Millisecond, nil)
	}
	return g
}

// TestAReplicationCallToAPeerThatIsDownIsSentAgainUntilItAnswers: the
// call to a peer that comes back a moment later succeeds, instead of
// failing and leaving the next try to Raft's backoff; the check on who
// leads is asked with the call's peer and term.
func TestAReplicationCallToAPeerThatIsDownIsSentAgainUntilItAnswers(t *testing.T) {
	addr := freeAddr(t)
	var asked atomic.Int32
	g := newSender(t, func(id raft.ServerID, a raft.ServerAddress, term uint64) bool {
		if id != "follower" || string(a) != addr || term != 3 {
			t.Errorf("lead asked about %s at %s in term %d", id, a, term)
			return false
		}
		asked.Add(1)
		return true
	})
	served := make(chan *atomic.Int32, 1)
	time.AfterFunc(300*time.Millisecond, func() { served <- answer(t, addr, func() error { return nil }) })
	var resp raft.AppendEntriesResponse
	if err := g.AppendEntries("follower", raft.ServerAddress(addr), replicationCall(g.LocalAddr()), &resp); err != nil {
		t.Fatalf("the call to a peer back after 300ms: %v", err)
	}
	if !resp.Success || (<-served).Load() != 1 {
		t.Fatalf("the peer answered %+v", resp)
	}
	if asked.Load() < 2 {
		t.Fatalf("lead was asked %d times over 300ms of tries", asked.Load())
	}
}

// TestWhatIsNotSentAgain: a heartbeat, a call once this node no longer
// leads (or the peer is no longer a member there), a call the peer
// answered with an error, and any call once the transport stops retrying
// go back to Raft with their error at once.
func TestWhatIsNotSentAgain(t *testing.T) {
	always := func(raft.ServerID, raft.ServerAddress, uint64) bool { return true }
	call := func(g *guardedTransport, addr string, req *raft.AppendEntriesRequest) error {
		done := make(chan error, 1)
		go func() {
			var resp raft.AppendEntriesResponse
			done <- g.AppendEntries("follower", raft.ServerAddress(addr), req, &resp)
		}()
		select {
		case err := <-done:
			return err
		case <-time.After(waitLimit):
			t.Fatalf("the call was still being sent after %s", waitLimit)
			return nil
		}
	}

	t.Run("heartbeat", func(t *testing.T) {
		g := newSender(t, always)
		hb := &raft.AppendEntriesRequest{RPCHeader: replicationCall(g.LocalAddr()).RPCHeader, Term: 3}
		if err := call(g, freeAddr(t), hb); err == nil {
			t.Fatal("a heartbeat to nobody succeeded")
		}
	})
	t.Run("no longer leads", func(t *testing.T) {
		var asked atomic.Int32
		g := newSender(t, func(raft.ServerID, raft.ServerAddress, uint64) bool { return asked.Add(1) < 3 })
		if err := call(g, freeAddr(t), replicationCall(g.LocalAddr())); err == nil || asked.Load() != 3 {
			t.Fatalf("err %v after lead was asked %d times, want an error once it said no (the 3rd)", err, asked.Load())
		}
	})
	t.Run("the peer's error", func(t *testing.T) {
		g, addr := newSender(t, always), freeAddr(t)
		n := answer(t, addr, func() error { return errors.New("not now") })
		err := call(g, addr, replicationCall(g.LocalAddr()))
		if err == nil || !strings.Contains(err.Error(), "not now") || n.Load() != 1 {
			t.Fatalf("err %v after %d calls; want the peer's error after one", err, n.Load())
		}
	})
	t.Run("stopped", func(t *testing.T) {
		g := newSender(t, always)
		time.AfterFunc(200*time.Millisecond, g.stopRetries)
		if err := call(g, freeAddr(t), replicationCall(g.LocalAddr())); err == nil {
			t.Fatal("a call to nobody succeeded")
		}
		if err := call(g, freeAddr(t), replicationCall(g.LocalAddr())); err == nil {
			t.Fatal("a call to nobody after stopRetries succeeded")
		}
	})
	t.Run("never told who leads", func(t *testing.T) {
		g := newSender(t, nil)
		if err := call(g, freeAddr(t), replicationCall(g.LocalAddr())); err == nil {
			t.Fatal("a call to nobody succeeded")
		}
	})
}

// waitLimit bounds each call of TestWhatIsNotSentAgain: one sent again
// would go on forever.
const waitLimit = 20 * time.Second

// TestUnreachableTellsAPeerDownFromAPeerThatAnswered, on errors as the
// dial and the connection give them.
func TestUnreachableTellsAPeerDownFromAPeerThatAnswered(t *testing.T) {
	_, refused := net.DialTimeout("tcp", freeAddr(t), time.Second)
	_, noName := net.DialTimeout("tcp", "stated-peer.invalid:7421", time.Second)
	_, timedOut := (&net.Dialer{Timeout: time.Nanosecond}).Dial("tcp", "127.0.0.1:9")
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", refused, true},
		{"a name that does not resolve", noName, true},
		{"a dial timeout", timedOut, true},
		{"EOF", fmt.Errorf("read: %w", io.EOF), true},
		{"reset", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, true},
		{"host unreachable", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}, true},
		// crypto/tls's alerts, as conn.go reports them
		{"a TLS alert", &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}, false},
		{"another cluster", fmt.Errorf("dial: %w", ErrOtherCluster), false},
		{"superseded", ErrSuperseded, false},
		{"the peer's own error", errors.New("unknown rpc type 9"), false},
	} {
		if c.err == nil {
			t.Fatalf("%s: no error to classify", c.name)
		}
		if got := unreachable(c.err); got != c.want {
			t.Errorf("%s (%v): unreachable = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

// unansweredAddr is a loopback address whose SYNs go unanswered, as a
// peer's do behind a network partition that drops its packets: a
// listener with the shortest accept queue, filled and never accepted
// from (Linux drops a SYN to a listener whose queue is full).
func unansweredAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				return addr
			}
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatalf("connections to %s still answered after its accept queue should have filled", addr)
	return ""
}

// TestTheTransportGivesUpADialThatGetsNoAnswerAfterTheElectionTimeoutAndASecond:
// a heartbeat to a peer whose SYNs are dropped fails once the dial has
// waited a second plus the election timeout, not the transport's 10 s
// I/O timeout: a dial started during a partition must not keep the
// leader from reaching the peer for that long after the partition heals.
func TestTheTransportGivesUpADialThatGetsNoAnswerAfterTheElectionTimeoutAndASecond(t *testing.T) {
	peer := unansweredAddr(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Store{cfg: Config{ElectionTimeout: 300 * time.Millisecond}, raftLn: ln, logger: slog.New(slog.DiscardHandler)}
	tr, err := s.newTransport(hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	bound := peerDialTimeout(s.cfg.ElectionTimeout)
	began := time.Now()
	var resp raft.AppendEntriesResponse
	err = tr.AppendEntries("peer", raft.ServerAddress(peer), &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("leader"), Addr: []byte(tr.LocalAddr())},
		Term:      1,
	}, &resp)
	took := time.Since(began)
	if ne := net.Error(nil); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("heartbeat to a peer that does not answer its SYNs: %v; want a dial timeout", err)
	}
	// The lower end holds by construction (a dial does not time out
	// early); the upper is far from both the bound and the 10 s the
	// transport would have waited.
	if took < bound || took > bound+3*time.Second {
		t.Fatalf("the dial gave up after %v; want %v (a second plus the election timeout), not the transport's 10 s", took, bound)
	}
}
