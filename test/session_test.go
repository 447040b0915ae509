package test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statedhq/stated/daemon/daemontest"
	stated "github.com/statedhq/stated/sdk/go"
)

// TestReusedClientIDLosesNoCommit is the reproduction of the defect that
// client sessions fix: a process commits with a client id and goes away; a
// second one dials with the same id, its sequences start at 1 again, and
// its first commit used to be acknowledged as a retry of the first
// process's (with that commit's index) and never applied.
func TestReusedClientIDLosesNoCommit(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := newNode(t)
	n.start(ctx)

	first := sdkDial(ctx, t, n.socket, stated.WithClientID("x"))
	r1, err := first.Txn().Put("ns", []byte("k0"), []byte("first")).Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first.Close()

	second := sdkDial(ctx, t, n.socket, stated.WithClientID("x"))
	r2, err := second.Txn().Put("ns", []byte("k1"), []byte("second")).Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Index == r1.Index || r2.Duplicate {
		t.Fatalf("second process's commit = %+v, the first's index %d: taken for a retry", r2, r1.Index)
	}
	for k, want := range map[string]string{"k0": "first", "k1": "second"} {
		v, ok, err := second.Get(ctx, "ns", []byte(k), stated.WithConsistency(stated.ConsistencyLinearizable))
		if err != nil || !ok || string(v.Value) != want {
			t.Fatalf("%s = %q, %v, %v; want %q", k, v.Value, ok, err, want)
		}
	}
}

