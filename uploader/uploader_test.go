package uploader_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"gocloud.dev/blob"

	"github.com/statedhq/stated/uploader"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// writeFiles writes files (relative path -> content) into dir.
func writeFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for p, b := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// checkpointDir makes a directory shaped like a Pebble checkpoint.
func checkpointDir(t *testing.T, r *rand.Rand, tables int) (string, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	files := map[string][]byte{
		"MANIFEST-000001":                        randomBytes(r, 300),
		"OPTIONS-000003":                         []byte("[Version]\n"),
		"marker.manifest.000001.MANIFEST-000001": nil,
		"wal/000002.log":                         randomBytes(r, 5000),
	}
	for i := range tables {
		files[fmt.Sprintf("%06d.sst", 10+i)] = randomBytes(r, 1000+r.IntN(50_000))
	}
	writeFiles(t, dir, files)
	return dir, files
}

func meta(epoch uint64) uploader.Meta {
	return uploader.Meta{
		Epoch: epoch, RaftIndex: 100 * epoch, RaftTerm: 2, ClusterID: "c1", CreatedAt: time.Unix(1_700_000_000, 0).UTC(),
		Offsets: []uploader.Offset{{Group: "g", Topic: "t", Partition: 0, Offset: int64(epoch)}},
		Stats:   uploader.Stats{Keys: 10, Bytes: 1000},
	}
}

