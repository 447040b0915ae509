package raftstore

import (
	"bytes"
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

	"github.com/statedhq/stated/internal/heldport"
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

// answer serves AppendEntries on ln, answering each with fn's error
// (Success when nil), and counts them.
func answer(t *testing.T, ln net.Listener, fn func() error) *atomic.Int32 {
	t.Helper()
	tr := raft.NewNetworkTransport(&tcpLayer{Listener: ln, advertise: ln.Addr()}, 2, 5*time.Second, io.Discard)
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
	port := heldport.Hold(t) // refused until answer serves it
	addr := port.Addr()
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
	time.AfterFunc(300*time.Millisecond, func() { served <- answer(t, port.Listen(t), func() error { return nil }) })
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
		return withinWaitLimit(t, "the call", func() error {
			var resp raft.AppendEntriesResponse
			return g.AppendEntries("follower", raft.ServerAddress(addr), req, &resp)
		})
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
		g := newSender(t, always)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		n := answer(t, ln, func() error { return errors.New("not now") })
		err = call(g, ln.Addr().String(), replicationCall(g.LocalAddr()))
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

// waitLimit bounds each call of TestWhatIsNotSentAgain and of the
// snapshots' test: one sent again would go on forever.
const waitLimit = 20 * time.Second

// withinWaitLimit returns send's error, failing the test if send (what)
// has not returned within waitLimit.
func withinWaitLimit(t *testing.T, what string, send func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- send() }()
	select {
	case err := <-done:
		return err
	case <-time.After(waitLimit):
		t.Fatalf("%s was still being sent after %s", what, waitLimit)
		return nil
	}
}

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

// receiveSnapshots serves InstallSnapshot on ln: it reads each
// snapshot's data whole, answers Success, and sends the data on the
// channel it returns.
func receiveSnapshots(t *testing.T, ln net.Listener) <-chan []byte {
	t.Helper()
	tr := raft.NewNetworkTransport(&tcpLayer{Listener: ln, advertise: ln.Addr()}, 2, 5*time.Second, io.Discard)
	t.Cleanup(func() { tr.Close() })
	got := make(chan []byte, 4)
	go func() {
		for rpc := range tr.Consumer() {
			b, err := io.ReadAll(rpc.Reader)
			got <- b
			rpc.Respond(&raft.InstallSnapshotResponse{Term: 3, Success: err == nil}, err)
		}
	}()
	return got
}

func snapshotCall(from raft.ServerAddress, data []byte) *raft.InstallSnapshotRequest {
	return &raft.InstallSnapshotRequest{
		RPCHeader:       replicationCall(from).RPCHeader,
		SnapshotVersion: raft.SnapshotVersionMax,
		Term:            3, LastLogIndex: 100, LastLogTerm: 3, Size: int64(len(data)),
	}
}

// TestASnapshotToAPeerThatIsDownIsSentAgainUntilItAnswers: a snapshot
// that could not reach its peer is sent again, whole, once the peer is
// back a moment later, instead of failing and leaving the next try to
// Raft's backoff.
func TestASnapshotToAPeerThatIsDownIsSentAgainUntilItAnswers(t *testing.T) {
	port := heldport.Hold(t) // refused until receiveSnapshots serves it
	var asked atomic.Int32
	g := newSender(t, func(id raft.ServerID, a raft.ServerAddress, term uint64) bool {
		if id != "follower" || string(a) != port.Addr() || term != 3 {
			t.Errorf("lead asked about %s at %s in term %d", id, a, term)
			return false
		}
		asked.Add(1)
		return true
	})
	served := make(chan (<-chan []byte), 1)
	time.AfterFunc(300*time.Millisecond, func() { served <- receiveSnapshots(t, port.Listen(t)) })
	data := bytes.Repeat([]byte("snapshot"), 10_000)
	var resp raft.InstallSnapshotResponse
	if err := g.InstallSnapshot("follower", raft.ServerAddress(port.Addr()), snapshotCall(g.LocalAddr(), data), &resp, bytes.NewReader(data)); err != nil {
		t.Fatalf("the snapshot to a peer back after 300ms: %v", err)
	}
	if !resp.Success {
		t.Fatalf("the peer answered %+v", resp)
	}
	if got := <-<-served; !bytes.Equal(got, data) {
		t.Fatalf("the peer received %d bytes; want the %d of the snapshot", len(got), len(data))
	}
	if asked.Load() < 2 {
		t.Fatalf("lead was asked %d times over 300ms of tries", asked.Load())
	}
}

// TestASnapshotIsNotSentAgainOnceItsDataWasReadNorPastItsBound: a
// snapshot whose data was read before the connection broke goes back to
// Raft with its error at once (its reader cannot be rewound), and so does
// one whose peer stays away past the bound.
func TestASnapshotIsNotSentAgainOnceItsDataWasReadNorPastItsBound(t *testing.T) {
	always := func(raft.ServerID, raft.ServerAddress, uint64) bool { return true }
	send := func(g *guardedTransport, addr string, data []byte) error {
		return withinWaitLimit(t, "the snapshot", func() error {
			var resp raft.InstallSnapshotResponse
			return g.InstallSnapshot("follower", raft.ServerAddress(addr), snapshotCall(g.LocalAddr(), data), &resp, bytes.NewReader(data))
		})
	}

	t.Run("data read", func(t *testing.T) {
		// A peer that closes the connection once the snapshot is on its
		// way: the sender's write of the data fails (16 MiB outgrow the
		// sockets' buffers) after some of it was read.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		var accepted atomic.Int32
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted.Add(1)
				io.ReadFull(c, make([]byte, 1))
				c.Close()
			}
		}()
		err = send(newSender(t, always), ln.Addr().String(), bytes.Repeat([]byte("snapshot"), 2<<20))
		if !unreachable(err) || accepted.Load() != 1 {
			t.Fatalf("err %v after %d connections; want the broken connection's error after one", err, accepted.Load())
		}
	})
	t.Run("past the bound", func(t *testing.T) {
		g := newSender(t, always)
		g.snapshotFor = 300 * time.Millisecond
		began := time.Now()
		if err := send(g, heldport.Hold(t).Addr(), []byte("snapshot")); err == nil {
			t.Fatal("a snapshot to nobody succeeded")
		}
		if d := time.Since(began); d < g.snapshotFor {
			t.Fatalf("the snapshot went back to Raft after %v, before its bound %v", d, g.snapshotFor)
		}
	})
}
