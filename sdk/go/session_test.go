package stated

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

func sessionRefusal(reason statedv1.SessionRefused_Reason) error {
	st, err := status.New(codes.FailedPrecondition, "session: refused").WithDetails(&statedv1.SessionRefused{Reason: reason, SessionId: 77})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

// refuseCommits makes f answer its next commits with errs, in turn.
func refuseCommits(f *fakeState, errs ...error) {
	var mu sync.Mutex
	f.commitHook = func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if len(errs) == 0 {
			return nil
		}
		err := errs[0]
		errs = errs[1:]
		return err
	}
}

func TestCommitOnAnExpiredSessionOpensANewOneAndSendsItThere(t *testing.T) {
	f := &fakeState{sessionIDs: []uint64{77, 78}}
	refuseCommits(f, sessionRefusal(statedv1.SessionRefused_REASON_NOT_OPEN))
	c := newFakeClient(f)
	_, err := c.Txn().Put("ns", []byte("k"), []byte("v")).Commit(context.Background())
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	if len(f.opens) != 2 || len(f.commits) != 2 {
		t.Fatalf("%d opens and %d commits, want 2 and 2", len(f.opens), len(f.commits))
	}
	if a, b := f.commits[0], f.commits[1]; a.SessionId != 77 || b.SessionId != 78 || b.Sequence != 1 {
		t.Fatalf("attempts in sessions %d and %d (sequence %d), want 77 then 78 from sequence 1", a.SessionId, b.SessionId, b.Sequence)
	}
	if c.SessionID() != 78 {
		t.Fatalf("SessionID() = %d, want 78", c.SessionID())
	}
}

// TestCommitWhoseSessionExpiredDuringRetriesIsOfUnknownOutcome: an earlier
// attempt may have applied before the session expired, so sending it again
// in a new session could apply it twice; the caller is told instead.
func TestCommitWhoseSessionExpiredDuringRetriesIsOfUnknownOutcome(t *testing.T) {
	f := &fakeState{}
	refuseCommits(f, status.Error(codes.Unavailable, "leader lost"), sessionRefusal(statedv1.SessionRefused_REASON_NOT_OPEN))
	c := newFakeClient(f, func(o *clientOptions) { o.retry = defaultRetryPolicy() })
	_, err := c.Txn().Put("ns", []byte("k"), []byte("v")).Commit(context.Background())
	if !errors.Is(err, ErrSessionExpired) || !errors.Is(err, ErrFailedPrecondition) {
		t.Fatalf("commit: %v, want ErrSessionExpired", err)
	}
	if len(f.commits) != 2 {
		t.Fatalf("%d attempts, want 2 and no third in a new session", len(f.commits))
	}
	// The next commit opens a new session.
	if _, err := c.Txn().Put("ns", []byte("k"), []byte("w")).Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(f.opens) != 2 {
		t.Fatalf("%d opens, want a second one", len(f.opens))
	}
}

func TestAFencedClientStaysFenced(t *testing.T) {
	f := &fakeState{}
	refuseCommits(f, sessionRefusal(statedv1.SessionRefused_REASON_SUPERSEDED))
	c := newFakeClient(f)
	_, err := c.Txn().Put("ns", []byte("k"), []byte("v")).Commit(context.Background())
	var se *SessionError
	if !errors.Is(err, ErrSessionFenced) || !errors.Is(err, ErrFailedPrecondition) || !errors.As(err, &se) || se.Reason != "superseded" {
		t.Fatalf("commit: %v, want ErrSessionFenced", err)
	}
	// It never reopens: that would fence the process that replaced it.
	_, err = c.Txn().Put("ns", []byte("k"), []byte("v")).Commit(context.Background())
	if !errors.Is(err, ErrSessionFenced) || len(f.commits) != 1 || len(f.opens) != 1 {
		t.Fatalf("second commit: %v after %d commits and %d opens; want fenced without sending", err, len(f.commits), len(f.opens))
	}
}

