package stated

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/internal/commithook"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// heldCommits holds the first plain Commit call (or, through commithook,
// the first request of one commit on a CommitStream) until open is
// closed, so that the commits sent meanwhile queue in the coalescer and
// go together in one request or CommitBatch call afterwards.
type heldCommits struct {
	mu      sync.Mutex
	armed   bool
	entered chan struct{}
	open    chan struct{}
	batches int
}

func newHeldCommits() *heldCommits {
	return &heldCommits{entered: make(chan struct{}, 1), open: make(chan struct{})}
}

func (g *heldCommits) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	g.mu.Lock()
	hold := g.armed && method == statedv1.State_Commit_FullMethodName
	if hold {
		g.armed = false
	}
	if method == statedv1.State_CommitBatch_FullMethodName {
		g.batches++
	}
	g.mu.Unlock()
	if hold {
		g.entered <- struct{}{}
		<-g.open
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (g *heldCommits) arm() {
	g.mu.Lock()
	g.armed = true
	g.entered = make(chan struct{}, 1)
	g.open = make(chan struct{})
	g.mu.Unlock()
}

func waitQueued(t *testing.T, q *coalescer, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		q.mu.Lock()
		got := len(q.pending)
		q.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d commits queued after 10s, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestACoalescedBatchKeepsEachCommitsOutcome: one coalesced
// CommitBatch (real daemon) carrying good commits and commits refused at
// apply time (counter overflow, offset moving back) and at validation:
// each caller gets its own outcome and a refused commit applies nothing.
func TestACoalescedBatchKeepsEachCommitsOutcome(t *testing.T) {
	d := daemontest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g := newHeldCommits()
	c, err := Dial(ctx, d.SocketPath(), WithBlock(), WithDialOptions(grpc.WithChainUnaryInterceptor(g.unary), grpc.WithChainStreamInterceptor(commithook.Stream(g.unary))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Setup: counter near the top, offset at 100.
	if _, err := c.Txn().CounterAdd("ns", []byte("big"), math.MaxInt64-1).CommitOffset("grp", "tp", 0, 100).Commit(ctx); err != nil {
		t.Fatal(err)
	}

	g.arm()
	type outcome struct {
		name string
		res  CommitResult
		err  error
	}
	var wg sync.WaitGroup
	out := make(chan outcome, 16)
	run := func(name string, build func(*Txn)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			txn := c.Txn()
			build(txn)
			res, err := txn.Commit(ctx)
			out <- outcome{name, res, err}
		}()
	}
	run("blocker", func(t *Txn) { t.Put("ns", []byte("blocker"), []byte("v")) })
	<-g.entered
	run("good1", func(t *Txn) { t.Put("ns", []byte("good1"), []byte("v")).CounterAdd("ns", []byte("big"), 1) })
	waitQueued(t, c.batch, 1)
	run("overflow", func(t *Txn) { t.Put("ns", []byte("overflow"), []byte("v")).CounterAdd("ns", []byte("big"), 1) })
	waitQueued(t, c.batch, 2)
	run("badns", func(t *Txn) { t.Put("ns", []byte("badns"), []byte("v")).Put("", []byte("x"), []byte("v")) })
	waitQueued(t, c.batch, 3)
	run("offsetback", func(t *Txn) { t.Put("ns", []byte("offsetback"), []byte("v")).CommitOffset("grp", "tp", 0, 50) })
	waitQueued(t, c.batch, 4)
	run("good2", func(t *Txn) { t.Put("ns", []byte("good2"), []byte("v")).CommitOffset("grp", "tp", 0, 200) })
	waitQueued(t, c.batch, 5)
	close(g.open)
	wg.Wait()
	close(out)
	got := map[string]outcome{}
	for o := range out {
		got[o.name] = o
		t.Logf("%s: index=%d dup=%v err=%v", o.name, o.res.Index, o.res.Duplicate, o.err)
	}
	for _, name := range []string{"blocker", "good1", "good2"} {
		if got[name].err != nil {
			t.Errorf("%s failed: %v", name, got[name].err)
		}
	}
	if got["good1"].res.Index != got["good2"].res.Index {
		t.Errorf("good1 and good2 not in one batch (indexes %d, %d)", got["good1"].res.Index, got["good2"].res.Index)
	}
	for _, name := range []string{"overflow", "badns", "offsetback"} {
		if got[name].err == nil {
			t.Errorf("%s succeeded, want refused", name)
		}
	}
	if !errors.Is(got["badns"].err, ErrInvalidArgument) {
		t.Errorf("badns: %v, want ErrInvalidArgument", got["badns"].err)
	}
	for key, want := range map[string]bool{"blocker": true, "good1": true, "good2": true, "overflow": false, "badns": false, "offsetback": false} {
		_, found, err := c.Get(ctx, "ns", []byte(key), WithConsistency(ConsistencyLinearizable))
		if err != nil {
			t.Fatal(err)
		}
		if found != want {
			t.Errorf("key %q stored=%v, want %v", key, found, want)
		}
	}
	n, err := NewCounter(c, "ns").Get(ctx, "big", WithConsistency(ConsistencyLinearizable))
	if err != nil || n != math.MaxInt64 {
		t.Errorf("counter = %d, %v; want MaxInt64", n, err)
	}
	offs, err := c.GetOffsets(ctx, "grp", WithConsistency(ConsistencyLinearizable))
	if err != nil || len(offs) != 1 || offs[0].Offset != 200 {
		t.Errorf("offsets = %v, %v; want 200", offs, err)
	}
	g.mu.Lock()
	t.Logf("CommitBatch calls: %d", g.batches)
	g.mu.Unlock()
}

// TestCloseUnderLoadEndsEveryCommitWithErrClosed: Close while many
// commits are in flight (coalesced): every Commit returns within bounds,
// each with ErrClosed, whose outcome is unknown (Commit's documentation):
// some of them applied, which the log reports.
func TestCloseUnderLoadEndsEveryCommitWithErrClosed(t *testing.T) {
	d := daemontest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Dial(ctx, d.SocketPath(), WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	reader, err := Dial(ctx, d.SocketPath(), WithBlock(), WithLazySession())
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	type rec struct {
		key string
		err error
	}
	var mu sync.Mutex
	var recs []rec
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				key := fmt.Sprintf("w%d/%d", w, i)
				_, err := c.Txn().Put("close", []byte(key), []byte("v")).Commit(ctx)
				mu.Lock()
				recs = append(recs, rec{key, err})
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	c.Close()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("commits still running 10s after Close")
	}
	kinds := map[string]int{}
	appliedErr := map[string]int{}
	for _, r := range recs {
		if r.err == nil {
			continue
		}
		kind := "other"
		switch {
		case errors.Is(r.err, ErrClosed):
			kind = "ErrClosed"
		case errors.Is(r.err, context.Canceled):
			kind = "Canceled"
		case errors.Is(r.err, ErrUnavailable):
			kind = "Unavailable"
		}
		kinds[kind]++
		if kind != "ErrClosed" {
			t.Errorf("commit %s after Close: %v, want ErrClosed", r.key, r.err)
		}
		_, found, err := reader.Get(ctx, "close", []byte(r.key), WithConsistency(ConsistencyLinearizable))
		if err != nil {
			t.Fatal(err)
		}
		if found {
			appliedErr[kind]++
		}
		if kind == "other" {
			t.Logf("other error: %v", r.err)
		}
	}
	t.Logf("%d commits; errors by kind %v; of them applied %v", len(recs), kinds, appliedErr)
}

// TestCoalescedCommitsTooLargeTogetherEachApplyOnce: two commits that
// each fit the message size but not together: coalesced, the batch is too
// large; each must still apply (sent again alone), once.
func TestCoalescedCommitsTooLargeTogetherEachApplyOnce(t *testing.T) {
	d := daemontest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g := newHeldCommits()
	c, err := Dial(ctx, d.SocketPath(), WithBlock(), WithMaxMessageSize(1<<20), WithDialOptions(grpc.WithChainUnaryInterceptor(g.unary), grpc.WithChainStreamInterceptor(commithook.Stream(g.unary))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := make([]byte, 600<<10)
	g.arm()
	errc := make(chan error, 3)
	go func() { _, err := c.Txn().Put("big", []byte("blocker"), []byte("v")).Commit(ctx); errc <- err }()
	<-g.entered
	go func() {
		_, err := c.Txn().Put("big", []byte("a"), big).CounterAdd("big", []byte("n"), 1).Commit(ctx)
		errc <- err
	}()
	waitQueued(t, c.batch, 1)
	go func() {
		_, err := c.Txn().Put("big", []byte("b"), big).CounterAdd("big", []byte("n"), 1).Commit(ctx)
		errc <- err
	}()
	waitQueued(t, c.batch, 2)
	close(g.open)
	for range 3 {
		if err := <-errc; err != nil {
			t.Errorf("commit: %v", err)
		}
	}
	n, err := c.GetCounter(ctx, "big", []byte("n"), WithConsistency(ConsistencyLinearizable))
	if err != nil || n != 2 {
		t.Errorf("counter = %d, %v; want 2", n, err)
	}
}
