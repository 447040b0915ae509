package fsm

import (
	"testing"

	"github.com/statedhq/stated/raftstore/command"
)

// TestRefusedCommitReturnsItsEntryIndex is what TestStateMachineMatchesModel
// found: a commit refused by its session (or for a sequence without a
// session, or a session without a sequence) returned Result.Index 0, while
// a commit refused for its mutations or offsets returns its entry's index.
func TestRefusedCommitReturnsItsEntryIndex(t *testing.T) {
	f := openFSM(t)
	apply(t, f, 1, openSessionCmd("c", 7, 0))
	noSeq := putCmd("c", "k", "v")
	noSeq.Commit.Seq = 3
	for i, cmd := range []*command.Command{
		inSession(putCmd("c", "k", "v"), 8, 0, 1), // superseded
		inSession(putCmd("d", "k", "v"), 9, 0, 1), // not open
		inSession(putCmd("c", "k", "v"), 7, 0, 0), // session without a sequence
		noSeq, // sequence without a session
		commitCmd(1e18, nil, []command.Offset{{Group: "g", Topic: "t", Epoch: 4}}), // fenced
	} {
		index := uint64(i + 2)
		if res := apply(t, f, index, cmd); res.Err == nil || res.Index != index {
			t.Errorf("entry %d: index %d, err %v; want index %d with a refusal", index, res.Index, res.Err, index)
		}
	}
}
