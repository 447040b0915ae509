package uploader_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
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

// TestRetainManifestsDeletesOldManifestsAndNothingElse: RetainManifests
// keeps the newest manifests and deletes the others, but no blob, not
// even one no manifest references that is older than the grace period,
// nor the leftover of an interrupted manifest write; Retain then
// collects both. It refuses to keep fewer than one checkpoint.
func TestRetainManifestsDeletesOldManifestsAndNothingElse(t *testing.T) {
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(21, 22))
	bucketDir := t.TempDir()
	b := open(t, fileURL(bucketDir))
	u := newUploader(t, b, func(c *uploader.Config) { c.GCGrace = time.Hour })
	var ms []*uploader.Manifest
	for epoch := uint64(1); epoch <= 5; epoch++ {
		dir, _ := checkpointDir(t, r, 2) // other tables each time
		m, _, err := u.Upload(ctx, dir, meta(epoch), nil)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	const orphan, leftover = "files/orphan", "manifests/00000000000000000006.json.18a7f3c2e1.tmp"
	for _, k := range []string{orphan, leftover} {
		if err := b.WriteAll(ctx, k, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	// Everything is older than the grace period.
	old := time.Now().Add(-2 * time.Hour)
	for _, k := range blobKeys(t, b, "") {
		if err := os.Chtimes(filepath.Join(bucketDir, filepath.FromSlash(k)), old, old); err != nil {
			t.Fatal(err)
		}
	}
	files, manifests := blobKeys(t, b, "files/"), blobKeys(t, b, "manifests/")
	if len(manifests) != 6 {
		t.Fatalf("manifests/ = %v, want 5 manifests and the leftover", manifests)
	}

	for _, keep := range []int{0, -1} {
		if st, err := u.RetainManifests(ctx, keep); !errors.Is(err, uploader.ErrInvalid) || st != (uploader.GCStats{}) {
			t.Fatalf("RetainManifests(%d) = %+v, %v; want ErrInvalid", keep, st, err)
		}
	}
	if got := blobKeys(t, b, "manifests/"); !slices.Equal(got, manifests) {
		t.Fatalf("a refused RetainManifests changed manifests/ to %v", got)
	}

	st, err := u.RetainManifests(ctx, 2)
	if err != nil || st != (uploader.GCStats{ManifestsDeleted: 3}) || u.Metrics().ManifestsDeleted != 3 {
		t.Fatalf("RetainManifests(2) = %+v, %v, metrics %+v; want 3 manifests deleted and nothing else", st, err, u.Metrics())
	}
	want := []string{"manifests/00000000000000000004.json", "manifests/00000000000000000005.json", leftover}
	if got := blobKeys(t, b, "manifests/"); !slices.Equal(got, want) {
		t.Fatalf("manifests/ = %v, want %v", got, want)
	}
	if got := blobKeys(t, b, "files/"); !slices.Equal(got, files) {
		t.Fatalf("RetainManifests changed files/:\n got %v\nwant %v", got, files)
	}
	if st, err := u.RetainManifests(ctx, 2); err != nil || st != (uploader.GCStats{}) {
		t.Fatalf("RetainManifests(2) again = %+v, %v; want nothing done", st, err)
	}

	// Retain collects what RetainManifests left: the blobs of checkpoints
	// 1 to 3 that 4 and 5 do not use, the orphan and the leftover.
	kept := referenced(ms[3:])
	st, err = u.Retain(ctx, 2)
	if err != nil || st.ManifestsDeleted != 0 || st.BlobsDeleted != len(files)-len(kept) || st.LeftoversDeleted != 1 {
		t.Fatalf("Retain(2) = %+v, %v; want %d blobs and the leftover deleted", st, err, len(files)-len(kept))
	}
	if got := blobKeys(t, b, "files/"); !slices.Equal(got, kept) || slices.Contains(got, orphan) {
		t.Fatalf("files/ after Retain = %v, want %v", got, kept)
	}
	for _, m := range ms[3:] {
		if probs, err := u.Verify(ctx, m); err != nil || len(probs) > 0 {
			t.Fatalf("checkpoint %d after retention: %v %v", m.Epoch, probs, err)
		}
	}
}

// TestRetainManifestsKeepsEveryRetainedChangelogCheckpointRestorable:
// three table checkpoints, with changelog checkpoints on the first two,
// followed each by retention as the daemon runs it (Retain after a table
// checkpoint, RetainManifests after a changelog one): after each, every
// retained checkpoint verifies and downloads to exactly its files, and a
// RetainManifests deletes no blob. The first chain's blobs stay until the
// Retain after the third table checkpoint collects them.
func TestRetainManifestsKeepsEveryRetainedChangelogCheckpointRestorable(t *testing.T) {
	const keep = 3
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(23, 24))
	b := open(t, fileURL(t.TempDir()))
	u := newUploader(t, b)
	want := map[uint64]map[string][]byte{} // each checkpoint's files
	var (
		prev  *uploader.Manifest
		chain []*uploader.Manifest // the first chain's manifests
		epoch uint64
	)
	check := func() []*uploader.Manifest {
		t.Helper()
		ms, err := u.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) != min(int(epoch), keep) || ms[len(ms)-1].Epoch != epoch {
			t.Fatalf("after checkpoint %d: %d checkpoints kept, want the newest %d", epoch, len(ms), keep)
		}
		for _, m := range ms {
			if probs, err := u.Verify(ctx, m); err != nil || len(probs) > 0 {
				t.Fatalf("after checkpoint %d: checkpoint %d: %v %v", epoch, m.Epoch, probs, err)
			}
			out := t.TempDir()
			if _, err := u.Download(ctx, m, out, nil); err != nil {
				t.Fatalf("after checkpoint %d: download of checkpoint %d: %v", epoch, m.Epoch, err)
			}
			sameFiles(t, out, want[m.Epoch])
		}
		return ms
	}
	table := func() {
		t.Helper()
		epoch++
		dir, files := checkpointDir(t, r, 3) // other tables each time
		m, _, err := u.Upload(ctx, dir, meta(epoch), nil)
		if err != nil {
			t.Fatal(err)
		}
		want[epoch], prev = files, m
		if _, err := u.Retain(ctx, keep); err != nil {
			t.Fatal(err)
		}
		check()
	}
	changelog := func() {
		t.Helper()
		epoch++
		seg := fmt.Sprintf("changelog/%06d.log", epoch)
		data := randomBytes(r, 1000+r.IntN(3000))
		cl := prev.NextChangelog()
		cl.Segments = append(cl.Segments, seg)
		m, _, err := u.UploadChangelog(ctx, prev, segmentDir(t, map[string][]byte{seg: data}), meta(epoch), cl, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		want[epoch] = maps.Clone(want[prev.Epoch])
		want[epoch][seg] = data
		prev = m
		before := blobKeys(t, b, "files/")
		st, err := u.RetainManifests(ctx, keep)
		if err != nil || st.ManifestsDeleted != max(0, min(int(epoch)-keep, 1)) {
			t.Fatalf("RetainManifests after checkpoint %d = %+v, %v", epoch, st, err)
		}
		if got := blobKeys(t, b, "files/"); !slices.Equal(got, before) {
			t.Fatalf("RetainManifests after checkpoint %d changed files/:\n got %v\nwant %v", epoch, got, before)
		}
		check()
	}

	table()
	chain = append(chain, prev)
	for range 5 {
		changelog()
		chain = append(chain, prev)
	}
	table()
	for range 5 {
		changelog()
	}
	// None of the first chain's manifests is kept; its blobs are.
	files := blobKeys(t, b, "files/")
	for _, k := range referenced(chain) {
		if !slices.Contains(files, k) {
			t.Fatalf("blob %s of the first chain collected before a table checkpoint's retention", k)
		}
	}
	table()
	ms := check()
	if got, want := blobKeys(t, b, "files/"), referenced(ms); !slices.Equal(got, want) {
		t.Fatalf("after the third table checkpoint's retention files/ holds %d blobs, the kept checkpoints reference %d:\n got %v\nwant %v",
			len(got), len(want), got, want)
	}
}
