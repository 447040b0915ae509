package main

import (
	"context"
	"encoding/json"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/daemon/recovery"
	stated "github.com/statedhq/stated/sdk/go"
)

// TestRecoveryReportListsWindowNamespaces: the recovery report of a
// checkpoint lists each window namespace with its watermark, pending
// emissions and open windows as the checkpoint holds them, in text and in
// JSON; a checkpoint without window namespaces says so.
func TestRecoveryReportListsWindowNamespaces(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	d := daemontest.Start(t, func(c *daemon.Config) { c.CheckpointURL = bucket; c.CheckpointInterval = 0 })
	mustSucceed(t, client(t, d, "checkpoint", "trigger", "--wait"))
	if out := mustSucceed(t, cliRun(t, nil, "recovery", "--from", bucket, "--no-verify")); !strings.Contains(out, "window namespaces: none") {
		t.Errorf("report of a checkpoint without window namespaces:\n%s", out)
	}

	base := addClicks(ctx, t, d)
	mustSucceed(t, client(t, d, "checkpoint", "trigger", "--wait"))

	out := mustSucceed(t, cliRun(t, nil, "recovery", "--from", bucket, "--no-verify"))
	row := regexp.MustCompile(`(?m)^\s+clicks\s+2026-01-05T08:02:00\.000Z\s+4\s+2\s*$`)
	if !strings.Contains(out, "window namespaces: 1;") || !row.MatchString(out) {
		t.Fatalf("report lacks the window namespace clicks (watermark 08:02, 4 pending, 2 open):\n%s", out)
	}
	var r recovery.Report
	if err := json.Unmarshal([]byte(mustSucceed(t, cliRun(t, nil, "recovery", "--from", bucket, "--json", "--no-verify"))), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Windows) != 1 || r.Windows[0].Namespace != "clicks" || r.Windows[0].Watermark != base.Add(2*time.Minute).UnixMilli() ||
		r.Windows[0].Pending != 4 || r.Windows[0].OpenWindows != 2 {
		t.Fatalf("recovery --json windows = %+v", r.Windows)
	}
	// The same report through the daemon (no --from): its RPC carries the
	// window namespaces too.
	if out := mustSucceed(t, client(t, d, "recovery", "--no-verify")); !strings.Contains(out, "window namespaces: 1;") || !row.MatchString(out) {
		t.Fatalf("the daemon's report lacks the window namespace clicks:\n%s", out)
	}
}

// TestRestoreOfAChangelogCheckpointListsTheWindowNamespacesItBroughtBack:
// a changelog checkpoint's manifest does not record window namespaces, so
// the recovery report cannot list them; the restore reads them from the
// state its replay made, at the checkpoint's cut, and lists them as a
// table checkpoint's restore does.
func TestRestoreOfAChangelogCheckpointListsTheWindowNamespacesItBroughtBack(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	d := daemontest.Start(t, func(c *daemon.Config) {
		c.CheckpointURL = bucket
		c.CheckpointInterval = 0
		c.CheckpointMaterializeInterval = time.Hour // after the first, changelog checkpoints
	})
	mustSucceed(t, client(t, d, "checkpoint", "trigger", "--wait")) // the base: tables

	addClicks(ctx, t, d)
	mustSucceed(t, client(t, d, "checkpoint", "trigger", "--wait"))
	report := mustSucceed(t, cliRun(t, nil, "recovery", "--from", bucket, "--no-verify"))
	if !strings.Contains(report, "a changelog checkpoint") || !strings.Contains(report, "window namespaces: not recorded") {
		t.Fatalf("the newest checkpoint is not a changelog one without window namespaces in its manifest:\n%s", report)
	}

	out := mustSucceed(t, cliRun(t, nil, "restore", "--from", bucket, "--data-dir", filepath.Join(t.TempDir(), "restored")))
	row := regexp.MustCompile(`(?m)^\s+clicks\s+2026-01-05T08:02:00\.000Z\s+4\s+2\s*$`)
	if !strings.Contains(out, "replayed ") || !strings.Contains(out, "window namespaces: 1;") || !row.MatchString(out) {
		t.Fatalf("the restore of a changelog checkpoint does not list the window namespace clicks (watermark 08:02, 4 pending, 2 open):\n%s", out)
	}
}

// addClicks defines the count namespace clicks on d and adds two keys'
// clicks to the windows 08:00, 08:01 and 08:02 of 2026-01-05, then moves
// the watermark to 08:02: two windows stay open, and the four of 08:00
// and 08:01 close, pending emission. It returns 08:00.
func addClicks(ctx context.Context, t *testing.T, d *daemon.Daemon) time.Time {
	t.Helper()
	c, err := stated.Dial(ctx, "unix://"+d.SocketPath(), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.DefineWindows(ctx, stated.WindowSpec{Namespace: "clicks", Shape: stated.Tumbling, Size: time.Minute,
		Aggregate: stated.Count, Emit: stated.EmitFinal, Late: stated.LateDrop})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)
	txn := c.Txn()
	for i := range 5 {
		txn.AddWindow("clicks", []byte("a"), base.Add(time.Duration(i)*30*time.Second), stated.NoValue())
		txn.AddWindow("clicks", []byte("b"), base.Add(time.Duration(i)*30*time.Second), stated.NoValue())
	}
	if _, err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Txn().AdvanceWatermark("clicks", "", base.Add(2*time.Minute)).Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return base
}
