package uploader_test

import (
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/statedhq/stated/uploader"
)

// TestTwoSavepointsUnderOneNameAreNotBothAcknowledged: two operators (or
// two nodes answering them) pin different checkpoints under the same name
// at the same time. Savepoint refuses a name in use, so at most one
// succeeds; both did, one pin overwritten by the other, and the checkpoint
// its caller was told is pinned was left to retention, which deleted it.
func TestTwoSavepointsUnderOneNameAreNotBothAcknowledged(t *testing.T) {
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(21, 22))
	for round := 0; round < 30; round++ {
		b := open(t, fileURL(t.TempDir()))
		ups := []*uploader.Uploader{newUploader(t, b), newUploader(t, b)} // two nodes
		for epoch := uint64(1); epoch <= 2; epoch++ {
			dir, _ := checkpointDir(t, r, 1)
			if _, _, err := ups[0].Upload(ctx, dir, meta(epoch), nil); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		start := make(chan struct{})
		for i := range ups {
			wg.Go(func() {
				<-start
				errs[i] = ups[i].Savepoint(ctx, uint64(i+1), "before-deploy")
			})
		}
		close(start)
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			continue // one refused: as it should be
		}
		sp, err := ups[0].GetSavepoint(ctx, "before-deploy")
		if err != nil {
			t.Fatal(err)
		}
		lost := 3 - sp.Epoch
		// Retention after a newer checkpoint, keeping one.
		dir, _ := checkpointDir(t, r, 1)
		if _, _, err := ups[0].Upload(ctx, dir, meta(3), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := ups[0].Retain(ctx, 1); err != nil {
			t.Fatal(err)
		}
		_, gerr := ups[0].Get(ctx, lost)
		t.Fatalf("round %d: Savepoint(1, %q) and Savepoint(2, %q) both succeeded; the pin holds checkpoint %d, and checkpoint %d, acknowledged as pinned, "+
			"is then removed by retention: Get(%d) = %v", round, "before-deploy", "before-deploy", sp.Epoch, lost, lost, gerr)
	}
}
