package main

import (
	"context"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	stated "github.com/statedhq/stated/sdk/go"
)

// TestAClientUpThroughARestoreReadsItsCommitsAfterIt: a Client that stays
// up while its cluster is restored from a checkpoint saw indexes of the
// old log, which the restored cluster's new log has not reached. Its first
// commit after the restore opens a new session (the restore dropped the
// old one); from then on its reads (read-your-writes, by default) wait
// for its commits in the new log, not for an index of the old one.
func TestAClientUpThroughARestoreReadsItsCommitsAfterIt(t *testing.T) {
	t.Parallel()
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	d := daemontest.Start(t, func(c *daemon.Config) { c.CheckpointURL = bucket; c.CheckpointInterval = 0 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := stated.Dial(ctx, d.SocketPath(), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	add := func(delta int64) stated.CommitResult {
		t.Helper()
		res, err := c.Txn().CounterAdd("ns", []byte("k"), delta).Commit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	add(1)
	mustSucceed(t, client(t, d, "checkpoint", "trigger", "--wait"))
	for range 50 { // lost in the restore, and far ahead of its log
		add(1)
	}
	sock := d.SocketPath()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "new")
	mustSucceed(t, cliRun(t, nil, "restore", "--from", bucket, "--data-dir", dir))
	daemontest.Start(t, func(c *daemon.Config) { c.DataDir = dir; c.NodeID = "restored"; c.SocketPath = sock })
	res := add(10)
	if c.LastIndex() != res.Index {
		t.Errorf("LastIndex() = %d after a commit at index %d of the restored cluster", c.LastIndex(), res.Index)
	}
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	if n, err := c.GetCounter(rctx, "ns", []byte("k")); err != nil || n != 11 {
		t.Fatalf("read after the commit = %d, %v; want 11 (1 restored, 10 added)", n, err)
	}
}
