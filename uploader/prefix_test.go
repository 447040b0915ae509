package uploader_test

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/statedhq/stated/uploader"
)

// TestFileBucketRefusesAPrefixItCannotUse: in a file:// bucket a prefix
// that is not a clean relative path either escapes the bucket's directory
// (refused by fileblob only at the first listing, so at the first
// checkpoint) or names keys that its listings never find, so that every
// checkpoint fails as "not intact" and its blobs are never collected.
// OpenBucket refuses such a prefix, naming it; a clean one works.
func TestFileBucketRefusesAPrefixItCannotUse(t *testing.T) {
	ctx := testCtx(t)
	bucketDir := t.TempDir()
	for _, p := range []string{"/abs", "a//b", "../outside", "a/../../outside", "..", ".", "./a", "a/./b", "a/.."} {
		t.Run(p, func(t *testing.T) {
			b, err := uploader.OpenBucket(ctx, fileURL(bucketDir)+"?prefix="+p)
			if err == nil {
				defer b.Close()
				u := newUploader(t, b)
				dir, _ := checkpointDir(t, rand.New(rand.NewPCG(5, 6)), 1)
				_, _, uerr := u.Upload(ctx, dir, meta(1), nil)
				t.Fatalf("OpenBucket accepted prefix=%s (then Upload: %v), want it refused", p, uerr)
			}
			if !strings.Contains(err.Error(), "prefix") {
				t.Fatalf("OpenBucket(prefix=%s) = %v, want an error naming prefix=", p, err)
			}
		})
	}
	// team-a and team-a/ are one prefix: each upload takes the next epoch.
	for i, p := range []string{"team-a", "team-a/", "team-a/ckpt/", "a.b/c-d_e"} {
		b, err := uploader.OpenBucket(ctx, fileURL(bucketDir)+"?prefix="+p)
		if err != nil {
			t.Fatalf("OpenBucket(prefix=%s): %v", p, err)
		}
		u := newUploader(t, b)
		dir, _ := checkpointDir(t, rand.New(rand.NewPCG(5, 6)), 1)
		if _, _, err := u.Upload(ctx, dir, meta(uint64(i+1)), nil); err != nil {
			t.Fatalf("prefix=%s: %v", p, err)
		}
		b.Close()
	}
}
