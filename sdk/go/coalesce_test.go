package stated

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// CommitBatch answers each commit from batchResult when set, else as the
// fake's Commit does, all at once as the daemon does; it records the
// batches. With batchErr set, the whole call fails.
func (f *fakeState) CommitBatch(ctx context.Context, in *statedv1.CommitBatchRequest, _ ...grpc.CallOption) (*statedv1.CommitBatchResponse, error) {
	f.mu.Lock()
	f.batches = append(f.batches, in)
	batchErr, result := f.batchErr, f.batchResult
	f.mu.Unlock()
	if batchErr != nil {
		return nil, batchErr
	}
	resp := &statedv1.CommitBatchResponse{Results: make([]*statedv1.CommitBatchResult, len(in.GetCommits()))}
	var wg sync.WaitGroup
	for i, c := range in.GetCommits() {
		if result != nil {
			resp.Results[i] = result(c)
			continue
		}
		wg.Go(func() {
			r, err := f.Commit(ctx, c)
			if err != nil {
				resp.Results[i] = errorResultOf(status.Convert(err))
				return
			}
			resp.Results[i] = &statedv1.CommitBatchResult{Response: r}
		})
	}
	wg.Wait()
	return resp, nil
}

// CommitStream answers as a daemon without it does: the fake's commits
// go as CommitBatch and Commit calls, which the tests of this file
// check. The stream is tested against real daemons (commitstream_test.go).
func (f *fakeState) CommitStream(context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[statedv1.CommitStreamRequest, statedv1.CommitStreamResponse], error) {
	return nil, status.Error(codes.Unimplemented, "unknown method CommitStream for service stated.v1.State")
}

// gatedState is a fakeState whose plain Commits wait until gate is
// closed, so that commits sent meanwhile queue up behind them.
type gatedState struct {
	*fakeState
	entered chan struct{}
	gate    chan struct{}
}

func (g *gatedState) Commit(ctx context.Context, in *statedv1.CommitRequest, opts ...grpc.CallOption) (*statedv1.CommitResponse, error) {
	g.entered <- struct{}{}
	<-g.gate
	return g.fakeState.Commit(ctx, in, opts...)
}

// queued waits until q holds n commits.
func queued(t *testing.T, q *coalescer, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		q.mu.Lock()
		got := len(q.pending)
		q.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d commits queued after 10s, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCoalescingSendsCommitsQueuedBehindACallInOneBatchEachWithItsOwnOutcome(t *testing.T) {
	f := &fakeState{batchResult: func(c *statedv1.CommitRequest) *statedv1.CommitBatchResult {
		switch string(c.GetMutations()[0].GetKey()) {
		case "bad":
			return errorResultOf(status.New(codes.InvalidArgument, "mutations[0].namespace: must not be empty"))
		case "fenced":
			st, _ := status.New(codes.FailedPrecondition, "session superseded").WithDetails(&statedv1.SessionRefused{
				ClientId: "test-client", SessionId: 77, CurrentSessionId: 78, Reason: statedv1.SessionRefused_REASON_SUPERSEDED})
			return errorResultOf(st)
		}
		// Each commit holds its own lane: the index tells them apart.
		return &statedv1.CommitBatchResult{Response: &statedv1.CommitResponse{Index: 100 + uint64(c.GetLane())}}
	}}
	g := &gatedState{fakeState: f, entered: make(chan struct{}, 1), gate: make(chan struct{})}
	c := newClient(nil, g, clientOptions{clientID: "test-client", retry: defaultRetryPolicy()})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	type outcome struct {
		res CommitResult
		err error
	}
	keys := []string{"first", "ok1", "bad", "ok2", "fenced"}
	outcomes := make([]outcome, len(keys))
	var wg sync.WaitGroup
	commit := func(i int) {
		defer wg.Done()
		res, err := c.Txn().Put("ns", []byte(keys[i]), []byte("v")).Commit(ctx)
		outcomes[i] = outcome{res, err}
	}
	wg.Add(1)
	go commit(0)
	<-g.entered // the first commit's call is in flight
	for i := 1; i < len(keys); i++ {
		wg.Add(1)
		go commit(i)
	}
	queued(t, c.batch, len(keys)-1)
	close(g.gate)
	wg.Wait()

	f.mu.Lock()
	commits, batches := len(f.commits), f.batches
	f.mu.Unlock()
	if commits != 1 || len(batches) != 1 || len(batches[0].GetCommits()) != 4 {
		t.Fatalf("%d plain commits and batches %v, want the first alone and the four queued in one batch", commits, batches)
	}
	if outcomes[0].err != nil {
		t.Errorf("first commit: %v", outcomes[0].err)
	}
	for _, i := range []int{1, 3} {
		if outcomes[i].err != nil || outcomes[i].res.Index < 100 {
			t.Errorf("commit %q = %+v, %v; want its own index from the batch", keys[i], outcomes[i].res, outcomes[i].err)
		}
	}
	if outcomes[1].res.Index == outcomes[3].res.Index {
		t.Errorf("two commits of the batch got the same index %d: each has its own lane and sequence", outcomes[1].res.Index)
	}
	if err := outcomes[2].err; !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("commit %q = %v, want ErrInvalidArgument", keys[2], err)
	}
	if err := outcomes[4].err; !errors.Is(err, ErrSessionFenced) {
		t.Errorf("commit %q = %v, want ErrSessionFenced from the result's SessionRefused detail", keys[4], err)
	}
	if _, err := c.Txn().Put("ns", []byte("later"), nil).Commit(ctx); !errors.Is(err, ErrSessionFenced) {
		t.Errorf("commit after the fence = %v, want ErrSessionFenced", err)
	}
}