func TestConcurrentCommitsTakeDistinctLanesWithIncreasingSequences(t *testing.T) {
	f := &fakeState{}
	block := make(chan struct{})
	var inFlight atomic.Int32
	f.commitHook = func(context.Context) error {
		if inFlight.Add(1) <= 8 {
			<-block // hold the first eight, so eight lanes are in use at once
		}
		return nil
	}
	// Without coalescing, so that eight Commit calls are in flight at once
	// (coalesced commits queue behind the call in flight; their lanes are
	// checked in coalesce_test.go).
	c := newFakeClient(f, WithCommitCoalescing(false))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 5 {
				if _, err := c.Txn().CounterAdd("ns", []byte("c"), 1).Commit(context.Background()); err != nil {
					t.Error(err)
				}
			}
		})
	}
	for inFlight.Load() < 8 {
		waitABit()
	}
	close(block)
	wg.Wait()
	type laneSeq struct {
		lane uint32
		seq  uint64
	}
	seen := map[laneSeq]bool{}
	last := map[uint32]uint64{}
	for _, r := range f.commits {
		k := laneSeq{r.Lane, r.Sequence}
		if seen[k] {
			t.Fatalf("lane %d sequence %d sent twice", r.Lane, r.Sequence)
		}
		seen[k] = true
		last[r.Lane] = max(last[r.Lane], r.Sequence)
	}
	if len(last) != 8 {
		t.Fatalf("%d lanes, want 8 (one per commit in flight)", len(last))
	}
	var total uint64
	for _, n := range last {
		total += n
	}
	if total != 40 {
		t.Fatalf("sequences add up to %d across lanes, want 40 commits with no gaps", total)
	}
}

func waitABit() { time.Sleep(time.Millisecond) }

