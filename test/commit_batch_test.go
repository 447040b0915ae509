package test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

func putRequest(key string) *statedv1.CommitRequest {
	return &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{
		Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "batch", Key: []byte(key), Value: []byte("v-" + key)}}}
}

// batchStatus is a batch result's error as a status (nil on success).
func batchStatus(r *statedv1.CommitBatchResult) *status.Status {
	e := r.GetError()
	if e == nil {
		return nil
	}
	return status.New(codes.Code(e.GetCode()), e.GetMessage())
}

func TestCommitBatchAnswersEachCommitAsCommitWould(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	raw := rawClient(t, d.SocketPath())
	ctx, cancel := context.WithTimeout(context.Background(), sdkTimeout)
	defer cancel()
	sess, err := raw.OpenSession(ctx, &statedv1.OpenSessionRequest{ClientId: "batcher"})
	must(t, err)
	inSession := func(r *statedv1.CommitRequest, session uint64, lane uint32) *statedv1.CommitRequest {
		r.ClientId, r.SessionId, r.Lane, r.Sequence = "batcher", session, lane, 1
		return r
	}
	bad := putRequest("bad")
	bad.Mutations[0].Namespace = ""
	resp, err := raw.CommitBatch(ctx, &statedv1.CommitBatchRequest{Commits: []*statedv1.CommitRequest{
		inSession(putRequest("a"), sess.GetSessionId(), 0),
		bad,
		inSession(putRequest("b"), sess.GetSessionId(), 1),
		inSession(putRequest("c"), sess.GetSessionId()+1000, 0), // no such session
	}})
	must(t, err)
	res := resp.GetResults()
	if len(res) != 4 {
		t.Fatalf("%d results for 4 commits", len(res))
	}
	if res[0].GetError() != nil || res[2].GetError() != nil {
		t.Fatalf("the good commits failed: %v; %v", res[0].GetError(), res[2].GetError())
	}
	if a, b := res[0].GetResponse().GetIndex(), res[2].GetResponse().GetIndex(); a == 0 || a != b {
		t.Errorf("indexes %d and %d: the applied commits of a batch share its Raft entry's index", a, b)
	}
	if st := batchStatus(res[1]); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "mutations[0].namespace") {
		t.Errorf("the bad commit: %v, want InvalidArgument naming mutations[0].namespace", st)
	}
	if e := res[3].GetError(); codes.Code(e.GetCode()) != codes.FailedPrecondition || len(e.GetDetails()) != 1 {
		t.Errorf("the commit in no session: %v, want FailedPrecondition with a SessionRefused detail", e)
	} else if sr := new(statedv1.SessionRefused); e.GetDetails()[0].UnmarshalTo(sr) != nil || sr.GetSessionId() != sess.GetSessionId()+1000 {
		t.Errorf("the commit in no session's detail: %v, want SessionRefused naming its session", e.GetDetails()[0])
	}
	for key, want := range map[string]bool{"a": true, "b": true, "bad": false, "c": false} {
		got, err := raw.Get(ctx, &statedv1.GetRequest{Namespace: "batch", Key: []byte(key), Kind: statedv1.Kind_KIND_VALUE,
			Read: &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_LINEARIZABLE}})
		must(t, err)
		if got.GetFound() != want {
			t.Errorf("key %q found=%v, want %v", key, got.GetFound(), want)
		}
	}

	// A retry of an applied commit in a batch is answered as a retried
	// Commit is: its original index, marked duplicate.
	resp, err = raw.CommitBatch(ctx, &statedv1.CommitBatchRequest{Commits: []*statedv1.CommitRequest{
		inSession(putRequest("a"), sess.GetSessionId(), 0), putRequest("d")}})
	must(t, err)
	if r := resp.GetResults()[0].GetResponse(); !r.GetDuplicate() || r.GetIndex() != res[0].GetResponse().GetIndex() {
		t.Errorf("retried commit: %v, want duplicate of index %d", r, res[0].GetResponse().GetIndex())
	}

	// The commits of a batch apply in the request's order: sequences 1
	// then 2 of one lane both apply; 2 then 1 of another, and the 1 is
	// stale.
	seq := func(key string, lane uint32, n uint64) *statedv1.CommitRequest {
		r := inSession(putRequest(key), sess.GetSessionId(), lane)
		r.Sequence = n
		return r
	}
	resp, err = raw.CommitBatch(ctx, &statedv1.CommitBatchRequest{Commits: []*statedv1.CommitRequest{
		seq("o1", 2, 1), seq("o2", 2, 2), seq("o3", 3, 2), seq("o4", 3, 1)}})
	must(t, err)
	for i, want := range []codes.Code{codes.OK, codes.OK, codes.OK, codes.FailedPrecondition} {
		if got := batchStatus(resp.GetResults()[i]).Code(); got != want {
			t.Errorf("ordered commit %d: %v, want %v", i, batchStatus(resp.GetResults()[i]), want)
		}
	}

	tooMany := &statedv1.CommitBatchRequest{}
	for i := range 1025 {
		tooMany.Commits = append(tooMany.Commits, putRequest(fmt.Sprint("many", i)))
	}
	if _, err := raw.CommitBatch(ctx, tooMany); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "commits: 1025 commits; at most 1024") {
		t.Errorf("1025 commits: %v, want InvalidArgument naming commits", err)
	}
	if got, err := raw.Get(ctx, &statedv1.GetRequest{Namespace: "batch", Key: []byte("many0"), Kind: statedv1.Kind_KIND_VALUE}); err != nil || got.GetFound() {
		t.Errorf("the refused batch applied its first commit (%v, %v)", got, err)
	}
}

