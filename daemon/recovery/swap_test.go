package recovery_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/daemon/recovery"
	"github.com/statedhq/stated/raftstore"
)

// TestRestoreOverStateWithoutARaftLogBringsTheNodeBack: a data dir whose
// raft/ is gone (what the old, non-atomic swap left when killed) is
// refused at start, and the remedy the refusal names, `stated restore
// --force`, gives a node whose new commits apply.
func TestRestoreOverStateWithoutARaftLogBringsTheNodeBack(t *testing.T) {
	ctx := testCtx(t)
	bucket, _ := fileBucket(t)
	dir := filepath.Join(t.TempDir(), "data")
	old := start(t, bucket, func(c *daemon.Config) { c.DataDir = dir })
	for i := int64(1); i <= 10; i++ {
		old.commit(ctx, t, 1, i)
	}
	e := old.checkpoint(ctx, t)
	for i := int64(11); i <= 30; i++ {
		old.commit(ctx, t, 1, i) // applied well above the restored state's index
	}
	// Not while the node runs on it: that would pull its files away.
	if _, err := recovery.Restore(ctx, recovery.RestoreOptions{Uploader: openUploader(t, bucket), DataDir: dir, Force: true,
		Select: recovery.Selector{Epoch: e}}); !errors.Is(err, raftstore.ErrDataDirInUse) {
		t.Fatalf("restore into the data dir of a running node: err = %v, want ErrDataDirInUse", err)
	}
	old.commit(ctx, t, 1, 31)
	if err := old.d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "raft")); err != nil {
		t.Fatal(err)
	}

	cfg := daemontest.Config(t, "node1")
	cfg.DataDir, cfg.CheckpointURL, cfg.CheckpointInterval = dir, bucket, 0
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	d, err := daemon.Start(sctx, cfg)
	cancel()
	if err == nil {
		d.Close()
		t.Fatal("the daemon started on state without a Raft log")
	}
	if !errors.Is(err, raftstore.ErrStateWithoutLog) {
		t.Fatalf("start on state without a Raft log: err = %v, want ErrStateWithoutLog", err)
	}

	if _, err := recovery.Restore(ctx, recovery.RestoreOptions{Uploader: openUploader(t, bucket), DataDir: dir, Force: true,
		Select: recovery.Selector{Epoch: e}}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{".restore", ".restore-old", ".restore-swap", "raft"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s in the data dir after the restore (%v)", p, err)
		}
	}
	n := start(t, bucket, func(c *daemon.Config) { c.DataDir = dir; c.NodeID = "restored" })
	if got := n.counter(ctx, t); got != 10 {
		t.Fatalf("restored counter = %d, want 10", got)
	}
	n.commit(ctx, t, 5, 11)
	if got := n.counter(ctx, t); got != 15 {
		t.Fatalf("counter after a commit on the restored node = %d, want 15: the entry was skipped", got)
	}
}
