package daemon_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon/daemontest"
	stated "github.com/statedhq/stated/sdk/go"
)

// TestAStoppingLeaderHandsLeadershipOver: a leader that stops (Close, what
// SIGTERM runs) hands leadership to another voter before it goes, so that
// when Close returns another node leads already, without the election
// timeout a crash costs. Commits in flight through a follower across the
// handover are each applied once: the counter equals the acknowledged
// commits.
func TestAStoppingLeaderHandsLeadershipOver(t *testing.T) {
	nodes := daemontest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The client goes through node2, a follower unless an election (a
	// lease missed under -race on a loaded machine) chose it since.
	c, err := stated.Dial(ctx, nodes[1].SocketPath(), stated.WithClientID("handover"), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Workers stop between commits, never cancelling one: every commit
	// sent is acknowledged or fails the test, so the counter must equal
	// the acknowledged commits.
	var stopped atomic.Bool
	var acked atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for !stopped.Load() {
				if _, err := c.Txn().CounterAdd("n", []byte("k"), 1).Commit(ctx); err != nil {
					t.Errorf("commit: %v", err)
					return
				}
				acked.Add(1)
			}
		})
	}
	for acked.Load() < 50 {
		if ctx.Err() != nil {
			t.Fatal("no commits before the stop")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The leader now, whichever node it is.
	lead, others := leaderOf(t, nodes)
	term := others[0].Store().Term()
	if err := lead.Close(); err != nil {
		t.Fatal(err)
	}
	var leading []string
	for _, d := range others {
		if d.Store().IsLeader() {
			leading = append(leading, d.Store().NodeID())
		}
	}
	if len(leading) != 1 || others[0].Store().Term() <= term {
		t.Fatalf("when the leader's Close returned: %v lead, term %d (was %d); want one other node leading in a later term", leading, others[0].Store().Term(), term)
	}
	for before := acked.Load(); acked.Load() < before+50; time.Sleep(5 * time.Millisecond) {
		if ctx.Err() != nil {
			t.Fatalf("commits did not go on after the handover: %d acknowledged", acked.Load())
		}
	}
	stopped.Store(true)
	wg.Wait()
	got, err := c.GetCounter(ctx, "n", []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	if got != acked.Load() {
		t.Fatalf("counter %d after %d acknowledged commits across the handover", got, acked.Load())
	}
}
