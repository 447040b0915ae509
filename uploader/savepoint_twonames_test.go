package uploader_test

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/statedhq/stated/uploader"
)

// TestOneCheckpointIsNeverPinnedUnderTwoNames: a checkpoint has one
// savepoint name, and a second name for a pinned checkpoint is refused.
// Two calls (two operators, two nodes) pinning one checkpoint under two
// names at the same time were both acknowledged: List, and so `stated
// checkpoint list` and `checkpoint show`, showed one name while the
// other pin stayed in the bucket. Now at most one call succeeds, and the
// bucket holds exactly the pins that were acknowledged.
func TestOneCheckpointIsNeverPinnedUnderTwoNames(t *testing.T) {
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(31, 32))
	for round := range 30 {
		b := open(t, fileURL(t.TempDir()))
		ups := []*uploader.Uploader{newUploader(t, b), newUploader(t, b)} // two nodes
		dir, _ := checkpointDir(t, r, 1)
		if _, _, err := ups[0].Upload(ctx, dir, meta(1), nil); err != nil {
			t.Fatal(err)
		}
		names := []string{"before-deploy-a", "before-deploy-b"}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		start := make(chan struct{})
		for i := range ups {
			wg.Go(func() {
				<-start
				errs[i] = ups[i].Savepoint(ctx, 1, names[i])
			})
		}
		close(start)
		wg.Wait()
		acked := 0
		for i, err := range errs {
			if err == nil {
				acked++
			} else if !errors.Is(err, uploader.ErrInvalid) {
				t.Fatalf("round %d: Savepoint(1, %q): %v, want success or a refusal", round, names[i], err)
			}
		}
		if acked == 2 {
			t.Fatalf("round %d: Savepoint(1, %q) and Savepoint(1, %q) both succeeded: checkpoint 1 is pinned under two names", round, names[0], names[1])
		}
		if pins := blobKeys(t, b, "savepoints/"); len(pins) != acked {
			t.Fatalf("round %d: %d calls acknowledged, the bucket holds the pins %q", round, acked, pins)
		}
	}
}
