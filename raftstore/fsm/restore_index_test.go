package fsm

import (
	"strings"
	"testing"

	"github.com/statedhq/stated/raftstore/command"
)

// TestPrepareRestoreRefusesAStateAtAnotherIndexThanTheCheckpoints: the
// staged state must be the checkpoint's; a state at another applied index
// (files changed under the download) is refused, left as it was, and the
// same state with the manifest's index is prepared.
func TestPrepareRestoreRefusesAStateAtAnotherIndexThanTheCheckpoints(t *testing.T) {
	dir := t.TempDir()
	f, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	apply(t, f, 1, &command.Command{Type: command.TypeSetClusterID, ClusterID: "old"})
	apply(t, f, 2, putCmd("c", "k", "v"))
	apply(t, f, 3, putCmd("c", "k2", "v"))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	err = PrepareRestore(dir, RestoredFrom{Epoch: 7, RaftIndex: 2, ClusterID: "old"}, 7)
	if err == nil || !strings.Contains(err.Error(), "is at Raft index 3, but checkpoint 7 was taken at 2") {
		t.Fatalf("PrepareRestore of a state at index 3 for a checkpoint at 2 = %v, want a refusal naming both", err)
	}
	f, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := f.ClusterID(); id != "old" || f.AppliedIndex() != 3 {
		t.Fatalf("the refused state changed: cluster %q at index %d, want old at 3", id, f.AppliedIndex())
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := PrepareRestore(dir, RestoredFrom{Epoch: 7, RaftIndex: 3, ClusterID: "old"}, 7); err != nil {
		t.Fatalf("PrepareRestore at the state's own index: %v", err)
	}
}