func errorResultOf(st *status.Status) *statedv1.CommitBatchResult {
	p := st.Proto()
	return &statedv1.CommitBatchResult{Error: &statedv1.CommitError{Code: p.GetCode(), Message: p.GetMessage(), Details: p.GetDetails()}}
}

func TestCoalescingOffOrALoneCommitSendsPlainCommits(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
		conc int
	}{
		{"a lone commit at a time", nil, 1},
		{"coalescing off", []Option{WithCommitCoalescing(false)}, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeState{}
			c := newFakeClient(f, tc.opts...)
			var wg sync.WaitGroup
			for i := range tc.conc {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := range 5 {
						if _, err := c.Txn().Put("ns", fmt.Appendf(nil, "%d/%d", i, j), nil).Commit(context.Background()); err != nil {
							t.Error(err)
						}
					}
				}()
			}
			wg.Wait()
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.commits) != 5*tc.conc || len(f.batches) != 0 {
				t.Errorf("%d plain commits and %d batches, want %d plain commits and no batch", len(f.commits), len(f.batches), 5*tc.conc)
			}
		})
	}
}

func TestCoalescingFallsBackToPlainCommitsOnADaemonWithoutCommitBatch(t *testing.T) {
	f := &fakeState{batchErr: status.Error(codes.Unimplemented, "unknown method CommitBatch")}
	g := &gatedState{fakeState: f, entered: make(chan struct{}, 8), gate: make(chan struct{})}
	c := newClient(nil, g, clientOptions{clientID: "test-client"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.Txn().Put("ns", fmt.Appendf(nil, "%d", i), nil).Commit(ctx)
		}()
		if i == 0 {
			<-g.entered
		}
	}
	queued(t, c.batch, 3)
	close(g.gate)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("commit %d: %v", i, err)
		}
	}
	if _, err := c.Txn().Put("ns", []byte("after"), nil).Commit(ctx); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.batches) != 1 || len(f.commits) != 5 {
		t.Errorf("%d batches and %d plain commits, want the one refused batch and then 5 plain commits", len(f.batches), len(f.commits))
	}
}

