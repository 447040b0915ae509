package test

import (
	"bytes"
	"context"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// The key of the tests, and another one.
const (
	ckptKey      = "base64key://AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	ckptOtherKey = "base64key://HxwdHh8bGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE="
	ckptKeyText  = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
)

// filesHolding returns the files under dir whose bytes contain needle.
func filesHolding(t *testing.T, dir string, needle []byte) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, needle) {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// dirEntries lists dir, or nothing when it does not exist.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// TestEncryptedCheckpointHidesStateAndRestoresOnlyWithItsKey runs a node
// with --checkpoint-key-url, checkpoints a distinctive value, and checks
// that no byte of the bucket holds it or the key; that `stated recovery`
// without the key reports the checkpoint intact and encrypted; that
// `stated restore` without the key or with another fails saying so and
// writes nothing; that a restore with the key brings the value back; and
// that a corrupted blob is reported as corruption, not as a key problem.
func TestEncryptedCheckpointHidesStateAndRestoresOnlyWithItsKey(t *testing.T) {
	t.Parallel()
	skipLong(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bucketDir := t.TempDir()
	bucket := (&url.URL{Scheme: "file", Path: bucketDir}).String()
	marker := []byte("encrypted-checkpoint-marker-7f3a9c21d4e8")

	n := newNode(t)
	n.args = []string{"--checkpoint-url", bucket, "--checkpoint-key-url", ckptKey, "--checkpoint-interval", "1h"}
	n.start(ctx)
	client, closeConn := n.client()
	if _, err := client.Commit(ctx, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{
		Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "secret", Key: []byte("k"), Value: marker,
	}}}); err != nil {
		t.Fatal(err)
	}
	closeConn()
	trigger(ctx, t, n, true)
	n.kill()
	if logs := n.logs.String(); !strings.Contains(logs, "encryption:  checkpoint files encrypted (base64key)") || strings.Contains(logs, ckptKeyText) {
		t.Fatalf("the serving banner should say the checkpoints are encrypted, and never show the key:\n%s", logs)
	}
	for _, needle := range [][]byte{marker, []byte(ckptKeyText)} {
		if got := filesHolding(t, bucketDir, needle); len(got) > 0 {
			t.Fatalf("bucket files hold %q: %v", needle, got)
		}
	}

	report := mustStated(ctx, t, "recovery", "--from", bucket)
	for _, want := range []string{"files: all present and intact", "files are encrypted (keeper base64key)", "restoring needs --checkpoint-key-url"} {
		if !strings.Contains(report, want) {
			t.Fatalf("recovery without the key does not say %q:\n%s", want, report)
		}
	}

	for _, c := range []struct{ name, key, want string }{
		{"without the key", "", "checkpoint 1 is encrypted; give --checkpoint-key-url"},
		{"with another key", ckptOtherKey, "the key does not decrypt checkpoint 1: wrong key?"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			args := []string{"restore", "--from", bucket, "--data-dir", dataDir}
			if c.key != "" {
				args = append(args, "--checkpoint-key-url", c.key)
			}
			r := runStated(ctx, t, args...)
			if r.code == 0 || !strings.Contains(r.stderr, c.want) || strings.Contains(r.stderr, "corrupt") {
				t.Fatalf("restore %s: exit %d, want a failure saying %q (not corruption)\nstdout: %s\nstderr: %s", c.name, r.code, c.want, r.stdout, r.stderr)
			}
			if strings.Contains(r.stderr+r.stdout, ckptKeyText) {
				t.Fatalf("restore shows the key:\n%s", r.stderr)
			}
			if got := dirEntries(t, dataDir); len(got) > 0 {
				t.Fatalf("a refused restore wrote %v into the data dir", got)
			}
		})
	}

	restored := newNamedNode(t, "n1")
	out := mustStated(ctx, t, "restore", "--from", bucket, "--data-dir", restored.dataDir, "--checkpoint-key-url", ckptKey)
	if !strings.Contains(out, "restored checkpoint 1") {
		t.Fatalf("restore with the key:\n%s", out)
	}
	// The plaintext is where it belongs: in the restored data dir, which
	// shows that the bucket check above would have found it.
	if len(filesHolding(t, restored.dataDir, marker)) == 0 {
		t.Fatal("the restored data dir does not hold the value in its files")
	}
	restored.start(ctx)
	client, closeConn = restored.client()
	resp, err := client.Get(ctx, &statedv1.GetRequest{Namespace: "secret", Key: []byte("k"), Kind: statedv1.Kind_KIND_VALUE})
	closeConn()
	if err != nil || !bytes.Equal(resp.GetValue(), marker) {
		t.Fatalf("restored value = %q, %v; want %q", resp.GetValue(), err, marker)
	}
	restored.kill()

	// Corrupt one blob (which one file or more may share): recovery, without the key, reports it; a restore
	// with the key reports corruption, not a key problem.
	blobs, err := filepath.Glob(filepath.Join(bucketDir, "files", "*"))
	if err != nil || len(blobs) == 0 {
		t.Fatalf("no blobs in the bucket: %v", err)
	}
	b, err := os.ReadFile(blobs[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 0xff
	if err := os.WriteFile(blobs[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	r := runStated(ctx, t, "recovery", "--from", bucket)
	if !strings.Contains(r.stdout, "files: NOT INTACT, ") {
		t.Fatalf("recovery after corrupting %s:\nstdout: %s\nstderr: %s", blobs[0], r.stdout, r.stderr)
	}
	dataDir := filepath.Join(t.TempDir(), "data")
	r = runStated(ctx, t, "restore", "--from", bucket, "--data-dir", dataDir, "--checkpoint-key-url", ckptKey)
	if r.code == 0 || !strings.Contains(r.stderr, "corrupt") || strings.Contains(r.stderr, "wrong key") {
		t.Fatalf("restore of a corrupted checkpoint with the key: exit %d, want corruption, not a key problem\nstderr: %s", r.code, r.stderr)
	}
}

// TestRunRefusesAnUnknownCheckpointKeyURL checks that a key URL stated
// cannot open stops `stated run` at start, naming the flag and masking
// the key, rather than checkpointing in plaintext.
func TestRunRefusesAnUnknownCheckpointKeyURL(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, key := range []string{"nosuch://k", "awskms://", "gcpkms://projects/p", "azurekeyvault://example.com/keys/k", "base64key://c2hvcnQta2V5"} {
		dataDir := filepath.Join(t.TempDir(), "data")
		r := runStated(ctx, t, "run", "--data-dir", dataDir, "--checkpoint-key-url", key,
			"--grpc-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0")
		if r.code == 0 || !strings.Contains(r.stderr, "--checkpoint-key-url") || strings.Contains(r.stderr, "c2hvcnQta2V5") {
			t.Fatalf("stated run --checkpoint-key-url %s: exit %d, want an error naming the flag without the key\nstderr: %s", key, r.code, r.stderr)
		}
		if got := dirEntries(t, dataDir); len(got) > 0 {
			t.Fatalf("stated run with a bad key URL wrote %v", got)
		}
	}
}