func TestCoalescedCommitsThroughAFollowerAreForwardedAndEachApplied(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 3)
	var follower *daemon.Daemon
	for _, d := range nodes {
		if !d.Store().IsLeader() {
			follower = d
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), sdkTimeout)
	defer cancel()

	// A batch sent to the follower straight: forwarded whole.
	raw := rawClient(t, follower.SocketPath())
	// Puts of fixed values: sent again while Unavailable (an election,
	// which a lease missed under -race can cause).
	var resp *statedv1.CommitBatchResponse
	must(t, daemontest.WhileUnavailable(ctx, func() (err error) {
		resp, err = raw.CommitBatch(ctx, &statedv1.CommitBatchRequest{Commits: []*statedv1.CommitRequest{putRequest("f1"), putRequest("f2")}})
		return err
	}))
	for i, r := range resp.GetResults() {
		if r.GetError() != nil || r.GetResponse().GetIndex() == 0 {
			t.Errorf("forwarded commit %d: %v", i, r)
		}
	}

	// The SDK on the follower, with many goroutines: their commits queue
	// behind one another's calls and go in batches.
	c, err := stated.Dial(ctx, follower.SocketPath(), stated.WithBlock())
	must(t, err)
	defer c.Close()
	counter := stated.NewCounter(c, "batch-counts")
	const workers, each = 16, 25
	var wg sync.WaitGroup
	var mu sync.Mutex
	indexes := map[uint64]int{}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				res, err := c.Txn().CounterAdd("batch-counts", []byte("n"), 1).Put("batch", []byte(fmt.Sprintf("w%d/%d", w, i)), []byte("v")).Commit(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				if res.Index == 0 {
					t.Errorf("commit w%d/%d answered with index 0", w, i)
				}
				mu.Lock()
				indexes[res.Index]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	n, err := counter.Get(ctx, "n", stated.WithConsistency(stated.ConsistencyLinearizable))
	must(t, err)
	if n != workers*each {
		t.Fatalf("counter = %d after %d commits of +1", n, workers*each)
	}
	t.Logf("%d commits answered in %d Raft entries", workers*each, len(indexes))
}
