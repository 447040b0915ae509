package main

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/uploader"
)

// TestAKeyErrorAfterAFallbackNamesTheCheckpointFallenBackTo: checkpoint 1
// was sealed with the key before a rotation, checkpoint 2 with the new
// one, and checkpoint 2 is not intact. restore --fallback with the new key
// skips checkpoint 2, and the key does not decrypt checkpoint 1: the error
// names checkpoint 1, the one the key failed on, and says why checkpoint 2
// was skipped. It used to name the selected checkpoint 2, which the key
// does decrypt.
func TestAKeyErrorAfterAFallbackNamesTheCheckpointFallenBackTo(t *testing.T) {
	t.Parallel()
	const (
		oldKey = "base64key://AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
		newKey = "base64key://HxwdHh8bGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE="
	)
	bucketDir, dataDir := t.TempDir(), t.TempDir()
	bucket := (&url.URL{Scheme: "file", Path: bucketDir}).String()
	withKey := func(key string) func(*daemon.Config) {
		return func(c *daemon.Config) {
			c.CheckpointURL, c.CheckpointInterval, c.CheckpointKeyURL, c.DataDir = bucket, 0, key, dataDir
		}
	}
	d := daemontest.Start(t, withKey(oldKey))
	mustSucceed(t, client(t, d, "kv", "add", "ns", "clicks", "7"))
	mustSucceed(t, client(t, d, "checkpoint", "trigger", "--wait"))
	d.Close()
	d = daemontest.Start(t, withKey(newKey))
	mustSucceed(t, client(t, d, "kv", "add", "ns", "clicks", "1"))
	mustSucceed(t, client(t, d, "checkpoint", "trigger", "--wait"))
	d.Close()

	// Checkpoint 2, the first under the new key, holds blobs of its own
	// only; one of them is damaged.
	b, err := uploader.OpenBucket(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	up, err := uploader.New(uploader.Config{Bucket: b})
	if err != nil {
		t.Fatal(err)
	}
	m, err := up.Get(context.Background(), 2)
	if err != nil {
		t.Fatal(err)
	}
	blob := filepath.Join(bucketDir, filepath.FromSlash(m.Files[0].Blob()))
	if err := os.WriteFile(blob, []byte("not the sealed file"), 0o600); err != nil {
		t.Fatal(err)
	}

	res := cliRun(t, nil, "restore", "--from", bucket, "--data-dir", filepath.Join(t.TempDir(), "new"), "--fallback", "--checkpoint-key-url", newKey)
	if res.code != 1 || !strings.Contains(res.stderr, "the key does not decrypt checkpoint 1:") || !strings.Contains(res.stderr, "skipped checkpoint 2: ") {
		t.Fatalf("restore --fallback: exit %d, stderr %q; want 1, checkpoint 2 skipped and the key named as not decrypting checkpoint 1", res.code, res.stderr)
	}
}
