package fsm

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"github.com/statedhq/stated/raftstore/command"
)

// TestOutboxReadsStartWhereNothingBelowIsPending checks the bound
// Emissions starts its reads at (outboxLows): acknowledgements out of id
// order, a read from a cursor above the bound, new emissions after an
// empty outbox, and a restored state whose pending emissions lie below
// the bound the replaced state had reached.
func TestOutboxReadsStartWhereNothingBelowIsPending(t *testing.T) {
	f := openFSM(t)
	apply := benchApply(t, f)
	add := closingWindows(apply)
	ack := func(ids ...uint64) {
		t.Helper()
		c := &command.Commit{}
		for _, id := range ids {
			c.Acks = append(c.Acks, command.EmissionAck{Namespace: "n", ID: id})
		}
		apply(&command.Command{Type: command.TypeCommit, Now: 1e18, Commit: c})
	}
	pending := func(after uint64, want ...uint64) {
		t.Helper()
		ems, err := f.Emissions("n", after, 0)
		if err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for _, e := range ems {
			got = append(got, e.ID)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("emissions after %d: %v, want %v", after, got, want)
		}
	}
	for range 6 {
		add(nil)
	}
	pending(0, 1, 2, 3, 4, 5)
	snap := snapshotBytes(t, f)
	pending(3, 4, 5)
	pending(0, 1, 2, 3, 4, 5)
	ack(3, 1)
	pending(0, 2, 4, 5)
	pending(1, 2, 4, 5)
	ack(2)
	pending(0, 4, 5)
	pending(3, 4, 5)
	ack(5, 4)
	pending(0)
	add(nil) // emission 6
	pending(0, 6)
	add([]command.EmissionAck{{Namespace: "n", ID: 6}})
	pending(0, 7)
	pending(7)

	// A restore brings back emissions 1 to 5, below where this state's
	// reads had come to start.
	if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	pending(0, 1, 2, 3, 4, 5)
}
