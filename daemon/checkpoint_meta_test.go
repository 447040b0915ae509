package daemon

import (
	"errors"
	"testing"
	"time"

	"github.com/statedhq/stated/raftstore/fsm"
)

// TestCheckpointMetaPairsTheAppliedIndexWithItsOwnTerm: the local
// checkpoint is made off the apply loop and may hold entries after the
// barrier, of a later term; the manifest's index and term must name the
// same entry.
func TestCheckpointMetaPairsTheAppliedIndexWithItsOwnTerm(t *testing.T) {
	terms := map[uint64]uint64{10: 2, 11: 2, 12: 3}
	termAt := func(i uint64) (uint64, error) {
		if t, ok := terms[i]; ok {
			return t, nil
		}
		return 0, errors.New("compacted")
	}
	barrier := fsm.CheckpointResult{Epoch: 4, Index: 10, Term: 2, Dir: "cp/4"}
	for _, tc := range []struct {
		name               string
		applied, term      uint64
		epochInCkpt        uint64
		wantErr, notTheCut bool
	}{
		{name: "the barrier itself", applied: 10, term: 2, epochInCkpt: 4},
		{name: "a later entry of the same term", applied: 11, term: 2, epochInCkpt: 4},
		{name: "a later entry of a later term", applied: 12, term: 3, epochInCkpt: 4},
		{name: "an entry the log no longer holds", applied: 13, epochInCkpt: 4, wantErr: true},
		{name: "state from before the barrier", applied: 9, epochInCkpt: 3, wantErr: true, notTheCut: true},
		{name: "state of a later barrier", applied: 12, epochInCkpt: 5, wantErr: true, notTheCut: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info := fsm.CheckpointInfo{Epoch: tc.epochInCkpt, AppliedIndex: tc.applied, ClusterID: "c"}
			m, err := checkpointMeta(barrier, info, time.Now(), termAt)
			if tc.wantErr {
				if err == nil || errors.Is(err, errNotTheCut) != tc.notTheCut {
					t.Fatalf("err = %v, want an error (not the cut: %t)", err, tc.notTheCut)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Epoch != 4 || m.RaftIndex != tc.applied || m.RaftTerm != tc.term {
				t.Fatalf("meta = epoch %d, index %d, term %d; want 4, %d, %d", m.Epoch, m.RaftIndex, m.RaftTerm, tc.applied, tc.term)
			}
		})
	}
}
