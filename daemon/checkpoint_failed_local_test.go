package daemon_test

import (
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestWhileCheckpointsFailOnlyTheNewestLocalCheckpointStays: each barrier
// removes the local checkpoints of the epochs before it, failed or not,
// so that checkpoints failing for a long time keep one local checkpoint
// on each node, not one per failed epoch (docs/OPERATIONS.md, "Checkpoint
// failures"); the next completed checkpoint removes that one too.
func TestWhileCheckpointsFailOnlyTheNewestLocalCheckpointStays(t *testing.T) {
	var dataDir string
	d := daemontest.Start(t, func(c *daemon.Config) {
		c.CheckpointURL, c.CheckpointInterval = fileBucket(t), 0
		dataDir = c.DataDir
	})
	var fail atomic.Bool
	fail.Store(true)
	daemon.SetCheckpointCutHook(d, func(epoch uint64, dir string) string {
		if fail.Load() {
			return filepath.Join(t.TempDir(), "not-a-checkpoint")
		}
		return dir
	})
	cps := statedv1.NewCheckpointsClient(dial(t, "unix://"+d.SocketPath()))
	ctx := testContext(t)
	local := func() []string {
		t.Helper()
		es, err := os.ReadDir(filepath.Join(dataDir, "local-checkpoints"))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		var names []string
		for _, e := range es {
			names = append(names, e.Name())
		}
		return names
	}
	for range 3 {
		if _, err := cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true}); err == nil {
			t.Fatal("a checkpoint whose local cut does not read completed")
		}
	}
	if got, want := local(), []string{"00000000000000000003"}; !slices.Equal(got, want) {
		t.Fatalf("local checkpoints after epochs 1 to 3 failed: %v, want only %v", got, want)
	}
	fail.Store(false)
	if _, err := cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true}); err != nil {
		t.Fatal(err)
	}
	// The completion entry's removal runs off the apply loop.
	for deadline := time.Now().Add(10 * time.Second); len(local()) != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("local checkpoints 10 s after checkpoint 4 completed: %v, want none", local())
		}
	}
}
