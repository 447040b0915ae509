package uploader_test

import (
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