// A commit of more than maxCoalescedWrites writes goes at once as its own
// Commit call, even while another call is in flight; one of exactly that
// many waits in the queue like any other.
func TestCoalescingSendsACommitOfManyWritesAtOnce(t *testing.T) {
	f := &fakeState{}
	g := &gatedState{fakeState: f, entered: make(chan struct{}, 1), gate: make(chan struct{})}
	c := newClient(nil, g, clientOptions{clientID: "test-client", retry: defaultRetryPolicy()})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	txn := func(name string, puts int) *Txn {
		t := c.Txn()
		for i := range puts {
			t.Put("ns", fmt.Appendf(nil, "%s/%d", name, i), []byte("v"))
		}
		return t
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	commit := func(t *Txn) {
		wg.Go(func() {
			if _, err := t.Commit(ctx); err != nil {
				errs <- err
			}
		})
	}
	commit(txn("first", 1))
	<-g.entered // the first commit's call is in flight
	commit(txn("at-limit", maxCoalescedWrites))
	queued(t, c.batch, 1)
	commit(txn("past-limit", maxCoalescedWrites+1))
	var waited bool
	select {
	case <-g.entered: // its own call, while the first is still in flight
	case <-time.After(10 * time.Second):
		waited = true
	}
	close(g.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if waited {
		t.Fatal("a commit of more than maxCoalescedWrites writes waited behind the call in flight")
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	sizes := map[int]int{}
	for _, r := range f.commits {
		sizes[len(r.GetMutations())]++
	}
	// The one queued at the limit goes alone once the first returns: a
	// plain Commit too.
	if len(f.batches) != 0 || sizes[1] != 1 || sizes[maxCoalescedWrites] != 1 || sizes[maxCoalescedWrites+1] != 1 {
		t.Fatalf("plain commits by size %v and %d batches; want one each of 1, %d and %d writes, no batch", sizes, len(f.batches), maxCoalescedWrites, maxCoalescedWrites+1)
	}
}

// gatedCalls is a fakeState whose commit calls, plain and CommitBatch,
// each report how many commits they carry on calls, then wait for gate.
type gatedCalls struct {
	*fakeState
	calls chan int
	gate  chan struct{}
}

func (g *gatedCalls) Commit(ctx context.Context, in *statedv1.CommitRequest, opts ...grpc.CallOption) (*statedv1.CommitResponse, error) {
	g.calls <- 1
	<-g.gate
	return g.fakeState.Commit(ctx, in, opts...)
}

func (g *gatedCalls) CommitBatch(ctx context.Context, in *statedv1.CommitBatchRequest, opts ...grpc.CallOption) (*statedv1.CommitBatchResponse, error) {
	g.calls <- len(in.GetCommits())
	<-g.gate
	return g.fakeState.CommitBatch(ctx, in, opts...)
}

// TestCallersAnsweredTogetherCommitAgainInOneCall: callers that a call
// of several commits answered, and that commit again at once, go
// together in the next call. Without the coalescer's yield before it
// takes the queue, the first of them to queue goes alone (nothing queued
// during the flight) and the others in the call after it, every time:
// the callers would take turns in two cohorts. The yield lasts until no
// caller has queued for 20 µs, which a caller descheduled for longer
// misses, so the test asks that the next call carry more than one commit
// in most of ten rounds (all eight, in nearly all).
func TestCallersAnsweredTogetherCommitAgainInOneCall(t *testing.T) {
	const rounds, callers = 10, 8
	var thirds []int
	for range rounds {
		thirds = append(thirds, answeredCallersNextCall(t, callers))
	}
	slices.Sort(thirds)
	if thirds[rounds/2] < 2 {
		t.Fatalf("the callers a call answered committed again in calls of %v commits (ten rounds), want most of the %d together", thirds, callers)
	}
}

// answeredCallersNextCall has callers commit twice each, their first
// commits in one call, and returns how many commits the call after that
// one carries.
func answeredCallersNextCall(t *testing.T, callers int) int {
	t.Helper()
	g := &gatedCalls{fakeState: &fakeState{}, calls: make(chan int, 2*callers+1), gate: make(chan struct{})}
	c := newClient(nil, g, clientOptions{clientID: "test-client", retry: defaultRetryPolicy()})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nextCall := func() int {
		t.Helper()
		select {
		case n := <-g.calls:
			return n
		case <-ctx.Done():
			t.Fatal("no commit call within 30s")
			return 0
		}
	}

	var wg sync.WaitGroup
	errs := make(chan error, 2*callers+1)
	wg.Go(func() {
		_, err := c.Txn().Put("ns", []byte("holder"), nil).Commit(ctx)
		errs <- err
	})
	if n := nextCall(); n != 1 {
		t.Fatalf("the first call carries %d commits, want 1", n)
	}
	for i := range callers {
		wg.Go(func() {
			for j := range 2 {
				_, err := c.Txn().Put("ns", fmt.Appendf(nil, "k%d-%d", i, j), nil).Commit(ctx)
				errs <- err
			}
		})
	}
	queued(t, c.batch, callers)
	g.gate <- struct{}{} // the first call answers
	if n := nextCall(); n != callers {
		t.Fatalf("the second call carries %d commits, want the %d queued", n, callers)
	}
	g.gate <- struct{}{} // the second call answers its callers, who commit again
	third := nextCall()
	close(g.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return third
}
