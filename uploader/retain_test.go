package uploader_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/statedhq/stated/uploader"
)

// TestRetainKeepsExactlyWhatRetainedManifestsAndSavepointsReference:
// after many checkpoints, each followed by Retain(3), with one savepoint,
// files/ holds exactly the union of the blobs the three newest manifests
// and the savepoint reference.
func TestRetainKeepsExactlyWhatRetainedManifestsAndSavepointsReference(t *testing.T) {
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(11, 12))
	b := open(t, fileURL(t.TempDir()))
	u := newUploader(t, b)
	dir, _ := checkpointDir(t, r, 5)
	for epoch := uint64(1); epoch <= 15; epoch++ {
		// Each checkpoint adds a table and drops the oldest, as
		// compactions do.
		writeFiles(t, dir, map[string][]byte{fmt.Sprintf("%06d.sst", 100+epoch): randomBytes(r, 3000), "wal/000002.log": randomBytes(r, 500)})
		tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
		slices.Sort(tables)
		if err := os.Remove(tables[0]); err != nil {
			t.Fatal(err)
		}
		if _, _, err := u.Upload(ctx, dir, meta(epoch), nil); err != nil {
			t.Fatal(err)
		}
		if epoch == 4 {
			if err := u.Savepoint(ctx, 4, "before-deploy"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := u.Retain(ctx, 3); err != nil {
			t.Fatal(err)
		}
	}
	ms, err := u.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var epochs []uint64
	for _, m := range ms {
		epochs = append(epochs, m.Epoch)
	}
	if !slices.Equal(epochs, []uint64{4, 13, 14, 15}) || ms[0].Savepoint != "before-deploy" {
		t.Fatalf("kept checkpoints %v (first savepoint %q), want the savepoint 4 and the last three", epochs, ms[0].Savepoint)
	}
	if got, want := blobKeys(t, b, "files/"), referenced(ms); !slices.Equal(got, want) {
		t.Fatalf("files/ holds %d blobs, the kept checkpoints reference %d:\n got %v\nwant %v", len(got), len(want), got, want)
	}
	if got := blobKeys(t, b, "manifests/"); len(got) != 3 {
		t.Fatalf("manifests/ = %v", got)
	}
	// Unpinned, the savepoint's own blobs go at the next collection.
	if err := u.DeleteSavepoint(ctx, "before-deploy"); err != nil {
		t.Fatal(err)
	}
	st, err := u.Retain(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	ms, err = u.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := blobKeys(t, b, "files/"), referenced(ms); !slices.Equal(got, want) || st.BlobsDeleted == 0 {
		t.Fatalf("after the savepoint went: %+v; files/ %v, want %v", st, got, want)
	}
	for _, m := range ms {
		if probs, err := u.Verify(ctx, m); err != nil || len(probs) > 0 {
			t.Fatalf("checkpoint %d after GC: %v %v", m.Epoch, probs, err)
		}
	}
}

// TestGCGraceSparesLeftoversOfARecentFailedUpload: an upload that failed
// before its manifest leaves unreferenced blobs; a collection within the
// grace period keeps them (another node's upload could be about to
// reference them), one after it deletes them.
func TestGCGraceSparesLeftoversOfARecentFailedUpload(t *testing.T) {
	ctx := testCtx(t)
	inner := open(t, "mem://")
	b, _ := newFaultBucket(inner, &faults{Only: "manifests/", Fail: 1})
	failing := newUploader(t, b, func(c *uploader.Config) { c.MaxAttempts = 1 })
	dir, _ := checkpointDir(t, rand.New(rand.NewPCG(15, 16)), 4)
	if _, _, err := failing.Upload(ctx, dir, meta(1), nil); err == nil {
		t.Fatal("upload through a bucket refusing manifests succeeded")
	}
	left := len(blobKeys(t, inner, "files/"))
	if left == 0 {
		t.Fatal("the failed upload left no blobs to collect")
	}
	st, err := newUploader(t, inner, func(c *uploader.Config) { c.GCGrace = time.Hour }).Retain(ctx, 3)
	if err != nil || st.BlobsKept != left || st.BlobsDeleted != 0 {
		t.Fatalf("Retain within the grace period: %+v, %v; want %d kept", st, err, left)
	}
	// The zero Config means the default grace, 10 minutes.
	if st, err := newUploader(t, inner, func(c *uploader.Config) { c.GCGrace = 0 }).Retain(ctx, 3); err != nil || st.BlobsDeleted != 0 {
		t.Fatalf("Retain with the default grace: %+v, %v", st, err)
	}
	st, err = newUploader(t, inner).Retain(ctx, 3) // no grace
	if err != nil || st.BlobsDeleted != left || st.BlobsKept != 0 {
		t.Fatalf("Retain without grace: %+v, %v; want %d deleted", st, err, left)
	}
	if keys := blobKeys(t, inner, "files/"); len(keys) != 0 {
		t.Fatalf("left after GC: %v", keys)
	}
}

// TestLeftoversOfInterruptedManifestWritesAreIgnoredThenCollected: a
// crash during a manifest write in a file:// bucket leaves the temporary
// file beside it; List does not trip on it, and Retain removes it.
func TestLeftoversOfInterruptedManifestWritesAreIgnoredThenCollected(t *testing.T) {
	ctx := testCtx(t)
	b := open(t, "mem://")
	u := newUploader(t, b)
	dir, _ := checkpointDir(t, rand.New(rand.NewPCG(19, 20)), 2)
	if _, _, err := u.Upload(ctx, dir, meta(1), nil); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"manifests/00000000000000000002.json.18a7f3c2e1.tmp", "savepoints/x.json.18a7f3c2e1.tmp"} {
		if err := b.WriteAll(ctx, k, []byte(`{"format_ver`), nil); err != nil {
			t.Fatal(err)
		}
	}
	if ms, err := u.List(ctx); err != nil || len(ms) != 1 {
		t.Fatalf("List with leftovers = %v, %v", ms, err)
	}
	st, err := u.Retain(ctx, 3)
	if err != nil || st.LeftoversDeleted != 2 {
		t.Fatalf("Retain = %+v, %v; want the 2 leftovers deleted", st, err)
	}
	if keys := blobKeys(t, b, "manifests/"); len(keys) != 1 {
		t.Fatalf("manifests/ = %v", keys)
	}
}

// TestRetainStopsAtAManifestItCannotRead: what an unreadable manifest
// references is unknown, so nothing is collected.
func TestRetainStopsAtAManifestItCannotRead(t *testing.T) {
	ctx := testCtx(t)
	b := open(t, "mem://")
	u := newUploader(t, b)
	if err := b.WriteAll(ctx, "files/orphan", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	if err := b.WriteAll(ctx, "manifests/00000000000000000009.json", []byte(`{"format_version": 3, "epoch": 9}`), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Retain(ctx, 3); !errors.Is(err, uploader.ErrFormat) {
		t.Fatalf("Retain with a newer manifest: %v", err)
	}
	if keys := blobKeys(t, b, "files/"); len(keys) != 1 {
		t.Fatalf("files/ = %v, want the orphan kept", keys)
	}
	if _, err := u.Retain(ctx, 0); !errors.Is(err, uploader.ErrInvalid) {
		t.Fatalf("Retain(0): %v", err)
	}
}

// TestRetainWaitsForAnUploadInProgress: with no grace at all, a
// collection by the same Uploader cannot take the blobs of an upload
// still running.
func TestRetainWaitsForAnUploadInProgress(t *testing.T) {
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(17, 18))
	inner := open(t, "mem://")
	b, _ := newFaultBucket(inner, &faults{Only: "manifests/", Delay: 20 * time.Millisecond})
	u := newUploader(t, b)
	dir, _ := checkpointDir(t, r, 6)
	done := make(chan error, 1)
	started := make(chan struct{})
	var once sync.Once
	go func() {
		_, _, err := u.Upload(ctx, dir, meta(1), func(int64, int64) { once.Do(func() { close(started) }) })
		done <- err
	}()
	<-started
	if _, err := u.Retain(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	m, err := u.Get(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if probs, err := u.Verify(ctx, m); err != nil || len(probs) > 0 {
		t.Fatalf("verify: %v %v", probs, err)
	}
}