// TestCommitToAnUnreachableDaemonFailsUnavailable: while the session
// cannot be opened, a commit ends with its ctx and reports why.
func TestCommitToAnUnreachableDaemonFailsUnavailable(t *testing.T) {
	c, err := Dial(context.Background(), filepath.Join(t.TempDir(), "none.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = c.Txn().Put("ns", []byte("k"), []byte("v")).Commit(ctx)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("commit: %v, want ErrUnavailable", err)
	}
}

// TestACommitSupersededByItsClientsNewerSessionIsSentThere: a commit's
// first attempt, sent in a session that expired meanwhile, is refused as
// superseded by the session the same Client opened since (another of its
// commits found the old one expired first). That is no fence: the commit
// never applied, so it is sent in the new session, and the Client goes on.
func TestACommitSupersededByItsClientsNewerSessionIsSentThere(t *testing.T) {
	f := &fakeState{sessionIDs: []uint64{77, 78}}
	held := make(chan struct{})
	release := make(chan struct{})
	var calls atomic.Int32
	f.commitHook = func(context.Context) error {
		switch calls.Add(1) {
		case 1: // the slow commit's attempt, in session 77
			close(held)
			<-release
			st, _ := status.New(codes.FailedPrecondition, "session: superseded").WithDetails(&statedv1.SessionRefused{
				Reason: statedv1.SessionRefused_REASON_SUPERSEDED, SessionId: 77, CurrentSessionId: 78})
			return st.Err()
		case 2: // the other commit, in session 77 too: it expired
			return sessionRefusal(statedv1.SessionRefused_REASON_NOT_OPEN)
		}
		return nil
	}
	c := newFakeClient(f, WithCommitCoalescing(false))
	slow := make(chan error, 1)
	go func() {
		_, err := c.Txn().Put("ns", []byte("a"), []byte("v")).Commit(context.Background())
		slow <- err
	}()
	<-held
	if _, err := c.Txn().Put("ns", []byte("b"), []byte("v")).Commit(context.Background()); err != nil {
		t.Fatalf("the other commit: %v", err)
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatalf("the slow commit: %v; want it sent again in the Client's new session", err)
	}
	if _, err := c.Txn().Put("ns", []byte("c"), []byte("v")).Commit(context.Background()); err != nil {
		t.Fatalf("a later commit: %v; the Client fenced itself", err)
	}
	last := f.commits[len(f.commits)-2] // the slow commit's second attempt
	if string(last.Mutations[0].Key) != "a" || last.SessionId != 78 {
		t.Fatalf("the slow commit's second attempt: key %q in session %d, want a in 78", last.Mutations[0].Key, last.SessionId)
	}
}

// TestACommitFencedWhileRetriedIsOfUnknownOutcome: an earlier attempt may
// have applied before another process fenced the session, so the error
// says the outcome is unknown; it still matches ErrSessionFenced.
func TestACommitFencedWhileRetriedIsOfUnknownOutcome(t *testing.T) {
	f := &fakeState{}
	refuseCommits(f, status.Error(codes.Unavailable, "answer lost"), sessionRefusal(statedv1.SessionRefused_REASON_SUPERSEDED))
	c := newFakeClient(f, func(o *clientOptions) { o.retry = defaultRetryPolicy() })
	_, err := c.Txn().Put("ns", []byte("k"), []byte("v")).Commit(context.Background())
	if !errors.Is(err, ErrSessionFenced) || errors.Is(err, ErrSessionExpired) || !strings.Contains(err.Error(), "may or may not have applied") {
		t.Fatalf("commit: %v, want ErrSessionFenced of unknown outcome", err)
	}
	if _, err := c.Txn().Put("ns", []byte("k"), []byte("w")).Commit(context.Background()); !errors.Is(err, ErrSessionFenced) {
		t.Fatalf("next commit: %v, want ErrSessionFenced: the Client stays fenced", err)
	}
}

// TestACommitAnsweredResourceExhaustedIsSentAgainAloneToLearnItsOutcome:
// ResourceExhausted may be the commit's answer, too large to receive after
// the commit applied. The commit is sent again, alone, with the same
// lane and sequence (a duplicate is answered without emissions); twice
// refused, it was too large itself and applied nothing. A full outbox is
// a refusal, never sent again.
func TestACommitAnsweredResourceExhaustedIsSentAgainAloneToLearnItsOutcome(t *testing.T) {
	tooLarge := status.Error(codes.ResourceExhausted, "grpc: received message larger than max (117879 vs. 32768)")
	t.Run("answer too large", func(t *testing.T) {
		f := &fakeState{}
		refuseCommits(f, tooLarge)
		c := newFakeClient(f)
		if _, err := c.Txn().Put("ns", []byte("k"), []byte("v")).Commit(context.Background()); err != nil {
			t.Fatalf("commit: %v, want the retry's answer", err)
		}
		if len(f.commits) != 2 || f.commits[0].Sequence != f.commits[1].Sequence || f.commits[0].Lane != f.commits[1].Lane {
			t.Fatalf("%d attempts, want 2 with one lane and sequence", len(f.commits))
		}
	})
	t.Run("commit too large", func(t *testing.T) {
		f := &fakeState{commitErr: tooLarge}
		c := newFakeClient(f)
		if _, err := c.Txn().Put("ns", []byte("k"), []byte("v")).Commit(context.Background()); !errors.Is(err, ErrResourceExhausted) {
			t.Fatalf("commit: %v, want ErrResourceExhausted", err)
		}
		if len(f.commits) != 3 {
			t.Fatalf("%d attempts, want 3: the commit, then twice alone", len(f.commits))
		}
	})
	t.Run("outbox full", func(t *testing.T) {
		st, _ := status.New(codes.ResourceExhausted, "outbox full").WithDetails(&statedv1.OutboxFull{Namespace: "w"})
		f := &fakeState{commitErr: st.Err()}
		c := newFakeClient(f)
		if _, err := c.Txn().Put("ns", []byte("k"), []byte("v")).Commit(context.Background()); !errors.Is(err, ErrOutboxFull) {
			t.Fatalf("commit: %v, want ErrOutboxFull", err)
		}
		if len(f.commits) != 1 {
			t.Fatalf("%d attempts, want 1", len(f.commits))
		}
	})
}
