package daemon_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestANodeThatStopsLeadingReportsNoChangelogAfterAFailedTableCheckpoint:
// a node that stops leading reports no changelog base and 0 changelog
// bytes within a second (docs/METRICS.md,
// stated_checkpoint_changelog_bytes: "so the max over the nodes is the
// leader's"), also when the last checkpoint it led was a table
// checkpoint that failed, which left it no chain to drop but its figures
// of the chain before.
func TestANodeThatStopsLeadingReportsNoChangelogAfterAFailedTableCheckpoint(t *testing.T) {
	bucket := fileBucket(t)
	opts := func(c *daemon.Config) {
		c.CheckpointURL, c.CheckpointInterval, c.CheckpointRetain = bucket, 0, 10
		c.CheckpointMaterializeInterval = time.Hour
	}
	// Alone, node1 leads throughout the checkpoints.
	n1 := daemontest.Start(t, opts)
	var fail atomic.Bool
	daemon.SetCheckpointCutHook(n1, func(epoch uint64, dir string) string {
		if fail.Load() {
			return filepath.Join(t.TempDir(), "not-a-checkpoint")
		}
		return dir
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := dial(t, "unix://"+n1.SocketPath())
	state, cps := statedv1.NewStateClient(conn), statedv1.NewCheckpointsClient(conn)
	pad(ctx, t, state, 200)
	trigger := kindTrigger(ctx, t, cps)
	base := trigger(false, "the first checkpoint")
	pad(ctx, t, state, 100)
	trigger(true, "a segment lighter than the tables")
	if st := n1.CheckpointStatus(); st.ChangelogBaseEpoch != base.GetEpoch() || st.ChangelogBytes == 0 {
		t.Fatalf("status after a changelog checkpoint on %d: base %d, %d bytes", base.GetEpoch(), st.ChangelogBaseEpoch, st.ChangelogBytes)
	}
	// The segments would now outweigh the tables: the next checkpoint
	// uploads the tables, and fails.
	pad(ctx, t, state, 150)
	fail.Store(true)
	if _, err := cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true}); err == nil {
		t.Fatal("a table checkpoint whose local cut does not read completed")
	}

	// node1 stops leading for good: node2 joins, then stops, and node1
	// alone is no majority of two.
	n2 := startNode2(ctx, t, n1, opts)
	if err := n2.Close(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); n1.Store().IsLeader(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("30 s after node2 stopped node1 still leads")
		}
	}
	time.Sleep(2 * time.Second)
	if st := n1.CheckpointStatus(); st.ChangelogBaseEpoch != 0 || st.ChangelogBytes != 0 {
		t.Fatalf("node1, 2 s after it stopped leading: changelog base %d, %d changelog bytes; want 0 and 0, the next leader's checkpoints being the newest",
			st.ChangelogBaseEpoch, st.ChangelogBytes)
	}
}
