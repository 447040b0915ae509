package fsm

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/statedhq/stated/raftstore/command"
)

// TestPrepareRestoreKeepsTheCheckpointsMembersAndTheirAddresses: the
// restored state has no members (the new cluster's first leader records
// its own), but keeps the checkpoint's, with the addresses they served
// at, for a restored node started without --join to ask them whether the
// cluster it was restored from still runs (the daemon's
// checkCheckpointMembers). A state that was not restored keeps none, and
// a restore of a restored state keeps the members of its own checkpoint
// in place of the first restore's.
func TestPrepareRestoreKeepsTheCheckpointsMembersAndTheirAddresses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	f, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := []command.Member{
		{ID: "n1", RaftAddr: "10.0.0.1:7421", GRPCAddr: "10.0.0.1:7420"},
		{ID: "n2", RaftAddr: "10.0.0.2:7421", GRPCAddr: "10.0.0.2:7420", Incarnation: "5f0c"},
		{ID: "n3", RaftAddr: "10.0.0.3:7421", GRPCAddr: "10.0.0.3:7420", Incarnation: "77aa"},
	}
	for i, m := range old {
		apply(t, f, uint64(i+1), &command.Command{Type: command.TypeSetMember, Member: &m})
	}
	if got, err := f.RestoredMembers(); err != nil || len(got) != 0 {
		t.Fatalf("a state that was not restored: RestoredMembers = %v, %v; want none", got, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	restore := func(index uint64, cluster string) *FSM {
		t.Helper()
		if err := PrepareRestore(dir, RestoredFrom{Epoch: 1, RaftIndex: index, ClusterID: cluster}, 1); err != nil {
			t.Fatal(err)
		}
		f, err := Open(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	f = restore(3, "old")
	if got, err := f.Members(); err != nil || len(got) != 0 {
		t.Fatalf("restored state: Members = %v, %v; want none (the new cluster records its own)", got, err)
	}
	if got, err := f.RestoredMembers(); err != nil || !slices.Equal(got, old) {
		t.Fatalf("restored state: RestoredMembers = %v, %v; want the checkpoint's %v", got, err, old)
	}

	// The restored cluster records its own member, and is restored again
	// from a checkpoint of its own.
	mine := command.Member{ID: "r1", RaftAddr: "10.0.1.1:7421", GRPCAddr: "10.0.1.1:7420"}
	apply(t, f, 1, &command.Command{Type: command.TypeSetMember, Member: &mine})
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f = restore(1, "restored")
	defer f.Close()
	if got, err := f.RestoredMembers(); err != nil || !slices.Equal(got, []command.Member{mine}) {
		t.Fatalf("restored twice: RestoredMembers = %v, %v; want the second checkpoint's [%v] alone", got, err, mine)
	}
}
