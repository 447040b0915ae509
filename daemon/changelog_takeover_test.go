package daemon_test

import (
	"context"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestALeaderThatTookOverAgainFirstUploadsItsTables: a node that stops
// leading and later leads again starts over with a table checkpoint
// (docs/OPERATIONS.md, "Changelog checkpoints": "the leader has not
// completed a table checkpoint itself since it started or took over"),
// rather than going on with the changelog chain it left.
func TestALeaderThatTookOverAgainFirstUploadsItsTables(t *testing.T) {
	bucket := fileBucket(t)
	opts := func(c *daemon.Config) {
		c.CheckpointURL, c.CheckpointInterval, c.CheckpointRetain = bucket, 0, 10
		c.CheckpointMaterializeInterval = time.Hour
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	n1 := daemontest.Start(t, opts)
	n2 := startNode2(ctx, t, n1, opts)

	conn := dial(t, "unix://"+n1.SocketPath())
	state, cps := statedv1.NewStateClient(conn), statedv1.NewCheckpointsClient(conn)
	pad(ctx, t, state, 200)
	first := kindTriggerAcrossTerms(ctx, t, state, cps, []*daemon.Daemon{n1, n2})
	first(false, "the first checkpoint")
	pad(ctx, t, state, 1)
	first(true, "right after a table checkpoint")
	// node1 leads the hops below (an election under load may have chosen
	// node2 since: it hands leadership back).
	for !n1.Store().IsLeader() {
		if n2.Store().IsLeader() {
			n2.Store().TransferLeadership(ctx)
		}
		if ctx.Err() != nil {
			t.Fatal("node1 does not lead")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// node1 stops leading and leads again, in a later term: it hands
	// leadership to node2, which hands it back.
	term := n1.Store().Term()
	for _, hop := range [][2]*daemon.Daemon{{n1, n2}, {n2, n1}} {
		from, to := hop[0].Store(), hop[1].Store()
		if _, err := from.TransferLeadership(ctx); err != nil {
			t.Fatalf("%s hands leadership over: %v", from.NodeID(), err)
		}
		for deadline := time.Now().Add(30 * time.Second); !to.IsLeader(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("30 s and %s does not lead", to.NodeID())
			}
		}
	}
	if got := n1.Store().Term(); got <= term+1 {
		t.Fatalf("node1 leads in term %d; want two terms after %d", got, term)
	}
	before := n1.CheckpointStatus()
	pad(ctx, t, state, 1)
	resp, err := cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	s := resp.GetSummary()
	after := n1.CheckpointStatus()
	t.Logf("checkpoint %d after taking over again: changelog %t on the tables of %d, %d segments; segments read from the log %d -> %d",
		s.GetEpoch(), s.GetChangelog(), s.GetChangelogBaseEpoch(), s.GetChangelogSegments(), before.ChangelogSegmentsFromLog, after.ChangelogSegmentsFromLog)
	if s.GetChangelog() {
		t.Fatalf("node1's first checkpoint after it took over again is a changelog checkpoint on the tables of checkpoint %d (%d segments), the chain it led before; want its tables",
			s.GetChangelogBaseEpoch(), s.GetChangelogSegments())
	}
	trigger := kindTrigger(ctx, t, cps)
	// The next one is a changelog checkpoint on those tables, its
	// segment made of the entries captured since their barrier, and it
	// restores to its cut.
	pad(ctx, t, state, 1)
	s = trigger(true, "right after a table checkpoint")
	if s.GetChangelogBaseEpoch() != resp.GetSummary().GetEpoch() || s.GetChangelogSegments() != 1 {
		t.Fatalf("checkpoint %d: on the tables of %d with %d segments; want checkpoint %d's and 1", s.GetEpoch(), s.GetChangelogBaseEpoch(), s.GetChangelogSegments(), resp.GetSummary().GetEpoch())
	}
	if got := n1.CheckpointStatus().ChangelogSegmentsFromLog; got != before.ChangelogSegmentsFromLog {
		t.Fatalf("segments read from the log: %d, then %d; want the new segment sent from memory", before.ChangelogSegmentsFromLog, got)
	}
	up := openBucket(t, bucket)
	m, err := up.Get(ctx, s.GetEpoch())
	if err != nil {
		t.Fatal(err)
	}
	if f := restoreState(t, up, m); f.AppliedIndex() != m.RaftIndex {
		t.Fatalf("checkpoint %d restores at index %d, its manifest says %d", m.Epoch, f.AppliedIndex(), m.RaftIndex)
	}
}
