package uploader_test

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/statedhq/stated/uploader"
)

// TestAnUploadAtOrBelowTheBucketsNewestCheckpointIsRefused: a cluster
// whose epochs did not start above the bucket's (a new cluster on a used
// bucket) would write manifests that sort below the bucket's, so Latest
// would not return them and Retain would delete them first, or replace
// a manifest of the same epoch. The upload is refused before a file is
// sent, naming the bucket's newest checkpoint, and the bucket is left as
// it was; a savepoint whose manifest is gone counts too.
func TestAnUploadAtOrBelowTheBucketsNewestCheckpointIsRefused(t *testing.T) {
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(41, 42))
	b := open(t, "mem://")
	old := newUploader(t, b)
	dir, _ := checkpointDir(t, r, 2)
	for _, epoch := range []uint64{4, 5} {
		if _, _, err := old.Upload(ctx, dir, meta(epoch), nil); err != nil {
			t.Fatal(err)
		}
	}
	files, manifests := blobKeys(t, b, "files/"), blobKeys(t, b, "manifests/")

	fresh := newUploader(t, b)
	other, _ := checkpointDir(t, r, 3)
	for _, epoch := range []uint64{1, 5} {
		m := meta(epoch)
		m.ClusterID = "c2"
		_, _, err := fresh.Upload(ctx, other, m, nil)
		if !errors.Is(err, uploader.ErrBucketAhead) {
			t.Fatalf("upload of epoch %d to a bucket holding epoch 5: %v, want ErrBucketAhead", epoch, err)
		}
		var ahead *uploader.BucketAheadError
		if !errors.As(err, &ahead) || ahead.Epoch != epoch || ahead.Newest != 5 || ahead.ClusterID != "c1" {
			t.Fatalf("refusal of epoch %d: %#v, want a BucketAheadError naming cluster c1's checkpoint 5", epoch, ahead)
		}
		for _, want := range []string{"checkpoint 5 of cluster c1", "epoch, " + strconv.FormatUint(epoch, 10)} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("refusal %q does not say %q", err, want)
			}
		}
		if got := blobKeys(t, b, "files/"); !slices.Equal(got, files) {
			t.Fatalf("the refused upload changed files/: %v, was %v", got, files)
		}
		if got := blobKeys(t, b, "manifests/"); !slices.Equal(got, manifests) {
			t.Fatalf("the refused upload changed manifests/: %v, was %v", got, manifests)
		}
	}
	latest, err := old.Latest(ctx)
	if err != nil || latest.Epoch != 5 || latest.ClusterID != "c1" {
		t.Fatalf("Latest after the refusals: %+v, %v; want cluster c1's checkpoint 5", latest, err)
	}

	// A savepoint outlives its manifest, and holds its epoch.
	if _, _, err := old.Upload(ctx, dir, meta(9), nil); err != nil {
		t.Fatal(err)
	}
	if err := old.Savepoint(ctx, 9, "keep"); err != nil {
		t.Fatal(err)
	}
	// As retention would once newer checkpoints came and went.
	if err := b.Delete(ctx, "manifests/00000000000000000009.json"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := old.Upload(ctx, dir, meta(7), nil); !errors.Is(err, uploader.ErrBucketAhead) || !strings.Contains(err.Error(), `savepoint "keep"`) {
		t.Fatalf("upload of epoch 7 below savepoint keep (epoch 9): %v, want ErrBucketAhead naming the savepoint", err)
	}
	if _, _, err := old.Upload(ctx, dir, meta(10), nil); err != nil {
		t.Fatalf("upload of epoch 10 above everything: %v", err)
	}

	// A pin deleted and made again under its name at a newer checkpoint
	// is read again: the epoch remembered from before would let epoch 15
	// through below it.
	if _, _, err := old.Upload(ctx, dir, meta(20), nil); err != nil {
		t.Fatal(err)
	}
	if err := old.DeleteSavepoint(ctx, "keep"); err != nil {
		t.Fatal(err)
	}
	if err := old.Savepoint(ctx, 20, "keep"); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "manifests/00000000000000000020.json"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := old.Upload(ctx, dir, meta(15), nil); !errors.Is(err, uploader.ErrBucketAhead) || !strings.Contains(err.Error(), "checkpoint 20") {
		t.Fatalf("upload of epoch 15 below savepoint keep, pinned again at 20: %v, want ErrBucketAhead naming checkpoint 20", err)
	}
}

// TestAManifestThatComesDuringAnUploadStopsItsManifest: another writer's
// newer checkpoint that lands while the files are sent is caught at the
// commit point, before the manifest is written.
func TestAManifestThatComesDuringAnUploadStopsItsManifest(t *testing.T) {
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(43, 44))
	b := open(t, "mem://")
	u := newUploader(t, b)
	other := newUploader(t, b)
	dir, _ := checkpointDir(t, r, 2)
	otherDir, _ := checkpointDir(t, r, 1)
	var (
		landed sync.Once
		once   bool
	)
	progress := func(done, total int64) { // called by the upload's workers
		landed.Do(func() {
			once = true
			m := meta(9)
			m.ClusterID = "c2"
			if _, _, err := other.Upload(ctx, otherDir, m, nil); err != nil {
				t.Errorf("the other writer's upload: %v", err)
			}
		})
	}
	_, _, err := u.Upload(ctx, dir, meta(3), progress)
	var ahead *uploader.BucketAheadError
	if !once || !errors.As(err, &ahead) || ahead.Newest != 9 || ahead.ClusterID != "c2" {
		t.Fatalf("upload of epoch 3 while cluster c2's checkpoint 9 landed (progress called: %t): %v, want a BucketAheadError naming it", once, err)
	}
	if got := blobKeys(t, b, "manifests/"); !slices.Equal(got, []string{"manifests/00000000000000000009.json"}) {
		t.Fatalf("manifests after the refusal: %v, want only c2's checkpoint 9", got)
	}
}

// TestASavepointThatDoesNotReadDoesNotStopUploads: a pin this version
// cannot read (a newer format) holds no epoch it can know; before the
// bucket check, uploads never read savepoints, and it does not stop them
// now.
func TestASavepointThatDoesNotReadDoesNotStopUploads(t *testing.T) {
	ctx := testCtx(t)
	b := open(t, "mem://")
	u := newUploader(t, b)
	dir, _ := checkpointDir(t, rand.New(rand.NewPCG(45, 46)), 2)
	if _, _, err := u.Upload(ctx, dir, meta(1), nil); err != nil {
		t.Fatal(err)
	}
	if err := b.WriteAll(ctx, "savepoints/future.json", []byte(`{"format_version": 99, "epoch": 50}`), nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := u.Upload(ctx, dir, meta(2), nil); err != nil {
		t.Fatalf("upload of epoch 2 beside a savepoint of a newer format: %v", err)
	}
}