func newUploader(t *testing.T, b *blob.Bucket, cfg ...func(*uploader.Config)) *uploader.Uploader {
	t.Helper()
	c := uploader.Config{Bucket: b, Backoff: time.Millisecond, GCGrace: -1}
	for _, f := range cfg {
		f(&c)
	}
	u, err := uploader.New(c)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func open(t *testing.T, u string) *blob.Bucket {
	t.Helper()
	b, err := uploader.OpenBucket(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// sameFiles fails unless dir holds exactly files.
func sameFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	got := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		got[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(files) {
		t.Fatalf("%d files, want %d", len(got), len(files))
	}
	for p, b := range files {
		if !bytes.Equal(got[p], b) {
			t.Fatalf("file %s differs after the round trip", p)
		}
	}
}

func roundTrip(t *testing.T, b *blob.Bucket) {
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(1, 2))
	dir, files := checkpointDir(t, r, 8)
	u := newUploader(t, b)
	m, st, err := u.Upload(ctx, dir, meta(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Files != len(files) || st.FilesUploaded != len(files) || m.Epoch != 1 || len(m.Files) != len(files) {
		t.Fatalf("upload stats %+v, manifest %+v", st, m.Meta)
	}
	got, err := u.Get(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got.RaftIndex != 100 || got.ClusterID != "c1" || got.Offsets[0].Offset != 1 || !got.CreatedAt.Equal(m.CreatedAt) {
		t.Fatalf("manifest read back = %+v", got.Meta)
	}
	if probs, err := u.Verify(ctx, got); err != nil || len(probs) != 0 {
		t.Fatalf("verify: %v %v", probs, err)
	}
	out := filepath.Join(t.TempDir(), "restore")
	dst, err := u.Download(ctx, got, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if dst.FilesDownloaded != len(files) {
		t.Fatalf("download stats %+v", dst)
	}
	sameFiles(t, out, files)
	// A second download finds everything in place.
	if dst, err := u.Download(ctx, got, out, nil); err != nil || dst.FilesDownloaded != 0 {
		t.Fatalf("second download: %+v, %v; want nothing fetched", dst, err)
	}
}

func TestRoundTripFile(t *testing.T) {
	roundTrip(t, open(t, (&url.URL{Scheme: "file", Path: t.TempDir()}).String()))
}

func TestRoundTripMem(t *testing.T) { roundTrip(t, open(t, "mem://")) }

// TestRoundTripS3 runs against gofakes3, an S3-compatible server, on
// loopback.
func TestRoundTripS3(t *testing.T) {
	backend := s3mem.New()
	if err := backend.CreateBucket("ckpt"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	t.Cleanup(srv.Close)
	t.Setenv("AWS_ACCESS_KEY_ID", "k")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s")
	roundTrip(t, open(t, "s3://ckpt?endpoint="+srv.URL+"&use_path_style=true&region=us-east-1&disable_https=true"))
}

// TestRoundTripAzure runs against Azurite, Azure Storage's emulator (npm
// package azurite), when it is installed; .ci/run installs it with npm.
func TestRoundTripAzure(t *testing.T) {
	bin, err := exec.LookPath("azurite-blob")
	if err != nil {
		t.Skip("Azure: Azurite is not installed (no azurite-blob on PATH); `npm install -g azurite` to run this test")
	}
	port := freePort(t)
	loc := t.TempDir()
	cmd := exec.Command(bin, "--blobHost", "127.0.0.1", "--blobPort", port, "--location", loc, "--skipApiVersionCheck", "--loose")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Azurite's well-known development account.
	t.Setenv("AZURE_STORAGE_ACCOUNT", "devstoreaccount1")
	t.Setenv("AZURE_STORAGE_KEY", "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
	ctx := testCtx(t)
	u := "azblob://ckpt?protocol=http&domain=127.0.0.1:" + port + "&localemu=true"
	var b *blob.Bucket
	for deadline := time.Now().Add(20 * time.Second); ; {
		if b, err = uploader.OpenBucket(ctx, u); err == nil {
			if err = createContainer(ctx, b); err == nil {
				break
			}
			b.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("Azurite on port %s: %v", port, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Cleanup(func() { b.Close() })
	roundTrip(t, b)
}

// createContainer creates the bucket's container: Azurite starts with
// none, and the gocloud driver does not create them.
func createContainer(ctx context.Context, b *blob.Bucket) error {
	var c *container.Client
	if !b.As(&c) {
		return errors.New("not an Azure bucket")
	}
	_, err := c.Create(ctx, nil)
	return err
}

func freePort(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(nil)
	u, _ := url.Parse(srv.URL)
	srv.Close()
	return u.Port()
}

// TestIncrementalUploadSendsOnlyNewFiles counts what reaches the bucket.
func TestIncrementalUploadSendsOnlyNewFiles(t *testing.T) {
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(3, 4))
	b, fb := newFaultBucket(open(t, "mem://"), &faults{rng: r})
	u := newUploader(t, b)
	dir, _ := checkpointDir(t, r, 20)
	if _, _, err := u.Upload(ctx, dir, meta(1), nil); err != nil {
		t.Fatal(err)
	}
	writesBefore, bytesBefore := fb.writes.Load(), fb.written.Load()
	// The next checkpoint: one new table, a changed WAL, one table gone.
	writeFiles(t, dir, map[string][]byte{"000099.sst": randomBytes(r, 7000), "wal/000002.log": randomBytes(r, 6000)})
	os.Remove(filepath.Join(dir, "000010.sst"))
	m, st, err := u.Upload(ctx, dir, meta(2), nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.FilesUploaded != 2 || st.BytesUploaded != 13000 {
		t.Fatalf("incremental upload stats %+v, want the 2 new files, 13000 bytes", st)
	}
	// Two blobs and the manifest were written, nothing else.
	if w := fb.writes.Load() - writesBefore; w != 3 {
		t.Fatalf("%d writes reached the bucket, want 3", w)
	}
	if n := fb.written.Load() - bytesBefore; n < 13000 || n > 13000+20_000 {
		t.Fatalf("%d bytes reached the bucket, want the 13000 of the new files plus the manifest", n)
	}
	if slices.ContainsFunc(m.Files, func(f uploader.File) bool { return f.Path == "000010.sst" }) {
		t.Fatal("the removed table is still listed")
	}
}

// TestFaultsNeverLeaveAManifestReferringToAMissingOrWrongFile uploads an
// evolving checkpoint through a bucket that fails, truncates and delays
// writes and reads at random: some uploads fail, and every manifest that
// exists verifies clean.
func TestFaultsNeverLeaveAManifestReferringToAMissingOrWrongFile(t *testing.T) {
	ctx := testCtx(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 5))
	inner := open(t, "mem://")
	b, _ := newFaultBucket(inner, &faults{rng: rand.New(rand.NewPCG(seed, 6)), fail: 0.15, trunc: 0.15, delay: 100 * time.Microsecond})
	u := newUploader(t, b, func(c *uploader.Config) { c.MaxAttempts = 2 })
	dir, _ := checkpointDir(t, r, 10)
	var ok, failed int
	for epoch := uint64(1); epoch <= 30; epoch++ {
		writeFiles(t, dir, map[string][]byte{fmt.Sprintf("%06d.sst", 100+epoch): randomBytes(r, 2000+r.IntN(20_000)), "wal/000002.log": randomBytes(r, 3000)})
		if _, _, err := u.Upload(ctx, dir, meta(epoch), nil); err != nil {
			failed++
			if !strings.Contains(err.Error(), "checkpoint ") {
				t.Errorf("epoch %d: error %q does not name the checkpoint", epoch, err)
			}
			continue
		}
		ok++
	}
	t.Logf("%d uploads succeeded, %d failed", ok, failed)
	if ok == 0 || failed == 0 {
		t.Fatalf("%d succeeded and %d failed: the fault rates exercise too little", ok, failed)
	}
	// Check through a clean view of the same bucket.
	clean := newUploader(t, inner)
	ms, err := clean.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != ok {
		t.Fatalf("%d manifests for %d successful uploads", len(ms), ok)
	}
	for _, m := range ms {
		if probs, err := clean.Verify(ctx, m); err != nil || len(probs) > 0 {
			t.Fatalf("checkpoint %d: %v %v", m.Epoch, probs, err)
		}
	}
}

// TestTransientFaultsAreRetried: with enough attempts, every upload
// succeeds through a bucket that fails a third of the writes.
func TestTransientFaultsAreRetried(t *testing.T) {
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(7, 8))
	inner := open(t, "mem://")
	b, _ := newFaultBucket(inner, &faults{rng: rand.New(rand.NewPCG(9, 10)), fail: 0.3, trunc: 0.1})
	u := newUploader(t, b, func(c *uploader.Config) { c.MaxAttempts = 12 })
	dir, files := checkpointDir(t, r, 10)
	for epoch := uint64(1); epoch <= 5; epoch++ {
		if _, _, err := u.Upload(ctx, dir, meta(epoch), nil); err != nil {
			t.Fatalf("epoch %d: %v", epoch, err)
		}
	}
	m, err := newUploader(t, inner).Get(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if _, err := newUploader(t, inner).Download(ctx, m, out, nil); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, out, files)
}

// TestRetainKeepsExactlyWhatRetainedManifestsAndSavepointsReference.
func TestRetainKeepsExactlyWhatRetainedManifestsAndSavepointsReference(t *testing.T) {
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(11, 12))
	b := open(t, "mem://")
	u := newUploader(t, b)
	dir, _ := checkpointDir(t, r, 5)
	for epoch := uint64(1); epoch <= 12; epoch++ {
		// Each checkpoint adds a table and drops the oldest, as
		// compactions do.
		writeFiles(t, dir, map[string][]byte{fmt.Sprintf("%06d.sst", 100+epoch): randomBytes(r, 3000), "wal/000002.log": randomBytes(r, 500)})
		tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
		slices.Sort(tables)
		os.Remove(tables[0])
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
	want := map[string]bool{}
	for _, m := range ms {
		epochs = append(epochs, m.Epoch)
		for _, f := range m.Files {
			want[uploader.BlobKey(f.SHA256)] = true
		}
	}
	if fmt.Sprint(epochs) != "[4 10 11 12]" {
		t.Fatalf("kept checkpoints %v, want the savepoint 4 and the last three", epochs)
	}
	if ms[0].Savepoint != "before-deploy" {
		t.Fatalf("checkpoint 4 savepoint = %q", ms[0].Savepoint)
	}
	got := map[string]bool{}
	it := b.List(&blob.ListOptions{Prefix: "files/"})
	for {
		obj, err := it.Next(ctx)
		if err != nil {
			break
		}
		got[obj.Key] = true
	}
	if len(got) != len(want) {
		t.Fatalf("bucket holds %d blobs, the kept manifests reference %d", len(got), len(want))
	}
	for k := range want {
		if !got[k] {
			t.Fatalf("referenced blob %s was collected", k)
		}
	}
}

func TestGCGraceKeepsYoungUnreferencedBlobs(t *testing.T) {
	ctx := testCtx(t)
	b := open(t, "mem://")
	if err := b.WriteAll(ctx, "files/orphan", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	u := newUploader(t, b, func(c *uploader.Config) { c.GCGrace = time.Hour })
	st, err := u.Retain(ctx, 1)
	if err != nil || st.BlobsKept != 1 || st.BlobsDeleted != 0 {
		t.Fatalf("retain with grace: %+v, %v", st, err)
	}
	st, err = newUploader(t, b).Retain(ctx, 1)
	if err != nil || st.BlobsDeleted != 1 {
		t.Fatalf("retain without grace: %+v, %v", st, err)
	}
}

func TestBadInputGetsClearErrors(t *testing.T) {
	ctx := testCtx(t)
	for _, tc := range []struct{ url, want string }{
		{"ftp://host/x", `unknown scheme "ftp"; supported: file://, mem://, s3://, gs://, azblob://`},
		{"file://", "file:// needs an absolute path"},
		{"::", "missing protocol scheme"},
	} {
		if _, err := uploader.OpenBucket(ctx, tc.url); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("OpenBucket(%q) = %v, want %q", tc.url, err, tc.want)
		}
	}
	bucketDir := t.TempDir()
	b := open(t, (&url.URL{Scheme: "file", Path: bucketDir}).String())
	u := newUploader(t, b)
	if _, err := u.Get(ctx, 7); !errors.Is(err, uploader.ErrNotFound) {
		t.Errorf("Get of an unknown epoch: %v", err)
	}
	if _, err := u.Latest(ctx); !errors.Is(err, uploader.ErrNotFound) {
		t.Errorf("Latest of an empty bucket: %v", err)
	}
	if err := b.WriteAll(ctx, "manifests/00000000000000000009.json", []byte(`{"format_version": 2, "epoch": 9}`), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Get(ctx, 9); !errors.Is(err, uploader.ErrFormat) || !strings.Contains(err.Error(), "format version 2") {
		t.Errorf("Get of a newer format: %v", err)
	}
	b.Delete(ctx, "manifests/00000000000000000009.json")
	for _, name := range []string{"", "a/b", strings.Repeat("x", 129)} {
		if err := u.Savepoint(ctx, 1, name); !errors.Is(err, uploader.ErrInvalid) {
			t.Errorf("Savepoint(%q) = %v, want ErrInvalid", name, err)
		}
	}

	// A corrupt blob: Download fails naming the file, its blob and the
	// checkpoint; Verify reports it.
	r := rand.New(rand.NewPCG(13, 14))
	dir, _ := checkpointDir(t, r, 3)
	m, _, err := u.Upload(ctx, dir, meta(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	var victim uploader.File
	for _, f := range m.Files {
		if strings.HasSuffix(f.Path, ".sst") {
			victim = f
			break
		}
	}
	p := filepath.Join(bucketDir, "files", victim.SHA256)
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 0xFF
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	_, err = u.Download(ctx, m, out, nil)
	if err == nil || !strings.Contains(err.Error(), "checkpoint 1: file "+victim.Path+" (blob files/"+victim.SHA256+")") || !strings.Contains(err.Error(), "corrupt: SHA-256") {
		t.Fatalf("download of a corrupt blob: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, victim.Path)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the corrupt file was written to the restore dir: %v", err)
	}
	probs, err := u.Verify(ctx, m)
	if err != nil || len(probs) != 1 || probs[0].Path != victim.Path {
		t.Fatalf("verify = %+v, %v; want the corrupt file", probs, err)
	}
}
