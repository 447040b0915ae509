//go:build linux

package uploader_test

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"gocloud.dev/blob"
	"golang.org/x/sys/unix"

	"github.com/statedhq/stated/uploader"
)

// dirtyPages returns how many of p's pages in the page cache are
// dirty (written, not yet on disk), by cachestat(2).
func dirtyPages(t *testing.T, p string) uint64 {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cs unix.Cachestat_t
	if err := unix.Cachestat(uint(f.Fd()), &unix.CachestatRange{}, &cs, 0); err != nil {
		t.Skipf("cachestat(2) unavailable: %v", err)
	}
	return cs.Dirty + cs.Writeback
}

// TestABlobReusedFromAKilledUploadIsDurableBeforeTheManifest: a
// leader killed mid-upload (TestLeaderKilledMidUploadLeavesNoManifest)
// leaves blobs renamed into place in a file:// bucket but never fsynced
// (syncFiles runs after all writes, or on the failure path, neither of
// which a SIGKILL reaches). The next Upload lists them as held, does not
// send them again, and writes and fsyncs its manifest. The manifest must
// not be durable while a blob it lists is not: a power loss then leaves a
// completed checkpoint that does not restore.
func TestABlobReusedFromAKilledUploadIsDurableBeforeTheManifest(t *testing.T) {
	ctx := testCtx(t)
	bdir := t.TempDir()
	b := open(t, fileURL(bdir))
	r := rand.New(rand.NewPCG(11, 12))
	dir, files := checkpointDir(t, r, 3)

	// What the killed upload left: one table's blob written through the
	// bucket, as writeBlob writes it, and never synced.
	data := files["000010.sst"]
	sum, md := sha256.Sum256(data), md5.Sum(data)
	key := uploader.BlobKey(hex.EncodeToString(sum[:]))
	if err := b.WriteAll(ctx, key, data, &blob.WriterOptions{ContentMD5: md[:]}); err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(bdir, filepath.FromSlash(key))
	if dirtyPages(t, leftover) == 0 {
		t.Skip("the file system wrote the leftover blob out already: nothing to test")
	}

	before, err := os.Stat(leftover)
	if err != nil {
		t.Fatal(err)
	}
	u := newUploader(t, b)
	m, _, err := u.Upload(ctx, dir, meta(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	if after, err := os.Stat(leftover); err != nil || !os.SameFile(before, after) {
		t.Fatalf("the leftover blob was written again (%v): the test tests nothing", err)
	}
	manifest := filepath.Join(bdir, "manifests", fmt.Sprintf("%020d.json", m.Epoch))
	if n := dirtyPages(t, manifest); n != 0 {
		t.Fatalf("the manifest has %d dirty pages after Upload returned; the test expects it synced", n)
	}
	// Control: a blob this upload wrote itself is synced.
	for _, f := range m.Files {
		if f.Path == "000011.sst" {
			if n := dirtyPages(t, filepath.Join(bdir, filepath.FromSlash(f.Blob()))); n != 0 {
				t.Fatalf("a blob the upload wrote has %d dirty pages", n)
			}
		}
	}
	if n := dirtyPages(t, leftover); n != 0 {
		t.Fatalf("checkpoint %d's manifest is fsynced, but blob %s (file 000010.sst), which it reused from the bucket, still has %d dirty pages: "+
			"a power loss now leaves a completed checkpoint whose file is lost", m.Epoch, key, n)
	}
}
