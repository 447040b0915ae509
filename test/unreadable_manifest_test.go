package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// encryptedNodeWithTwoCheckpoints starts an encrypted node on a file:// bucket and takes
// two checkpoints (epochs 1 and 2), each after a put; it returns the node,
// still running, and the bucket's directory and URL.
func encryptedNodeWithTwoCheckpoints(ctx context.Context, t *testing.T) (*node, string, string) {
	t.Helper()
	bucketDir := t.TempDir()
	bucket := (&url.URL{Scheme: "file", Path: bucketDir}).String()
	n := newNode(t)
	n.args = []string{"--checkpoint-url", bucket, "--checkpoint-key-url", ckptKey, "--checkpoint-interval", "1h", "--checkpoint-retain", "3"}
	n.start(ctx)
	for i := 1; i <= 2; i++ {
		client, closeConn := n.client()
		if _, err := client.Commit(ctx, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{
			Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "ns", Key: []byte("k"), Value: []byte(fmt.Sprintf("v%d", i)),
		}}}); err != nil {
			t.Fatal(err)
		}
		closeConn()
		trigger(ctx, t, n, true)
	}
	return n, bucketDir, bucket
}

// futureCopy writes the JSON at src to dst with its format_version set to
// 99: what a newer release's manifest (or pin) looks like to this one.
func futureCopy(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m["format_version"] = 99
	if m["savepoint"] != nil {
		m["savepoint"] = strings.TrimSuffix(filepath.Base(dst), ".json")
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestAnUnreadableSavepointStopsNoRestoreAndCanBeDeleted: one savepoint
// pin in the bucket that this stated cannot read (a newer format, or
// damaged) failed every restore, list and delete, in the middle of a
// recovery: it must not stop the restore of an intact checkpoint selected
// by its epoch, nor one with --fallback, nor `stated checkpoint list`;
// and `stated checkpoint delete --savepoint NAME` removes it (as a
// manifest that does not read is deleted).
func TestAnUnreadableSavepointStopsNoRestoreAndCanBeDeleted(t *testing.T) {
	skipLong(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, bucketDir, bucket := encryptedNodeWithTwoCheckpoints(ctx, t)
	// A pin of checkpoint 2 as a newer release writes it.
	if err := os.MkdirAll(filepath.Join(bucketDir, "savepoints"), 0o755); err != nil {
		t.Fatal(err)
	}
	futureCopy(t, filepath.Join(bucketDir, "manifests", fmt.Sprintf("%020d.json", 2)), filepath.Join(bucketDir, "savepoints", "future.json"))

	t.Run("restore --checkpoint 1", func(t *testing.T) {
		dataDir := filepath.Join(t.TempDir(), "data")
		r := runStated(ctx, t, "restore", "--from", bucket, "--data-dir", dataDir, "--checkpoint", "1", "--checkpoint-key-url", ckptKey)
		if r.code != 0 || !strings.Contains(r.stdout, "restored checkpoint 1") {
			t.Fatalf("restore of the intact checkpoint 1 with its key: exit %d, want 0\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("restore --fallback", func(t *testing.T) {
		dataDir := filepath.Join(t.TempDir(), "data")
		r := runStated(ctx, t, "restore", "--from", bucket, "--data-dir", dataDir, "--fallback", "--checkpoint-key-url", ckptKey)
		if r.code != 0 || !strings.Contains(r.stdout, "restored checkpoint") {
			t.Fatalf("restore --fallback with the key: exit %d, want a restored checkpoint\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("checkpoint list", func(t *testing.T) {
		r := runStated(ctx, t, "--addr", n.socket, "checkpoint", "list")
		if r.code != 0 || !strings.Contains(r.stdout, "2") {
			t.Fatalf("checkpoint list: exit %d, want the two checkpoints listed\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		if !strings.Contains(r.stderr, "savepoints/future.json does not read") {
			t.Fatalf("checkpoint list does not warn of the pin that does not read\nstderr: %s", r.stderr)
		}
	})
	t.Run("checkpoint delete --savepoint future", func(t *testing.T) {
		r := runStated(ctx, t, "--addr", n.socket, "checkpoint", "delete", "--savepoint", "future")
		if r.code != 0 {
			t.Fatalf("checkpoint delete --savepoint future: exit %d, want the unreadable pin removed\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
	})
}

// TestRestoreFallbackPassesOverAnUnreadableNewestManifest: the newest
// manifest is one this stated cannot read (a newer release's format, or
// damaged). docs/OPERATIONS.md: "restore fails naming the file;
// --fallback tries older ones": `restore` of the latest fails naming it
// (it does not take an older checkpoint for the latest), `restore
// --fallback` restores checkpoint 1 and says it skipped 2, and `restore
// --checkpoint 1` restores it too.
func TestRestoreFallbackPassesOverAnUnreadableNewestManifest(t *testing.T) {
	skipLong(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, bucketDir, bucket := encryptedNodeWithTwoCheckpoints(ctx, t)
	n.kill()
	m2 := filepath.Join(bucketDir, "manifests", fmt.Sprintf("%020d.json", 2))
	futureCopy(t, m2, m2)

	t.Run("restore", func(t *testing.T) {
		dataDir := filepath.Join(t.TempDir(), "data")
		r := runStated(ctx, t, "restore", "--from", bucket, "--data-dir", dataDir, "--checkpoint-key-url", ckptKey)
		if r.code == 0 || !strings.Contains(r.stderr, "00000000000000000002.json") {
			t.Fatalf("restore of the latest: exit %d, want a failure naming the newest manifest\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("restore --fallback", func(t *testing.T) {
		dataDir := filepath.Join(t.TempDir(), "data")
		r := runStated(ctx, t, "restore", "--from", bucket, "--data-dir", dataDir, "--fallback", "--checkpoint-key-url", ckptKey)
		if r.code != 0 || !strings.Contains(r.stdout, "restored checkpoint 1") || !strings.Contains(r.stdout+r.stderr, "checkpoint 2") {
			t.Fatalf("restore --fallback: exit %d, want checkpoint 1 restored, checkpoint 2 skipped\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("restore --checkpoint 1", func(t *testing.T) {
		dataDir := filepath.Join(t.TempDir(), "data")
		r := runStated(ctx, t, "restore", "--from", bucket, "--data-dir", dataDir, "--checkpoint", "1", "--checkpoint-key-url", ckptKey)
		if r.code != 0 || !strings.Contains(r.stdout, "restored checkpoint 1") {
			t.Fatalf("restore --checkpoint 1: exit %d, want checkpoint 1 restored\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
	})
}
