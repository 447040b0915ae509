package test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCheckpointListAndShowSayWhichCheckpointsAreEncrypted: plain and
// encrypted checkpoints can share a bucket, and only the encrypted ones
// need --checkpoint-key-url to restore. The Checkpoints API carries
// encrypted and encryption_keeper for every checkpoint; `stated
// checkpoint list` (and --json) and `checkpoint show` say it too.
func TestCheckpointListAndShowSayWhichCheckpointsAreEncrypted(t *testing.T) {
	skipLong(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, _, _ := encryptedNodeWithTwoCheckpoints(ctx, t)

	out := mustStated(ctx, t, "--addr", n.socket, "checkpoint", "list", "--json")
	var list []map[string]any
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) == 0 {
		t.Fatalf("checkpoint list --json: %v\n%s", err, out)
	}
	if list[0]["encrypted"] != true || list[0]["encryption_keeper"] != "base64key" {
		t.Errorf("checkpoint list --json does not say checkpoint %v is encrypted with a base64key key: %v", list[0]["epoch"], list[0])
	}
	table := mustStated(ctx, t, "--addr", n.socket, "checkpoint", "list")
	if !strings.Contains(table, "encrypted checkpoints (a restore needs --checkpoint-key-url): 1, 2") {
		t.Errorf("checkpoint list does not say which checkpoints are encrypted:\n%s", table)
	}
	show := mustStated(ctx, t, "--addr", n.socket, "checkpoint", "show", "latest")
	if !strings.Contains(show, "yes, key kind base64key") {
		t.Errorf("checkpoint show latest does not say the checkpoint is encrypted:\n%s", show)
	}
}

// TestRestoreRefusesABadCheckpointSelectorAsUsage: a --checkpoint that
// is no epoch, no "latest" and no valid savepoint name is refused as
// `--checkpoint 0` is (exit 64, naming the flag, nothing written); an
// empty one (an unset shell variable) does not restore the latest
// checkpoint.
func TestRestoreRefusesABadCheckpointSelectorAsUsage(t *testing.T) {
	skipLong(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, _, bucket := encryptedNodeWithTwoCheckpoints(ctx, t)
	n.kill()
	for _, sel := range []string{"bad/name", " 1", ""} {
		dataDir := filepath.Join(t.TempDir(), "data")
		r := runStated(ctx, t, "restore", "--from", bucket, "--data-dir", dataDir, "--checkpoint", sel, "--checkpoint-key-url", ckptKey)
		if r.code != 64 || !strings.Contains(r.stderr, "--checkpoint") {
			t.Errorf("restore --checkpoint %q: exit %d, want 64 and an error naming --checkpoint\nstdout: %s\nstderr: %s", sel, r.code, r.stdout, r.stderr)
		}
		if got := dirEntries(t, dataDir); len(got) > 0 {
			t.Errorf("restore --checkpoint %q wrote %v into the data dir", sel, got)
		}
	}
}
