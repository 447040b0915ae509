package kafka

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	stated "github.com/statedhq/stated/sdk/go"
)

// TestEmissionsOfABatchCommittedInHalvesAreDeliveredInIDOrder: a batch
// too large to commit at once is committed in halves, and the emissions
// of both halves are delivered together. Another entry (the daemon's
// tick closing a window when a source went idle, or another processor's
// commit) may have emitted into the namespace between the halves: the
// emissions handed over then have a gap. They must not be delivered as
// they are (the callback would see the gap's emissions later, after
// greater ids, against "in ascending id"); the outbox is read instead.
func TestEmissionsOfABatchCommittedInHalvesAreDeliveredInIDOrder(t *testing.T) {
	t.Parallel()
	e := newWindowEnv(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := e.dial(ctx)
	defer c.Close()

	// Each add closes the window before it: emissions 1, 2 and 3.
	var ems []stated.Emission
	for i := range 4 {
		res, err := c.Txn().AddWindow(e.ns, []byte("k"), windowBase.Add(time.Duration(i)*windowSize), stated.NoValue()).Commit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ems = append(ems, res.Emissions...)
	}
	if len(ems) != 3 {
		t.Fatalf("%d emissions, want 3", len(ems))
	}

	var seen []uint64
	p, err := New(e.config(c))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.OnWindowClosed(e.ns, func(_ context.Context, _ *stated.Txn, got []stated.Emission) error {
		for _, em := range got {
			seen = append(seen, em.ID)
		}
		return nil
	})
	p.windows.start()
	p.windows.stale = false
	// The first half's emission and the second's, without the one an
	// entry between them wrote.
	if err := p.deliverCommitted(ctx, []stated.Emission{ems[0], ems[2]}); err != nil {
		t.Fatal(err)
	}
	if err := p.deliverPending(ctx); err != nil { // what Run does later
		t.Fatal(err)
	}
	if want := []uint64{ems[0].ID, ems[1].ID, ems[2].ID}; !slices.Equal(seen, want) {
		t.Fatalf("the callback saw emissions %v, want %v: in ascending id", seen, want)
	}
	if n, err := pending(ctx, c, e.ns); err != nil || n != 0 {
		t.Fatal(fmt.Sprint("pending after delivery: ", n, err))
	}
}
