package uploader_test

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/statedhq/stated/uploader"
)

// linkCheckpoint makes a checkpoint directory of dir's files, the tables
// hard-linked (as Pebble's Checkpoint does) and the others copied.
func linkCheckpoint(t *testing.T, dir string) string {
	t.Helper()
	cp := t.TempDir()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		dst := filepath.Join(cp, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if strings.HasSuffix(p, ".sst") {
			return os.Link(p, dst)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// TestPrehashedTablesAreNotReadAgainByUploadNorAfterARestart: a node
// that does not upload prehashes its live directory; when it uploads a
// checkpoint of the same tables, it reads only the files that are not
// tables. The cache file carries the checksums across a new Uploader.
func TestPrehashedTablesAreNotReadAgainByUploadNorAfterARestart(t *testing.T) {
	for _, bucket := range []string{"mem", "file"} {
		t.Run(bucket, func(t *testing.T) {
			ctx := testCtx(t)
			r := rand.New(rand.NewPCG(31, 32))
			live, files := checkpointDir(t, r, 12)
			var tableBytes, otherBytes int64
			for p, b := range files {
				if strings.HasSuffix(p, ".sst") {
					tableBytes += int64(len(b))
				} else {
					otherBytes += int64(len(b))
				}
			}
			b := open(t, "mem://")
			if bucket == "file" {
				b = open(t, fileURL(filepath.Join(t.TempDir(), "bucket")))
			}
			cacheFile := filepath.Join(t.TempDir(), "hashes.json")
			withCache := func(c *uploader.Config) { c.HashCacheFile = cacheFile }

			follower := newUploader(t, b, withCache)
			st, err := follower.Prehash(ctx, live)
			if err != nil || st.Tables != 12 || st.FilesHashed != 12 || st.BytesHashed != tableBytes {
				t.Fatalf("first Prehash = %+v, %v; want 12 tables, all hashed, %d bytes", st, err, tableBytes)
			}
			if st, err := follower.Prehash(ctx, live); err != nil || st.FilesHashed != 0 {
				t.Fatalf("second Prehash = %+v, %v; want nothing hashed", st, err)
			}
			_, us, err := follower.Upload(ctx, linkCheckpoint(t, live), meta(1), nil)
			if err != nil {
				t.Fatal(err)
			}
			if us.BytesHashed != otherBytes {
				t.Fatalf("upload after Prehash read %d bytes to hash (%d files); want only the %d bytes that are not tables", us.BytesHashed, us.FilesHashed, otherBytes)
			}

			// A restarted node: a new Uploader with the same cache file
			// prehashes nothing, and its upload reads no table. (Its
			// bucket is another one, holding no manifest to seed from.)
			restarted := newUploader(t, open(t, fileURL(filepath.Join(t.TempDir(), "other"))), withCache)
			if st, err := restarted.Prehash(ctx, live); err != nil || st.FilesHashed != 0 || st.Tables != 12 {
				t.Fatalf("Prehash after a restart = %+v, %v; want nothing hashed", st, err)
			}
			m, us, err := restarted.Upload(ctx, linkCheckpoint(t, live), meta(2), nil)
			if err != nil || us.BytesHashed != otherBytes {
				t.Fatalf("upload after a restart: %d bytes hashed, %v; want %d", us.BytesHashed, err, otherBytes)
			}
			if probs, err := restarted.Verify(ctx, m); err != nil || len(probs) > 0 {
				t.Fatalf("verify: %v %v", probs, err)
			}
		})
	}
}

// TestPrehashIgnoresABrokenCacheFile: a cache file that does not parse
// costs hashing, not an error.
func TestPrehashIgnoresABrokenCacheFile(t *testing.T) {
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(33, 34))
	live, _ := checkpointDir(t, r, 3)
	cacheFile := filepath.Join(t.TempDir(), "hashes.json")
	if err := os.WriteFile(cacheFile, []byte(`{"version":1,"tables":[{"name":"000010.sst"`), 0o600); err != nil {
		t.Fatal(err)
	}
	u := newUploader(t, open(t, "mem://"), func(c *uploader.Config) { c.HashCacheFile = cacheFile })
	if st, err := u.Prehash(ctx, live); err != nil || st.FilesHashed != 3 {
		t.Fatalf("Prehash = %+v, %v; want 3 tables hashed", st, err)
	}
	if st, err := newUploader(t, open(t, "mem://"), func(c *uploader.Config) { c.HashCacheFile = cacheFile }).Prehash(ctx, live); err != nil || st.FilesHashed != 0 {
		t.Fatalf("Prehash with the rewritten cache file = %+v, %v; want nothing hashed", st, err)
	}
}

// TestUploadFinishingCompletesTheManifestOrFailsIt: finish fills in what
// the manifest records once the files are sent; an error from it fails
// the upload, which then writes no manifest.
func TestUploadFinishingCompletesTheManifestOrFailsIt(t *testing.T) {
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(35, 36))
	dir, _ := checkpointDir(t, r, 3)
	u := newUploader(t, open(t, "mem://"))
	m, _, err := u.UploadFinishing(ctx, dir, meta(1), nil, func(m *uploader.Meta) error {
		m.Stats.Keys, m.Stats.Bytes = 42, 4242
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := u.Get(ctx, 1); err != nil || got.Stats.Keys != 42 || got.Stats.Bytes != 4242 || m.Stats.Keys != 42 {
		t.Fatalf("manifest stats = %+v, %v; want 42 keys, 4242 bytes", got, err)
	}
	boom := errors.New("count failed")
	if _, _, err := u.UploadFinishing(ctx, dir, meta(2), nil, func(*uploader.Meta) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("upload with a failing finish = %v, want %v", err, boom)
	}
	if _, err := u.Get(ctx, 2); !errors.Is(err, uploader.ErrNotFound) {
		t.Fatalf("a failed finish left a manifest: %v", err)
	}
}
