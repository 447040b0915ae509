package uploader_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"gocloud.dev/blob"

	"github.com/statedhq/stated/uploader"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// writeFiles writes files (slash path -> content) into dir.
func writeFiles(t testing.TB, dir string, files map[string][]byte) {
	t.Helper()
	for p, b := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
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

// checkpointDir makes a directory shaped like a Pebble checkpoint:
// tables, a MANIFEST, an OPTIONS file, a WAL in a subdirectory and two
// empty marker files (the same content twice).
func checkpointDir(t testing.TB, r *rand.Rand, tables int) (string, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	files := map[string][]byte{
		"MANIFEST-000001":                        randomBytes(r, 300),
		"OPTIONS-000003":                         []byte("[Version]\n"),
		"marker.format-version.000001.013":       nil,
		"marker.manifest.000001.MANIFEST-000001": nil,
		"wal/000002.log":                         randomBytes(r, 5000),
	}
	for i := range tables {
		files[fmt.Sprintf("%06d.sst", 10+i)] = randomBytes(r, 1000+r.IntN(50_000))
	}
	writeFiles(t, dir, files)
	return dir, files
}

// readDir returns the files under dir, by slash path.
func readDir(t testing.TB, dir string) map[string][]byte {
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
	return got
}

// sameFiles fails unless dir holds exactly files.
func sameFiles(t testing.TB, dir string, files map[string][]byte) {
	t.Helper()
	got := readDir(t, dir)
	if len(got) != len(files) {
		t.Fatalf("%s holds %d files, want %d", dir, len(got), len(files))
	}
	for p, b := range files {
		if g, ok := got[p]; !ok || !bytes.Equal(g, b) {
			t.Fatalf("file %s differs after the round trip", p)
		}
	}
}

func meta(epoch uint64) uploader.Meta {
	return uploader.Meta{
		Epoch: epoch, RaftIndex: 100 * epoch, RaftTerm: 2, ClusterID: "c1", CreatedAt: time.Unix(1_700_000_000, 0).UTC(),
		Offsets: []uploader.Offset{{Group: "g", Topic: "t", Partition: 0, Offset: int64(epoch)}},
		Stats: uploader.Stats{Keys: 10, Bytes: 1000, Windows: []uploader.WindowStats{
			{Namespace: "clicks", Watermark: 60_000, MaxEventTime: 65_000, Pending: 3, OpenWindows: 7}}},
	}
}

// newUploader returns an Uploader with fast retries and no GC grace.
func newUploader(t testing.TB, b *blob.Bucket, cfg ...func(*uploader.Config)) *uploader.Uploader {
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

func open(t testing.TB, u string) *blob.Bucket {
	t.Helper()
	b, err := uploader.OpenBucket(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func fileURL(dir string) string { return (&url.URL{Scheme: "file", Path: dir}).String() }

// blobKeys lists the keys under prefix.
func blobKeys(t testing.TB, b *blob.Bucket, prefix string) []string {
	t.Helper()
	var out []string
	it := b.List(&blob.ListOptions{Prefix: prefix})
	for {
		obj, err := it.Next(context.Background())
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, obj.Key)
	}
	slices.Sort(out)
	return out
}

// damage flips a byte in the middle of f's blob in the file:// bucket
// at bucketDir; its size stays.
func damage(t testing.TB, bucketDir string, f uploader.File) {
	t.Helper()
	p := filepath.Join(bucketDir, filepath.FromSlash(f.Blob()))
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// referenced returns the blob keys the manifests reference, sorted.
func referenced(ms []*uploader.Manifest) []string {
	set := map[string]bool{}
	for _, m := range ms {
		for _, f := range m.Files {
			set[f.Blob()] = true
		}
	}
	var out []string
	for k := range set {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
