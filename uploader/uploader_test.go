package uploader_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gocloud.dev/blob"

	"github.com/statedhq/stated/internal/s3test"
	"github.com/statedhq/stated/uploader"
)

// roundTrip uploads a checkpoint, reads its manifest back, verifies it,
// downloads it and compares every byte; then downloads again and fetches
// nothing.
func roundTrip(t *testing.T, b *blob.Bucket, extra map[string][]byte) {
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(1, 2))
	dir, files := checkpointDir(t, r, 8)
	writeFiles(t, dir, extra)
	for p, c := range extra {
		files[p] = c
	}
	u := newUploader(t, b)
	var maxDone, lastTotal atomic.Int64
	m, st, err := u.Upload(ctx, dir, meta(1), func(done, total int64) {
		for old := maxDone.Load(); done > old && !maxDone.CompareAndSwap(old, done); old = maxDone.Load() {
		}
		lastTotal.Store(total)
	})
	if err != nil {
		t.Fatal(err)
	}
	// The two empty markers share one blob.
	if st.Files != len(files) || st.FilesUploaded != len(files)-1 || m.Epoch != 1 || len(m.Files) != len(files) {
		t.Fatalf("upload stats %+v, manifest %+v; want %d files, %d sent", st, m.Meta, len(files), len(files)-1)
	}
	// A first upload hashes every file: they all may need sending.
	if maxDone.Load() != st.Bytes || lastTotal.Load() != st.Bytes {
		t.Fatalf("progress reached %d/%d, want %d/%d", maxDone.Load(), lastTotal.Load(), st.Bytes, st.Bytes)
	}
	got, err := u.Get(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got.RaftIndex != 100 || got.RaftTerm != 2 || got.ClusterID != "c1" || got.Offsets[0] != m.Offsets[0] ||
		!got.CreatedAt.Equal(m.CreatedAt) || !reflect.DeepEqual(got.Stats, m.Stats) || !slices.Equal(got.Files, m.Files) {
		t.Fatalf("manifest read back = %+v, want %+v", got, m)
	}
	if probs, err := u.Verify(ctx, got); err != nil || len(probs) != 0 {
		t.Fatalf("verify: %v %v", probs, err)
	}
	out := filepath.Join(t.TempDir(), "restore")
	dst, err := u.Download(ctx, got, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if dst.FilesDownloaded != len(files) || dst.BytesDownloaded != m.Bytes() {
		t.Fatalf("download stats %+v", dst)
	}
	sameFiles(t, out, files)
	if dst, err := u.Download(ctx, got, out, nil); err != nil || dst.FilesDownloaded != 0 {
		t.Fatalf("second download: %+v, %v; want nothing fetched", dst, err)
	}
}

func TestRoundTripFile(t *testing.T) {
	bucketDir := filepath.Join(t.TempDir(), "not", "yet", "there")
	roundTrip(t, open(t, fileURL(bucketDir)), nil)
	// No sidecar or temporary files are left in the bucket's directory.
	err := filepath.WalkDir(bucketDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && (strings.HasSuffix(p, ".attrs") || strings.HasSuffix(p, ".tmp")) {
			t.Errorf("stray file %s in the bucket", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRoundTripMem(t *testing.T) { roundTrip(t, open(t, "mem://"), nil) }

func TestRoundTripWithPrefixStaysUnderIt(t *testing.T) {
	bucketDir := t.TempDir()
	roundTrip(t, open(t, fileURL(bucketDir)+"?prefix=team-a/ckpt"), nil)
	entries, err := os.ReadDir(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "team-a" {
		t.Fatalf("bucket root holds %v, want only team-a/", entries)
	}
	if _, err := os.Stat(filepath.Join(bucketDir, "team-a", "ckpt", "manifests", "00000000000000000001.json")); err != nil {
		t.Fatal(err)
	}
}

// s3Server starts gofakes3, an S3-compatible server, on loopback and
// returns the bucket URL of a new bucket in it.
func s3Server(t *testing.T) string {
	t.Helper()
	bucket := s3test.Serve(t, nil)
	s3test.SetEnv(t)
	return bucket
}

// TestRoundTripS3 runs against gofakes3 on loopback, with a file large
// enough for a multipart upload.
func TestRoundTripS3(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	roundTrip(t, open(t, s3Server(t)+"&prefix=p"), map[string][]byte{"000999.sst": randomBytes(r, 12<<20)})
}

// TestIncrementalUploadSendsOnlyNewFiles counts what reaches the bucket
// through a counting wrapper, and what UploadStats say.
func TestIncrementalUploadSendsOnlyNewFiles(t *testing.T) {
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(3, 4))
	b, fb := newFaultBucket(open(t, "mem://"), nil)
	u := newUploader(t, b)
	dir, _ := checkpointDir(t, r, 20)
	if _, _, err := u.Upload(ctx, dir, meta(1), nil); err != nil {
		t.Fatal(err)
	}
	writes, fileWrites, fileBytes := fb.writes.Load(), fb.fileWrites.Load(), fb.fileBytes.Load()
	// The next checkpoint: two new tables, a changed WAL, one table gone.
	writeFiles(t, dir, map[string][]byte{
		"000099.sst": randomBytes(r, 7000), "000100.sst": randomBytes(r, 3000), "wal/000002.log": randomBytes(r, 6000),
	})
	if err := os.Remove(filepath.Join(dir, "000010.sst")); err != nil {
		t.Fatal(err)
	}
	m, st, err := u.Upload(ctx, dir, meta(2), nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.FilesUploaded != 3 || st.BytesUploaded != 16000 || st.Files != 26 {
		t.Fatalf("incremental upload stats %+v, want 3 of 26 files sent, 16000 bytes", st)
	}
	if n := fb.fileWrites.Load() - fileWrites; n != 3 {
		t.Fatalf("%d blobs reached the bucket, want 3", n)
	}
	if n := fb.fileBytes.Load() - fileBytes; n != 16000 {
		t.Fatalf("%d blob bytes reached the bucket, want 16000", n)
	}
	if n := fb.writes.Load() - writes; n != 4 {
		t.Fatalf("%d writes reached the bucket, want 3 blobs and the manifest", n)
	}
	if slices.ContainsFunc(m.Files, func(f uploader.File) bool { return f.Path == "000010.sst" }) {
		t.Fatal("the removed table is still listed")
	}
	// Nothing changed: nothing is sent.
	if _, st, err := u.Upload(ctx, dir, meta(3), nil); err != nil || st.FilesUploaded != 0 {
		t.Fatalf("unchanged upload: %+v, %v", st, err)
	}
}

// TestUnchangedTablesAreNotHashedAgain: the second upload reads only the
// new table and the files that are not tables; so does a new Uploader
// (a restarted daemon), whose cache is seeded from the newest manifest.
func TestUnchangedTablesAreNotHashedAgain(t *testing.T) {
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(21, 22))
	b := open(t, "mem://")
	dir, _ := checkpointDir(t, r, 10) // 10 tables, 5 other files
	u := newUploader(t, b)
	if _, _, err := u.Upload(ctx, dir, meta(1), nil); err != nil {
		t.Fatal(err)
	}
	if got := u.Metrics().FilesHashed; got != 15 {
		t.Fatalf("first upload hashed %d files, want 15", got)
	}
	writeFiles(t, dir, map[string][]byte{"000050.sst": randomBytes(r, 4000)})
	if _, _, err := u.Upload(ctx, dir, meta(2), nil); err != nil {
		t.Fatal(err)
	}
	if got := u.Metrics().FilesHashed - 15; got != 6 {
		t.Fatalf("second upload hashed %d files, want the new table and the 5 others", got)
	}
	restarted := newUploader(t, b)
	if _, _, err := restarted.Upload(ctx, dir, meta(3), nil); err != nil {
		t.Fatal(err)
	}
	if mt := restarted.Metrics(); mt.FilesHashed != 5 || mt.HashCacheHits != 11 {
		t.Fatalf("after a restart: %d files hashed, %d from the cache; want 5 and 11", mt.FilesHashed, mt.HashCacheHits)
	}
}

// TestWrongSeededChecksumIsCaughtBeforeUpload: a table whose content
// changed under the same name, size, inode and mtime (which Pebble never
// does) gets a wrong checksum from the seeded cache; if its blob must be
// sent, the upload reads it again, refuses, and the next one succeeds. A
// bucket that checks MD5s (mem://) reads it for its MD5 first; a file://
// one, which needs no MD5, checks the SHA-256 of the bytes it sends.
func TestWrongSeededChecksumIsCaughtBeforeUpload(t *testing.T) {
	for _, bucket := range []string{"mem", "file"} {
		t.Run(bucket, func(t *testing.T) {
			ctx := testCtx(t)
			r := rand.New(rand.NewPCG(23, 24))
			b := open(t, "mem://")
			if bucket == "file" {
				b = open(t, fileURL(filepath.Join(t.TempDir(), "bucket")))
			}
			dir, _ := checkpointDir(t, r, 3)
			m, _, err := newUploader(t, b).Upload(ctx, dir, meta(1), nil)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, "000010.sst")
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(randomBytes(r, int(fi.Size()))); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(m.Files, func(f uploader.File) bool { return f.Path == "000010.sst" })
			if err := b.Delete(ctx, uploader.BlobKey(m.Files[i].SHA256)); err != nil {
				t.Fatal(err)
			}
			u := newUploader(t, b)
			if _, _, err := u.Upload(ctx, dir, meta(2), nil); err == nil || !strings.Contains(err.Error(), "seeded") {
				t.Fatalf("upload with a wrong seeded checksum: %v", err)
			}
			if _, err := u.Get(ctx, 2); !errors.Is(err, uploader.ErrNotFound) {
				t.Fatalf("a failed upload left a manifest: %v", err)
			}
			m2, _, err := u.Upload(ctx, dir, meta(3), nil)
			if err != nil {
				t.Fatal(err)
			}
			if probs, err := u.Verify(ctx, m2); err != nil || len(probs) > 0 {
				t.Fatalf("verify: %v %v", probs, err)
			}
		})
	}
}

func TestCancelledUploadWritesNoManifest(t *testing.T) {
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	r := rand.New(rand.NewPCG(25, 26))
	b := open(t, "mem://")
	u := newUploader(t, b, func(c *uploader.Config) { c.Workers = 1 })
	dir, _ := checkpointDir(t, r, 10)
	_, _, err := u.Upload(ctx, dir, meta(1), func(done, total int64) { cancel() })
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "checkpoint 1") {
		t.Fatalf("cancelled upload: %v", err)
	}
	if keys := blobKeys(t, b, "manifests/"); len(keys) != 0 {
		t.Fatalf("manifests after a cancelled upload: %v", keys)
	}
}

// TestIncrementalDownloadFetchesOnlyWhatDiffers.
func TestIncrementalDownloadFetchesOnlyWhatDiffers(t *testing.T) {
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(27, 28))
	u := newUploader(t, open(t, "mem://"))
	dir, files := checkpointDir(t, r, 6)
	m, _, err := u.Upload(ctx, dir, meta(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if _, err := u.Download(ctx, m, out, nil); err != nil {
		t.Fatal(err)
	}
	// One file damaged locally, one gone, one extra file left alone.
	writeFiles(t, out, map[string][]byte{"000011.sst": []byte("garbage"), "unrelated": []byte("x")})
	if err := os.Remove(filepath.Join(out, "wal", "000002.log")); err != nil {
		t.Fatal(err)
	}
	st, err := u.Download(ctx, m, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.FilesDownloaded != 2 || st.BytesDownloaded != int64(len(files["000011.sst"])+len(files["wal/000002.log"])) {
		t.Fatalf("incremental download %+v, want the 2 files that differ", st)
	}
	files["unrelated"] = []byte("x")
	sameFiles(t, out, files)
}

func TestListGetLatestAndSavepoints(t *testing.T) {
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(29, 30))
	b := open(t, "mem://")
	u := newUploader(t, b)
	dir, _ := checkpointDir(t, r, 2)
	for epoch := uint64(1); epoch <= 4; epoch++ {
		writeFiles(t, dir, map[string][]byte{fmt.Sprintf("%06d.sst", 100+epoch): randomBytes(r, 100)})
		if _, _, err := u.Upload(ctx, dir, meta(epoch), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.Savepoint(ctx, 2, "v1.4_rc-1"); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		epoch uint64
		name  string
		want  error
		msg   string
	}{
		"name in use":          {3, "v1.4_rc-1", uploader.ErrInvalid, "exists already"},
		"epoch pinned already": {2, "other", uploader.ErrInvalid, "pinned already"},
		"unknown epoch":        {9, "nine", uploader.ErrNotFound, "checkpoint 9"},
		"empty name":           {1, "", uploader.ErrInvalid, "1 to 128"},
		"slash":                {1, "a/b", uploader.ErrInvalid, "invalid character '/'"},
		"space":                {1, "a b", uploader.ErrInvalid, "invalid character ' '"},
		"too long":             {1, strings.Repeat("x", 129), uploader.ErrInvalid, "1 to 128"},
		"dot dot":              {1, "..", uploader.ErrInvalid, "reserved"},
	} {
		t.Run(name, func(t *testing.T) {
			if err := u.Savepoint(ctx, tc.epoch, tc.name); !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Savepoint(%d, %q) = %v, want %v with %q", tc.epoch, tc.name, err, tc.want, tc.msg)
			}
		})
	}
	if err := u.Savepoint(ctx, 1, strings.Repeat("x", 128)); err != nil {
		t.Fatalf("a 128-character name: %v", err)
	}
	ms, err := u.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var epochs []uint64
	for _, m := range ms {
		epochs = append(epochs, m.Epoch)
	}
	if !slices.Equal(epochs, []uint64{1, 2, 3, 4}) || ms[1].Savepoint != "v1.4_rc-1" || ms[2].Savepoint != "" {
		t.Fatalf("List = epochs %v, savepoints %q %q", epochs, ms[1].Savepoint, ms[2].Savepoint)
	}
	if m, err := u.Get(ctx, 2); err != nil || m.Savepoint != "v1.4_rc-1" {
		t.Fatalf("Get(2) = %+v, %v; want it marked as the savepoint", m, err)
	}
	if m, err := u.Latest(ctx); err != nil || m.Epoch != 4 {
		t.Fatalf("Latest = %+v, %v", m, err)
	}
	if m, err := u.GetSavepoint(ctx, "v1.4_rc-1"); err != nil || m.Epoch != 2 {
		t.Fatalf("GetSavepoint = %+v, %v", m, err)
	}
	if _, err := u.GetSavepoint(ctx, "nope"); !errors.Is(err, uploader.ErrNotFound) {
		t.Fatalf("GetSavepoint of an unknown name: %v", err)
	}

	// Delete: a pinned checkpoint is refused until its savepoint goes.
	if err := u.Delete(ctx, 2, true); !errors.Is(err, uploader.ErrPinned) || !strings.Contains(err.Error(), `"v1.4_rc-1"`) {
		t.Fatalf("Delete of a savepoint: %v", err)
	}
	if err := u.Delete(ctx, 9, false); !errors.Is(err, uploader.ErrNotFound) {
		t.Fatalf("Delete of an unknown checkpoint: %v", err)
	}
	// The newest checkpoint only with force.
	if err := u.Delete(ctx, 4, false); !errors.Is(err, uploader.ErrNewest) || !strings.Contains(err.Error(), "checkpoint 4 is the newest") {
		t.Fatalf("Delete of the newest checkpoint: %v, want ErrNewest", err)
	}
	if _, err := u.Get(ctx, 4); err != nil {
		t.Fatalf("the refused Delete removed checkpoint 4: %v", err)
	}
	if err := u.Delete(ctx, 3, false); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Get(ctx, 3); !errors.Is(err, uploader.ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
	// Retention drops the manifest of 2; the savepoint keeps it listed.
	if _, err := u.Retain(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if m, err := u.Get(ctx, 2); err != nil || m.Savepoint != "v1.4_rc-1" {
		t.Fatalf("Get(2) from its savepoint = %+v, %v", m, err)
	}
	if err := u.DeleteSavepoint(ctx, "v1.4_rc-1"); err != nil {
		t.Fatal(err)
	}
	if err := u.DeleteSavepoint(ctx, "v1.4_rc-1"); !errors.Is(err, uploader.ErrNotFound) {
		t.Fatalf("second DeleteSavepoint: %v", err)
	}
	if _, err := u.Get(ctx, 2); !errors.Is(err, uploader.ErrNotFound) {
		t.Fatalf("Get(2) after its savepoint and manifest went: %v", err)
	}
}

func TestConfig(t *testing.T) {
	if _, err := uploader.New(uploader.Config{}); !errors.Is(err, uploader.ErrInvalid) || !strings.Contains(err.Error(), "Bucket") {
		t.Fatalf("New without a bucket: %v", err)
	}
	b := open(t, "mem://")
	for name, c := range map[string]uploader.Config{
		"workers":  {Bucket: b, Workers: -1},
		"attempts": {Bucket: b, MaxAttempts: -1},
		"backoff":  {Bucket: b, Backoff: -time.Second},
	} {
		if err := c.Validate(); !errors.Is(err, uploader.ErrInvalid) {
			t.Errorf("%s: Validate = %v", name, err)
		}
	}
	d := uploader.DefaultConfig()
	if d.Workers != 4 || d.MaxAttempts != 5 || d.Backoff != 100*time.Millisecond || d.GCGrace != 10*time.Minute {
		t.Fatalf("DefaultConfig = %+v", d)
	}
}
