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
	cfg := daemontest.Config(t, "node2")
	opts(&cfg)
	cfg.Join = []string{n1.TCPAddr()}
	n2, err := daemon.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if n2 != nil {
			n2.Close()
		}
	})
	// A restart keeps its addresses: the cluster knows it by them.
	cfg.RaftAddr, cfg.GRPCAddr = n2.Store().RaftAddr(), n2.TCPAddr()

	conn := dial(t, "unix://"+n1.SocketPath())
	state, cps := statedv1.NewStateClient(conn), statedv1.NewCheckpointsClient(conn)
	pad(ctx, t, state, 200)
	trigger := kindTrigger(ctx, t, cps)
	trigger(false, "the first checkpoint")
	pad(ctx, t, state, 1)
	trigger(true, "right after a table checkpoint")

	// node1 loses its quorum (node2 stops) and steps down, then leads
	// again once node2 is back; when node2 wins the election instead,
	// round again.
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("30 s and still not %s", what)
			}
		}
	}
	for round := 1; ; round++ {
		if round > 10 {
			t.Fatal("node1 never led again in 10 rounds")
		}
		if err := n2.Close(); err != nil {
			t.Fatal(err)
		}
		n2 = nil
		waitFor("node1 stepped down", func() bool { return !n1.Store().IsLeader() })
		if n2, err = daemon.Start(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		waitFor("a leader", func() bool { return n1.Store().IsLeader() || n2.Store().IsLeader() })
		if n1.Store().IsLeader() {
			t.Logf("node1 leads again after %d rounds", round)
			break
		}
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
