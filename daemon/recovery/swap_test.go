package recovery_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
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

// TestNoNodeStartsAndNoOtherRestoreRunsInADataDirARestoreWorksIn: a
// restore holds the data dir's lock for its whole run. A node started on
// that data dir meanwhile used to remove the restore's staged state, as
// an interrupted restore's leftovers, under the download; a second
// restore would stage into the same directory. Both are refused with
// ErrDataDirInUse, and the restore completes with the checkpoint's state.
func TestNoNodeStartsAndNoOtherRestoreRunsInADataDirARestoreWorksIn(t *testing.T) {
	ctx := testCtx(t)
	bucket, _ := fileBucket(t)
	old := start(t, bucket)
	for i := int64(1); i <= 10; i++ {
		old.commit(ctx, t, 1, i)
	}
	old.checkpoint(ctx, t)
	if err := old.d.Close(); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "restored")
	var startErr, restoreErr error
	var intrude func()
	tried := false
	var once sync.Once // progress is called from the download's workers
	progress := func(done, total int64) { once.Do(func() { intrude() }) }
	intrude = func() {
		tried = true // the download has begun: the staged state exists
		cfg := daemontest.Config(t, "intruder")
		cfg.DataDir = dir
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		d, err := daemon.Start(sctx, cfg)
		cancel()
		if err == nil {
			d.Close()
		}
		startErr = err
		_, restoreErr = recovery.Restore(ctx, recovery.RestoreOptions{Uploader: openUploader(t, bucket), DataDir: dir, Force: true})
	}
	n, res := restoreAndStart(ctx, t, bucket, recovery.RestoreOptions{DataDir: dir, Progress: progress})
	if !tried {
		t.Fatal("the restore reported no progress: nothing was tried during it")
	}
	if !errors.Is(startErr, raftstore.ErrDataDirInUse) {
		t.Errorf("a node started in the data dir during the restore: err = %v, want ErrDataDirInUse", startErr)
	}
	if !errors.Is(restoreErr, raftstore.ErrDataDirInUse) {
		t.Errorf("a second restore into the data dir during the first: err = %v, want ErrDataDirInUse", restoreErr)
	}
	if got := n.counter(ctx, t); got != 10 || res.Manifest == nil {
		t.Fatalf("the restored counter is %d, want the checkpoint's 10", got)
	}
}
