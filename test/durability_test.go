package test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestSIGKILLLosesNoAcknowledgedCommitAndAppliesNoneTwice runs `stated run`,
// has workers commit counter increments until some are acknowledged, kills
// the process with SIGKILL mid-stream, restarts it on the same data dir, and
// checks every worker's state. Each commit adds 1 to the worker's counter
// and writes its sequence number to the worker's "last" key, atomically, so
// after every restart the counter must equal "last" (nothing applied twice
// or in part) and be at least the highest acknowledged sequence (nothing
// acknowledged lost). The one commit per worker in flight at the kill may
// or may not have landed.
func TestSIGKILLLosesNoAcknowledgedCommitAndAppliesNoneTwice(t *testing.T) {
	t.Parallel()
	killMidLoadAndCheck(t, newNode(t))
}

// killMidLoadAndCheck is the body of
// TestSIGKILLLosesNoAcknowledgedCommitAndAppliesNoneTwice on node n: three
// rounds of load each ended by SIGKILL, the state checked after every
// restart.
func killMidLoadAndCheck(t *testing.T, n *node) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const workers, rounds = 8, 3
	acked := make([]int64, workers) // highest acknowledged sequence per worker
	for round := 0; round <= rounds; round++ {
		n.start(ctx)
		client, closeConn := n.client()
		last := checkDurable(ctx, t, client, acked)
		if round == rounds {
			closeConn()
			break
		}
		var (
			wg    sync.WaitGroup
			total atomic.Int64
			stop  = make(chan struct{})
		)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int, seq int64) {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					seq++
					_, err := client.Commit(ctx, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{
						{Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, Namespace: "dur", Key: []byte(fmt.Sprint("count/", w)), Delta: 1},
						{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "dur", Key: []byte(fmt.Sprint("last/", w)), Value: []byte(strconv.FormatInt(seq, 10))},
					}})
					if err != nil {
						return // the process died under us: outcome unknown
					}
					acked[w] = seq
					total.Add(1)
				}
			}(w, last[w])
		}
		// Kill once a few hundred commits were acknowledged in this round.
		for total.Load() < 300 {
			if ctx.Err() != nil {
				t.Fatal("too few commits acknowledged before the deadline")
			}
			time.Sleep(5 * time.Millisecond)
		}
		n.kill()
		close(stop)
		wg.Wait()
		closeConn()
		t.Logf("round %d: SIGKILL after %d acknowledged commits", round, total.Load())
	}
}

// checkDurable reads every worker's counter and last sequence, checks them
// against what was acknowledged, and returns the last sequences.
func checkDurable(ctx context.Context, t *testing.T, client statedv1.StateClient, acked []int64) []int64 {
	t.Helper()
	last := make([]int64, len(acked))
	for w := range acked {
		c, err := client.Get(ctx, &statedv1.GetRequest{Namespace: "dur", Key: []byte(fmt.Sprint("count/", w)), Kind: statedv1.Kind_KIND_COUNTER})
		if err != nil {
			t.Fatal(err)
		}
		l, err := client.Get(ctx, &statedv1.GetRequest{Namespace: "dur", Key: []byte(fmt.Sprint("last/", w)), Kind: statedv1.Kind_KIND_VALUE})
		if err != nil {
			t.Fatal(err)
		}
		if l.Found {
			if last[w], err = strconv.ParseInt(string(l.Value), 10, 64); err != nil {
				t.Fatal(err)
			}
		}
		switch {
		case c.Counter != last[w]:
			t.Fatalf("worker %d: counter %d but last sequence %d: a commit was applied twice or in part", w, c.Counter, last[w])
		case c.Counter < acked[w]:
			t.Fatalf("worker %d: counter %d < %d acknowledged commits: acknowledged commits were lost", w, c.Counter, acked[w])
		case c.Counter > acked[w]+1:
			t.Fatalf("worker %d: counter %d > %d acknowledged + 1 in flight", w, c.Counter, acked[w])
		}
	}
	return last
}
