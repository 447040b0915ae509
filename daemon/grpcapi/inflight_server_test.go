package grpcapi_test

import (
	"context"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon/grpcapi"
	"github.com/statedhq/stated/internal/reqsize"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/raftstore/command"
)

// heldStore is a real store whose commits wait at held until the test
// lets them go, so that a test can keep commits in flight.
type heldStore struct {
	*raftstore.Store
	held    chan struct{}
	arrived *atomic.Int64 // calls that reached the store
}

func (s heldStore) CommitOutcome(ctx context.Context, c *command.Commit) (raftstore.CommitOutcome, error) {
	s.arrived.Add(1)
	<-s.held
	return s.Store.CommitOutcome(ctx, c)
}

func (s heldStore) CommitBatch(ctx context.Context, cs []*command.Commit) ([]raftstore.CommitOutcome, []error, error) {
	s.arrived.Add(1)
	<-s.held
	return s.Store.CommitBatch(ctx, cs)
}

// serveHeld serves a heldStore over a real single-node store with a
// gRPC server as the daemon installs it (the handler that records each
// request's size, messages up to 64 MiB), and returns the store, the
// State service and a client of it.
func serveHeld(t *testing.T, ctx context.Context, opts ...grpcapi.Option) (heldStore, *grpcapi.Server, statedv1.StateClient) {
	t.Helper()
	cfg := raftstore.DefaultConfig()
	cfg.NodeID, cfg.Dir, cfg.RaftBind = "n1", t.TempDir(), "127.0.0.1:0"
	rs, err := raftstore.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	if err := rs.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	store := heldStore{Store: rs, held: make(chan struct{}), arrived: new(atomic.Int64)}
	api := grpcapi.New(store, opts...)
	srv := grpc.NewServer(grpc.StatsHandler(reqsize.Handler()), grpc.MaxRecvMsgSize(64<<20))
	statedv1.RegisterStateServer(srv, api)
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return store, api, dial(t, "unix://"+sock)
}

// TestLargeCommitsBeyondTheBudgetWaitWhileSmallOnesGoOn: through the
// gRPC server, as the daemon installs it (the budget and the handler that
// records each request's size), a 2 MiB Commit and a 2 MiB CommitBatch
// held in flight fill a 5 MiB budget: a third large request waits and
// fails at its deadline without reaching the store, a small commit
// reaches it meanwhile, and once the held ones go on every commit
// applies. (The message naming the flag, which the server's answer
// carries, is inflight_test.go's: here the client's own deadline ends the
// call first.)
func TestLargeCommitsBeyondTheBudgetWaitWhileSmallOnesGoOn(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, _, st := serveHeld(t, ctx, grpcapi.WithLargeRequestBudget(5<<20))
	bigCommit := func(key string) *statedv1.CommitRequest {
		return &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_PUT,
			Namespace: "big", Key: []byte(key), Value: make([]byte, 2<<20)}}}
	}

	done := make(chan error, 3)
	go func() { _, err := st.Commit(ctx, bigCommit("a")); done <- err }()
	go func() {
		resp, err := st.CommitBatch(ctx, &statedv1.CommitBatchRequest{Commits: []*statedv1.CommitRequest{bigCommit("b")}})
		if e := resp.GetResults(); err == nil && e[0].GetError() != nil {
			err = status.Error(codes.Code(e[0].GetError().GetCode()), e[0].GetError().GetMessage())
		}
		done <- err
	}()
	waitArrived := func(n int64, what string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); store.arrived.Load() != n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not reach the store (%d calls arrived)", what, store.arrived.Load())
			}
		}
	}
	waitArrived(2, "the two large commits") // both held in the store, 4 MiB of the budget

	wctx, wcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer wcancel()
	_, err := st.Commit(wctx, bigCommit("c"))
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a third 2 MiB commit beside two held under a 5 MiB budget: %v, want DeadlineExceeded", err)
	}
	if n := store.arrived.Load(); n != 2 {
		t.Fatalf("%d commit calls reached the store, want the 2 held ones: the third was not held back by the budget", n)
	}
	go func() {
		_, err := st.Commit(ctx, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_PUT,
			Namespace: "small", Key: []byte("k"), Value: []byte("v")}}})
		done <- err
	}()
	// The small commit passes the budget and reaches the store, where
	// it is held too: the three go on together once let go.
	waitArrived(3, "the small commit, while the budget was full,")
	close(store.held)
	for range 3 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Commit(ctx, bigCommit("c")); err != nil {
		t.Fatalf("a large commit once the budget is free again: %v", err)
	}
	for _, key := range []string{"a", "b", "c"} {
		if got := get(t, st, "big", key); len(got.GetValue()) != 2<<20 {
			t.Fatalf("big/%s: %d bytes, want %d", key, len(got.GetValue()), 2<<20)
		}
	}
}
