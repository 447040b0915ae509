package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestCheckpointHelpSaysTheClusterRecordedTheNewestCheckpoint: the epoch
// and completion time come from the replicated checkpoint state
// (docs/METRICS.md: "every node reports it"), so their help must not
// claim a checkpoint this node completed: a follower completes none.
func TestCheckpointHelpSaysTheClusterRecordedTheNewestCheckpoint(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewCheckpoints(reg, func() CheckpointStats {
		return CheckpointStats{Enabled: true, LastEpoch: 7, LastCompletedAt: time.Unix(1_700_000_000, 0)}
	})
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, f := range fams {
		switch f.GetName() {
		case "stated_checkpoint_epoch", "stated_checkpoint_last_completed_timestamp_seconds":
			seen++
			if h := f.GetHelp(); strings.Contains(h, "this node completed") || !strings.Contains(h, "as the cluster recorded it") {
				t.Errorf("%s help %q: want the cluster's record, not this node's checkpoints", f.GetName(), h)
			}
		}
	}
	if seen != 2 {
		t.Fatalf("gathered %d of the 2 checkpoint gauges", seen)
	}
}
