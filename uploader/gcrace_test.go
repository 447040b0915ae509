package uploader_test

import (
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/statedhq/stated/uploader"
)

// Two nodes share a bucket: one writes a savepoint or a manifest while
// the other's retention collects. These tests put the write at the two
// moments that matter: after the collection's first reading of the
// manifests and savepoints, and after its second (when it already
// announced what it deletes). Whatever the moment, what Savepoint or
// Upload acknowledges has every file in the bucket.

// twoNodes returns the two Uploaders of a shared mem:// bucket, each
// through its own hook-able bucket, and the bucket. The collector keeps no
// grace, so every unreferenced blob is doomed at once.
func twoNodes(t *testing.T) (writer *uploader.Uploader, wb *faultBucket, collector *uploader.Uploader, cb *faultBucket) {
	inner := open(t, "mem://")
	b1, wb := newFaultBucket(inner, nil)
	b2, cb := newFaultBucket(inner, nil)
	lease := func(c *uploader.Config) { c.GCLease = 10 * time.Second }
	return newUploader(t, b1, lease), wb, newUploader(t, b2, lease), cb
}

// once returns a hook that runs fn for the first key with prefix.
func once(prefix string, fn func()) func(string) {
	var o sync.Once
	return func(key string) {
		if strings.HasPrefix(key, prefix) {
			o.Do(fn)
		}
	}
}

// TestSavepointIsNeverAcknowledgedWithMissingBlobs: a checkpoint is
// pinned while another node's retention removes it (keep 1 of 3).
func TestSavepointIsNeverAcknowledgedWithMissingBlobs(t *testing.T) {
	for _, tc := range []struct {
		name string
		// pinAtDelete puts the pin's write at the collection's first blob
		// deletion (after its second reading) rather than at its listing
		// of files/ (after its first reading of the savepoints).
		pinAtDelete bool
	}{{"pinned after the collection read the savepoints", false}, {"pinned after the collection announced its deletions", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			writer, wb, collector, cb := twoNodes(t)
			r := rand.New(rand.NewPCG(31, 32))
			for epoch := uint64(1); epoch <= 3; epoch++ {
				dir, _ := checkpointDir(t, r, 3) // no file shared between checkpoints
				if _, _, err := writer.Upload(ctx, dir, meta(epoch), nil); err != nil {
					t.Fatal(err)
				}
			}
			// The savepoint reads manifest 1, then its pin's write waits
			// for the collection to reach the chosen moment.
			atPin, release, pinned := make(chan struct{}), make(chan struct{}), make(chan struct{})
			wb.onWrite = once("savepoints/", func() { close(atPin); <-release })
			wb.afterWrite = once("savepoints/", func() { close(pinned) })
			spErr := make(chan error, 1)
			go func() { spErr <- writer.Savepoint(ctx, 1, "keep-me") }()
			<-atPin
			letPinLand := func() { close(release); <-pinned }
			if tc.pinAtDelete {
				cb.onDelete = once("files/", letPinLand)
			} else {
				// Retain deletes manifests 1 and 2, lists the savepoints,
				// then files/: the pin lands there.
				cb.onList = once("files/", letPinLand)
			}
			if _, err := collector.Retain(ctx, 1); err != nil {
				t.Fatal(err)
			}
			err := <-spErr
			if err != nil {
				// Refused: then nothing may stay pinned.
				if !errors.Is(err, uploader.ErrNotFound) {
					t.Fatalf("Savepoint failed with %v, want ErrNotFound", err)
				}
				if _, gerr := writer.GetSavepoint(ctx, "keep-me"); !errors.Is(gerr, uploader.ErrNotFound) {
					t.Fatalf("Savepoint failed (%v) but left its pin (%v)", err, gerr)
				}
				if !tc.pinAtDelete {
					t.Fatalf("Savepoint failed though the collection could still see its pin: %v", err)
				}
				t.Logf("refused, as it must be: %v", err)
				return
			}
			sp, err := writer.GetSavepoint(ctx, "keep-me")
			if err != nil {
				t.Fatal(err)
			}
			if probs, err := writer.Verify(ctx, sp); err != nil || len(probs) > 0 {
				t.Fatalf("Savepoint acknowledged checkpoint 1, whose files are gone: %v %v", probs, err)
			}
		})
	}
}

// TestUploadSendsAgainABlobAnotherNodesCollectionDeleted: an upload
// reuses blobs no retained manifest references (here: the manifest that
// did was deleted) and another node's retention deletes them between the
// upload's last listing and its manifest.
func TestUploadSendsAgainABlobAnotherNodesCollectionDeleted(t *testing.T) {
	for _, tc := range []struct {
		name          string
		collectInside bool // the whole collection runs just before the manifest lands
	}{{"deleted before the manifest", true}, {"deleted after the manifest, announced before it", false}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			writer, wb, collector, cb := twoNodes(t)
			dir, files := checkpointDir(t, rand.New(rand.NewPCG(33, 34)), 4)
			if _, _, err := writer.Upload(ctx, dir, meta(1), nil); err != nil {
				t.Fatal(err)
			}
			// Checkpoint 1 goes (as by `checkpoint delete --force`), its
			// blobs stay until a collection: checkpoint 2 reuses them all.
			if err := writer.Delete(ctx, 1, true); err != nil {
				t.Fatal(err)
			}
			collected := make(chan error, 1)
			if tc.collectInside {
				wb.onWrite = once("manifests/", func() {
					_, err := collector.Retain(ctx, 1)
					collected <- err
				})
			} else {
				atManifest, release, landed := make(chan struct{}), make(chan struct{}), make(chan struct{})
				wb.onWrite = once("manifests/", func() { close(atManifest); <-release })
				wb.afterWrite = once("manifests/", func() { close(landed) })
				cb.onDelete = once("files/", func() { close(release); <-landed })
				go func() {
					<-atManifest
					_, err := collector.Retain(ctx, 1)
					collected <- err
				}()
			}
			m, _, err := writer.Upload(ctx, dir, meta(2), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-collected; err != nil {
				t.Fatal(err)
			}
			if probs, err := writer.Verify(ctx, m); err != nil || len(probs) > 0 {
				t.Fatalf("Upload acknowledged checkpoint 2 with files the collection deleted: %v %v", probs, err)
			}
			if got := writer.Metrics().BlobsResent; got == 0 || got > int64(len(files)) {
				t.Fatalf("BlobsResent = %d, want the deleted blobs (1 to %d)", got, len(files))
			}
		})
	}
}
