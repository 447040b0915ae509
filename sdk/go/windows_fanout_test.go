package stated_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	stated "github.com/statedhq/stated/sdk/go"
)

// A hopping spec with size 100 years advancing every millisecond was
// accepted: the first record added to it made every replica enumerate
// and index a window per millisecond of its event time (about 1.8e12) in
// one Raft entry, and again at every replay. Measured before the limit:
// size 10 min / advance 1 ms took 0.65 s and 600,000 index records for
// one add. A spec putting a record in more than 10,000 windows is now
// refused at Define, naming the field (docs/WINDOWS.md); 10,000 is
// accepted.
func TestAHoppingSpecPuttingARecordInTooManyWindowsIsRefused(t *testing.T) {
	t.Parallel()
	c := dialDaemon(t)
	ctx := ctxFor(t)
	for _, tc := range []struct {
		name          string
		size, advance time.Duration
	}{
		{"100 years every millisecond (3.15e12 windows per record)", 100 * 365 * 24 * time.Hour, time.Millisecond},
		{"a day every millisecond (8.64e7 windows per record)", 24 * time.Hour, time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.DefineWindows(ctx, stated.WindowSpec{
				Namespace: "hop-" + tc.size.String(), Shape: stated.Hopping, Size: tc.size, Advance: tc.advance,
				Grace: 0, MaxOutOfOrder: 0, Aggregate: stated.Count, Emit: stated.EmitFinal, Late: stated.LateDrop,
			})
			if err == nil {
				t.Fatalf("a hopping spec of size %s advancing every %s was accepted: the first record added to it makes "+
					"every replica enumerate and index %d windows in one Raft entry", tc.size, tc.advance, int64(tc.size/tc.advance))
			}
			if !errors.Is(err, stated.ErrInvalidArgument) || !strings.Contains(err.Error(), "spec.advance_ms") {
				t.Fatalf("refused with %v; want ErrInvalidArgument naming spec.advance_ms", err)
			}
		})
	}
	err := c.DefineWindows(ctx, stated.WindowSpec{
		Namespace: "hop-day-10s", Shape: stated.Hopping, Size: 24 * time.Hour, Advance: 10 * time.Second,
		Aggregate: stated.Count, Emit: stated.EmitFinal, Late: stated.LateDrop,
	})
	if err != nil {
		t.Fatalf("a day advancing every 10 s (8,640 windows per record) refused: %v", err)
	}
}
