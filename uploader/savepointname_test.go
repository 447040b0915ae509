package uploader_test

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/statedhq/stated/uploader"
)

// TestSavepointRefusesANameThatReadsAsAnEpoch: `--checkpoint N|latest|NAME`
// (restore, recovery, checkpoint show) reads a number as an epoch and
// "latest" as the latest checkpoint, so a savepoint named "1" or "latest"
// could never be selected by its name, and `restore --checkpoint 1` would
// restore checkpoint 1 rather than what the savepoint pins. Savepoint
// refuses such names, naming the name; others still pin.
func TestSavepointRefusesANameThatReadsAsAnEpoch(t *testing.T) {
	ctx := testCtx(t)
	u := newUploader(t, open(t, "mem://"))
	r := rand.New(rand.NewPCG(7, 8))
	for epoch := uint64(1); epoch <= 2; epoch++ {
		dir, _ := checkpointDir(t, r, 1)
		if _, _, err := u.Upload(ctx, dir, meta(epoch), nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"1", "20260101", "latest", "007"} {
		err := u.Savepoint(ctx, 2, name)
		if !errors.Is(err, uploader.ErrInvalid) || !strings.Contains(err.Error(), `"`+name+`"`) {
			t.Errorf("Savepoint(2, %q) = %v, want ErrInvalid naming it", name, err)
		}
	}
	if sps, err := u.List(ctx); err != nil || sps[1].Savepoint != "" {
		t.Fatalf("a refused name pinned checkpoint 2: %v %v", sps, err)
	}
	for _, name := range []string{"v1", "2026-01-01", "latest-good", "1.0"} {
		if err := u.Savepoint(ctx, 2, name); err != nil {
			t.Fatalf("Savepoint(2, %q): %v", name, err)
		}
		if err := u.DeleteSavepoint(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
}
