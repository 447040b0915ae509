package fsm

import (
	"slices"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// TestLegacyRetriedCommitIsAppliedOnceEvenOutOfOrder keeps a log written
// before client sessions (format version 2) applying as it did: commits
// with a (client id, sequence) are deduplicated by per-commit records.
func TestLegacyRetriedCommitIsAppliedOnceEvenOutOfOrder(t *testing.T) {
	f := openFSM(t)
	now := int64(1e18)
	add := func(seq uint64, at int64) *command.Command {
		return &command.Command{Type: command.TypeCommit, Now: at, Commit: &command.Commit{
			ClientID: "client-a", Seq: seq,
			Mutations: []command.Mutation{{Op: command.OpCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: 1}},
		}}
	}
	steps := []struct {
		seq       uint64
		wantIndex uint64
		wantDup   bool
	}{
		{1, 1, false},
		{1, 1, true},  // a retry of seq 1
		{3, 3, false}, // seq 3 overtook seq 2
		{2, 4, false}, // seq 2 is new, though lower than 3
		{3, 3, true},  // a retry of seq 3
		{2, 4, true},
	}
	for i, st := range steps {
		r := applyV2(t, f, uint64(i+1), add(st.seq, now))
		if r.Err != nil || r.Index != st.wantIndex || r.Duplicate != st.wantDup {
			t.Fatalf("step %d (seq %d): index %d dup %v err %v; want index %d dup %v", i, st.seq, r.Index, r.Duplicate, r.Err, st.wantIndex, st.wantDup)
		}
	}
	if e, _, _ := f.Get("ns", []byte("c"), KindCounter, nil, now); e.Counter != 3 {
		t.Fatalf("counter = %d, want 3 distinct commits", e.Counter)
	}
	// Another client's seq 1 is its own.
	other := add(1, now)
	other.Commit.ClientID = "client-b"
	if r := applyV2(t, f, 7, other); r.Duplicate {
		t.Fatal("client-b's seq 1 was taken for client-a's")
	}
	// Past the window, and once expired, the record is forgotten.
	later := now + int64(DedupWindow) + 1
	apply(t, f, 8, &command.Command{Type: command.TypeExpire, Now: later, ExpireLimit: 100})
	if r := applyV2(t, f, 9, add(1, later)); r.Duplicate || r.Index != 9 {
		t.Fatalf("after the dedup window: index %d dup %v", r.Index, r.Duplicate)
	}
}

func applyV2(t *testing.T, f *FSM, index uint64, cmd *command.Command) *Result {
	t.Helper()
	return f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: command.EncodeVersion2(cmd)}).(*Result)
}

func TestClusterIDIsSetOnceAndMembersAreRecorded(t *testing.T) {
	f := openFSM(t)
	apply(t, f, 1, &command.Command{Type: command.TypeSetClusterID, ClusterID: "first"})
	apply(t, f, 2, &command.Command{Type: command.TypeSetClusterID, ClusterID: "second"})
	if id, err := f.ClusterID(); err != nil || id != "first" {
		t.Fatalf("cluster id = %q, %v; want the first one to stand", id, err)
	}
	set := func(i uint64, m command.Member) {
		if r := apply(t, f, i, &command.Command{Type: command.TypeSetMember, Member: &m}); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	set(3, command.Member{ID: "n2", RaftAddr: "r2", GRPCAddr: "g2"})
	set(4, command.Member{ID: "n1", RaftAddr: "r1", GRPCAddr: "g1"})
	set(5, command.Member{ID: "n2", RaftAddr: "r2", GRPCAddr: "g2b", Incarnation: "i2"})
	apply(t, f, 6, &command.Command{Type: command.TypeSetMember, Member: &command.Member{ID: "n3", RaftAddr: "r3"}})
	apply(t, f, 7, &command.Command{Type: command.TypeRemoveMember, Member: &command.Member{ID: "n3"}})
	set(8, command.Member{ID: "n4", RaftAddr: "r4", Incarnation: "i4"})
	set(9, command.Member{ID: "n4", RaftAddr: "r4", GRPCAddr: "g4"}) // a member recorded again without one loses it
	got, err := f.Members()
	want := []command.Member{{ID: "n1", RaftAddr: "r1", GRPCAddr: "g1"}, {ID: "n2", RaftAddr: "r2", GRPCAddr: "g2b", Incarnation: "i2"}, {ID: "n4", RaftAddr: "r4", GRPCAddr: "g4"}}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("members = %+v, %v; want %+v", got, err, want)
	}
}
