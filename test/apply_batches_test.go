package test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// Concurrent commits reach the state machine in batches (Raft hands it
// the entries one append made applicable, and each batch is one Pebble
// commit; a commit of more than 16 writes gets a Pebble batch of its own),
// and every acknowledged commit is in the state afterwards, with its own
// value. The metrics count the batches and their entries.
func TestConcurrentCommitsApplyInBatchesAndEachIsKept(t *testing.T) {
	d := daemontest.Start(t, func(c *daemon.Config) {
		c.MetricsAddr = "127.0.0.1:0"
		c.CheckpointInterval = 0
	})
	daemontest.WaitLeader(t, d)
	batches0 := counter(t, d.MetricsAddr(), "stated_apply_batches_total")
	entries0 := counter(t, d.MetricsAddr(), "stated_applied_entries_total")
	if batches0 == 0 || entries0 < batches0 {
		t.Fatalf("a new leader reports %v batches of %v entries: want at least the bootstrap's entries, in at least one batch", batches0, entries0)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+d.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	defer conn.Close()
	st := statedv1.NewStateClient(conn)

	const writers, each = 64, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				muts := []*statedv1.Mutation{{
					Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "batches",
					Key: fmt.Appendf(nil, "w%02d/%02d", w, i), Value: fmt.Appendf(nil, "v%d.%d", w, i),
				}}
				if w%4 == 0 {
					// More writes than a commit may carry to share the
					// Pebble batch of the entries around it.
					for j := range 20 {
						muts = append(muts, &statedv1.Mutation{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "batches",
							Key: fmt.Appendf(nil, "w%02d/%02d/%02d", w, i, j), Value: []byte("x")})
					}
				}
				_, err := st.Commit(ctx, &statedv1.CommitRequest{Mutations: muts})
				if err != nil {
					errs <- fmt.Errorf("writer %d, commit %d: %w", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	batches := counter(t, d.MetricsAddr(), "stated_apply_batches_total") - batches0
	entries := counter(t, d.MetricsAddr(), "stated_applied_entries_total") - entries0
	if entries < writers*each {
		t.Fatalf("stated_applied_entries_total grew by %v for %d acknowledged commits", entries, writers*each)
	}
	if batches >= entries {
		t.Fatalf("%d writers' %v entries were applied in %v batches: want some batches of more than one entry", writers, entries, batches)
	}
	t.Logf("%v entries in %v batches (%.1f per batch)", entries, batches, entries/batches)

	for w := range writers {
		for i := range each {
			resp, err := st.Get(ctx, &statedv1.GetRequest{Namespace: "batches", Key: fmt.Appendf(nil, "w%02d/%02d", w, i), Kind: statedv1.Kind_KIND_VALUE})
			must(t, err)
			if want := fmt.Sprintf("v%d.%d", w, i); !resp.GetFound() || string(resp.GetValue()) != want {
				t.Fatalf("w%02d/%02d after its commit was acknowledged: found %v, value %q, want %q", w, i, resp.GetFound(), resp.GetValue(), want)
			}
			if w%4 != 0 {
				continue
			}
			for j := range 20 {
				resp, err := st.Get(ctx, &statedv1.GetRequest{Namespace: "batches", Key: fmt.Appendf(nil, "w%02d/%02d/%02d", w, i, j), Kind: statedv1.Kind_KIND_VALUE})
				must(t, err)
				if !resp.GetFound() {
					t.Fatalf("w%02d/%02d/%02d after its commit of 21 writes was acknowledged: not found", w, i, j)
				}
			}
		}
	}
}