// TestZombieOfAReusedClientIDIsFenced: a process that still holds the old
// session of a client id another process has dialled since can no longer
// commit, and its refused commit changes nothing.
func TestZombieOfAReusedClientIDIsFenced(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := newNode(t)
	n.start(ctx)

	zombie := sdkDial(ctx, t, n.socket, stated.WithClientID("svc"))
	if _, err := zombie.Txn().CounterAdd("ns", []byte("c"), 1).Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// The replacement dials: the dial opens its session and fences the
	// zombie's, before it commits anything.
	replacement := sdkDial(ctx, t, n.socket, stated.WithClientID("svc"))
	_, err := zombie.Txn().CounterAdd("ns", []byte("c"), 100).Commit(ctx)
	var se *stated.SessionError
	if !errors.Is(err, stated.ErrSessionFenced) || !errors.Is(err, stated.ErrFailedPrecondition) || !errors.As(err, &se) {
		t.Fatalf("zombie's commit: %v, want ErrSessionFenced", err)
	}
	if se.CurrentSessionID != replacement.SessionID() || se.SessionID == se.CurrentSessionID {
		t.Fatalf("refusal names session %d replaced by %d; the replacement holds %d", se.SessionID, se.CurrentSessionID, replacement.SessionID())
	}
	if _, err := replacement.Txn().CounterAdd("ns", []byte("c"), 1).Commit(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := replacement.GetCounter(ctx, "ns", []byte("c"), stated.WithConsistency(stated.ConsistencyLinearizable))
	if err != nil || got != 2 {
		t.Fatalf("counter = %d, %v; want 2 (the zombie's add refused)", got, err)
	}
	// It stays fenced.
	if _, err := zombie.Txn().CounterAdd("ns", []byte("c"), 100).Commit(ctx); !errors.Is(err, stated.ErrSessionFenced) {
		t.Fatalf("zombie's second commit: %v", err)
	}
}

// TestSessionsExpireAndTheSDKOpensANewOne runs stated with a short idle
// timeout: an idle client's session is deleted by the leader's sweep (the
// status counts show it, and the record of the ended session kept to
// refuse a late open of it), and its next commit opens a new session and
// applies once.
func TestSessionsExpireAndTheSDKOpensANewOne(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := newNode(t)
	n.args = []string{"--session-idle-timeout", "1s", "--expiry-interval", "100ms"}
	n.start(ctx)
	c := sdkDial(ctx, t, n.socket, stated.WithClientID("idle"))
	if _, err := c.Txn().CounterAdd("ns", []byte("c"), 1).Commit(ctx); err != nil {
		t.Fatal(err)
	}
	old := c.SessionID()
	for {
		st, err := c.NodeStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Counts.Sessions == 0 && st.Counts.SessionLanes == 0 {
			// Written with the session's deletion, kept for a day.
			if st.Counts.EndedSessions != 1 {
				t.Fatalf("the expired session's deletion left %d records of ended sessions, want 1: %+v", st.Counts.EndedSessions, st.Counts)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the idle session was never deleted: %+v", st.Counts)
		}
		time.Sleep(50 * time.Millisecond)
	}
	res, err := c.Txn().CounterAdd("ns", []byte("c"), 1).Commit(ctx)
	if err != nil || res.Duplicate {
		t.Fatalf("commit after expiry: %+v, %v", res, err)
	}
	if c.SessionID() == old || c.SessionID() == 0 {
		t.Fatalf("session %d after expiry, was %d: want a new one", c.SessionID(), old)
	}
	got, err := c.GetCounter(ctx, "ns", []byte("c"))
	if err != nil || got != 2 {
		t.Fatalf("counter = %d, %v; want 2", got, err)
	}
}

// TestCounterRestartedWithAFixedClientIDCountsExactly kills the counter
// example with SIGKILL several times and restarts it with the same
// --client-id each time, as a service with a stable identity is restarted.
// Each new process opens a new session for the id; before sessions, its
// commits were acknowledged as retries of the dead process's and the
// records they counted were skipped for good.
func TestCounterRestartedWithAFixedClientIDCountsExactly(t *testing.T) {
	t.Parallel()
	ctx := kafkaTestContext(t)
	r := testRand(t)
	counterBinary(t)
	d := daemontest.Start(t)
	k := newKafka(t, "events", 3)
	k.produce(ctx, t, 60_000, 53)
	c := sdkDial(ctx, t, d.SocketPath())
	args := []string{"-v", "--brokers", strings.Join(k.brokers, ","), "--stated", "unix://" + d.SocketPath(),
		"--group", "g", "--topic", k.topic, "--namespace", "counts", "--session-timeout", "1s",
		"--client-id", "counter-1", "--max-poll-records", strconv.Itoa(50 + r.IntN(200))}
	var committed int64
	for round := range 3 {
		p := startCounterProc(t, fmt.Sprint("counter ", round), args...)
		committed = k.waitCommitted(ctx, t, r, c, "g", committed+3000+int64(r.IntN(6000)), p.exited())
		p.signal(syscall.SIGKILL)
		t.Logf("round %d: SIGKILL with %d records committed", round, committed)
	}
	p := startCounterProc(t, "counter final", args...)
	k.waitDrained(ctx, t, c, "g", p.exited())
	p.signal(syscall.SIGTERM)
	k.checkCounts(ctx, t, c, "counts")
}

// TestProcessorWhoseClientIDIsTakenStopsFenced: a processor whose client
// id another process dials (a replacement started while the old one still
// runs) stops with ErrSessionFenced at its next commit, and none of its
// records after the replacement dialled is counted.
func TestProcessorWhoseClientIDIsTakenStopsFenced(t *testing.T) {
	t.Parallel()
	ctx := kafkaTestContext(t)
	d := daemontest.Start(t)
	k := newKafka(t, "events", 2)
	k.produce(ctx, t, 2000, 17)
	old := sdkDial(ctx, t, d.SocketPath(), stated.WithClientID("proc"))
	cfg := k.countingConfig(old, "g", "counts")
	cfg.MaxPollRecords = 50
	stalled, wake := make(chan struct{}), make(chan struct{})
	var handled atomic.Int64
	h := cfg.Handler
	cfg.Handler = func(ctx context.Context, txn *stated.Txn, r *kgo.Record) error {
		if handled.Add(1) == 300 {
			close(stalled)
			<-wake
		}
		return h(ctx, txn, r)
	}
	errc := startProcessor(ctx, t, cfg)
	select {
	case <-stalled:
	case err := <-errc:
		t.Fatalf("processor stopped early: %v", err)
	}
	before, err := k.committedRecords(ctx, old, "g")
	if err != nil {
		t.Fatal(err)
	}
	sdkDial(ctx, t, d.SocketPath(), stated.WithClientID("proc")) // the replacement
	close(wake)
	select {
	case err := <-errc:
		if !errors.Is(err, stated.ErrSessionFenced) {
			t.Fatalf("processor stopped with %v, want ErrSessionFenced", err)
		}
	case <-ctx.Done():
		t.Fatal("the fenced processor never stopped")
	}
	probe := sdkDial(ctx, t, d.SocketPath(), stated.WithLazySession())
	after, err := k.committedRecords(ctx, probe, "g")
	if err != nil || after != before {
		t.Fatalf("committed records %d after the fence, %d before (%v): the zombie's batch applied", after, before, err)
	}
}
