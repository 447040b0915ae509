package uploader_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"gocloud.dev/blob"

	"github.com/statedhq/stated/uploader"
)

// TestAManifestIsNeverWrittenWhileABlobItReusesIsGone:
// GUARANTEES.md section 4 says every file a manifest lists was
// in the bucket when the manifest was written. Here an upload reuses the
// blobs of a checkpoint that was deleted, and another node's collection
// runs to its end (announcement removed) while the upload sends its one
// new blob, deleting every reused blob before the upload's commit point.
// The upload must then fail without a manifest (the next checkpoint sends
// them again); what it may not do is write the manifest while its blobs
// are gone and count on repairing the bucket afterwards, which a crash
// in between would leave as a manifest naming missing files.
func TestAManifestIsNeverWrittenWhileABlobItReusesIsGone(t *testing.T) {
	ctx := testCtx(t)
	writer, wb, collector, _ := twoNodes(t)
	r := rand.New(rand.NewPCG(95, 96))
	dir, _ := checkpointDir(t, r, 4)
	m1, _, err := writer.Upload(ctx, dir, meta(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Checkpoint 1 goes; its blobs stay until a collection, and
	// checkpoint 2 reuses them all but one new table.
	if err := writer.Delete(ctx, 1, true); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string][]byte{"000999.sst": randomBytes(r, 4096)})
	collected := make(chan error, 1)
	wb.onWrite = once("files/", func() {
		_, err := collector.Retain(context.Background(), 1)
		collected <- err
	})
	var mu sync.Mutex
	var atLanding map[string]bool // the blobs in the bucket when the manifest landed
	wb.afterWrite = once("manifests/", func() {
		keys := map[string]bool{}
		it := wb.inner.List(&blob.ListOptions{Prefix: "files/"})
		for {
			obj, err := it.Next(context.Background())
			if err != nil {
				break
			}
			keys[obj.Key] = true
		}
		mu.Lock()
		atLanding = keys
		mu.Unlock()
	})
	m2, _, upErr := writer.Upload(ctx, dir, meta(2), nil)
	if err := <-collected; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	landed := atLanding
	mu.Unlock()
	if upErr != nil {
		if !errors.Is(upErr, uploader.ErrCorrupt) {
			t.Fatalf("Upload = %v; want it to succeed or fail with ErrCorrupt", upErr)
		}
		if landed != nil {
			t.Fatalf("the failed upload wrote a manifest (%v)", upErr)
		}
		// The failure is the collection's doing: it deleted blobs of
		// checkpoint 1 (otherwise this test checked nothing).
		left := blobKeysIn(t, wb.inner)
		gone := 0
		for _, f := range m1.Files {
			if !left[f.Blob()] {
				gone++
			}
		}
		if gone == 0 {
			t.Fatalf("Upload failed (%v) though the collection deleted none of checkpoint 1's blobs", upErr)
		}
		return
	}
	if landed == nil {
		t.Fatal("Upload succeeded but no manifest write was seen")
	}
	var missing []string
	for _, f := range m2.Files {
		if !landed[f.Blob()] {
			missing = append(missing, f.Path)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("checkpoint 2's manifest was written while %d of its files were not in the bucket (%s); a crash before the upload sent them again leaves a manifest naming missing files", len(missing), strings.Join(missing, ", "))
	}
}

func blobKeysIn(t *testing.T, b *blob.Bucket) map[string]bool {
	t.Helper()
	keys := map[string]bool{}
	for _, k := range blobKeys(t, b, "files/") {
		keys[k] = true
	}
	return keys
}
