package uploader_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/statedhq/stated/uploader"
)

// TestCollectionStopsDeletingWithinHalfItsLease: a collection whose
// deletion of a blob fails transiently, and slowly, goes on retrying it.
// A writer whose manifest reuses that blob waits for the announcement
// for Config.GCLease, then checks its files: a retry that lands after
// that deletes a blob of an acknowledged checkpoint. Retain must stop
// deleting, retries included, after half its lease.
func TestCollectionStopsDeletingWithinHalfItsLease(t *testing.T) {
	ctx := testCtx(t)
	const lease = 2 * time.Second
	inner := open(t, "mem://")
	b1, wb := newFaultBucket(inner, nil)
	b2, cb := newFaultBucket(inner, nil)
	withLease := func(c *uploader.Config) { c.GCLease = lease }
	writer, collector := newUploader(t, b1, withLease), newUploader(t, b2, withLease)

	dir, _ := checkpointDir(t, rand.New(rand.NewPCG(41, 42)), 1)
	if _, _, err := writer.Upload(ctx, dir, meta(1), nil); err != nil {
		t.Fatal(err)
	}
	// Checkpoint 1 goes, its blobs stay until a collection: checkpoint 2
	// reuses them all.
	if err := writer.Delete(ctx, 1, true); err != nil {
		t.Fatal(err)
	}
	// The writer's manifest lands at the collection's first deletion,
	// after its second reading: the collection does not spare the blob,
	// the writer sees the announcement and waits for it.
	atManifest, release, landed := make(chan struct{}), make(chan struct{}), make(chan struct{})
	wb.onWrite = once("manifests/", func() { close(atManifest); <-release })
	wb.afterWrite = once("manifests/", func() { close(landed) })
	cb.onDelete = once("files/", func() { close(release); <-landed })
	// The first deletion of each blob fails four times, each attempt
	// taking a quarter of the lease (a slow, throttled store): its
	// retries run past the lease.
	var mu sync.Mutex
	failures := map[string]int{}
	cb.deleteFault = func(key string) error {
		if !strings.HasPrefix(key, "files/") {
			return nil
		}
		mu.Lock()
		failures[key]++
		n := failures[key]
		mu.Unlock()
		if n <= 4 {
			time.Sleep(lease / 4)
			return errInjected
		}
		return nil
	}
	collected := make(chan error, 1)
	go func() {
		<-atManifest
		_, err := collector.Retain(ctx, 1)
		collected <- err
	}()
	m, _, err := writer.Upload(ctx, dir, meta(2), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("retain: %v", <-collected) // it may fail: it stopped deleting
	if probs, err := writer.Verify(ctx, m); err != nil || len(probs) > 0 {
		t.Fatalf("Upload acknowledged checkpoint 2, then the collection it waited for deleted its files: %v %v", probs, err)
	}
}

// TestACancelledCollectionCountsOnlyWhatItDeleted: a collection whose
// context ends while it deletes starts no other deletion, counts as
// deleted only the blobs that are gone, and says why it stopped.
func TestACancelledCollectionCountsOnlyWhatItDeleted(t *testing.T) {
	ctx := testCtx(t)
	b := open(t, "mem://")
	fb, hooks := newFaultBucket(b, nil)
	u := newUploader(t, fb, func(c *uploader.Config) { c.Workers = 1 })
	r := rand.New(rand.NewPCG(43, 44))
	for epoch := uint64(1); epoch <= 2; epoch++ {
		dir, _ := checkpointDir(t, r, 6)
		if _, _, err := u.Upload(ctx, dir, meta(epoch), nil); err != nil {
			t.Fatal(err)
		}
	}
	before := len(blobKeys(t, b, "files/"))
	rctx, cancel := context.WithCancelCause(ctx)
	stop := errors.New("stopped by the test")
	hooks.onDelete = once("files/", func() { cancel(stop) })
	st, err := u.Retain(rctx, 1)
	gone := before - len(blobKeys(t, b, "files/"))
	if st.BlobsDeleted != gone || !errors.Is(err, stop) {
		t.Fatalf("Retain = %+v, %v; %d blobs are gone, want them counted and the cancellation's cause", st, err, gone)
	}
}
