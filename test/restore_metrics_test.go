package test

import (
	"context"
	"net/url"
	"os"
	"testing"
	"time"
)

// TestRestoredNodeReportsItsRestoreInMetrics restores a checkpoint with
// `stated restore` into a new data dir and starts the node with
// --metrics-addr: it reports how long the restore took, when, and from
// which epoch; a node that was never restored reports none of them.
func TestRestoredNodeReportsItsRestoreInMetrics(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	n := newNode(t)
	metricsAddr := freeAddr(t)
	n.args = []string{"--checkpoint-url", bucket, "--checkpoint-interval", "1h", "--metrics-addr", metricsAddr}
	n.start(ctx)
	for _, m := range []string{"stated_restore_duration_seconds", "stated_restore_timestamp_seconds", "stated_restored_checkpoint_epoch"} {
		if fams := scrape(t, metricsAddr); fams[m] != nil {
			t.Errorf("a node that was never restored reports %s", m)
		}
	}
	if out, err := runCLI(t, nil, "kv", "put", "ns", "k", "v", "--addr", n.socket); err != nil {
		t.Fatalf("kv put: %v\n%s", err, out)
	}
	if out, err := runCLI(t, nil, "checkpoint", "trigger", "--wait", "--addr", n.socket); err != nil {
		t.Fatalf("checkpoint trigger: %v\n%s", err, out)
	}
	n.kill()
	if err := os.RemoveAll(n.dataDir); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if out, err := runCLI(t, nil, "restore", "--from", bucket, "--data-dir", n.dataDir); err != nil {
		t.Fatalf("stated restore: %v\n%s", err, out)
	}
	after := time.Now()
	n.start(ctx)
	fams := scrape(t, metricsAddr)
	if v := value(t, fams, "stated_restored_checkpoint_epoch"); v != 1 {
		t.Errorf("stated_restored_checkpoint_epoch = %v, want 1", v)
	}
	took := value(t, fams, "stated_restore_duration_seconds")
	if took <= 0 || took > after.Sub(before).Seconds() {
		t.Errorf("stated_restore_duration_seconds = %v, want within (0, %v] (the stated restore process's run)", took, after.Sub(before).Seconds())
	}
	at := value(t, fams, "stated_restore_timestamp_seconds")
	if at < float64(before.UnixNano())/1e9 || at > float64(after.UnixNano())/1e9 {
		t.Errorf("stated_restore_timestamp_seconds = %v, want between %v and %v", at, before.Unix(), after.Unix())
	}
}
