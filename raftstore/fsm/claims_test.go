package fsm

import (
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

func claimCmd(typ command.Type, owner string, parts ...command.PartitionEpoch) *command.Command {
	return &command.Command{Type: typ, Now: 1e18, Claim: &command.Claim{Group: "g", Owner: owner, Partitions: parts}}
}

func offsetCommit(client string, partition int32, epoch uint64, next int64) *command.Command {
	return &command.Command{Type: command.TypeCommit, Now: 1e18, Commit: &command.Commit{
		ClientID:  client,
		Mutations: []command.Mutation{{Op: command.OpCounterAdd, Namespace: "n", Key: []byte("k"), Delta: 1}},
		Offsets:   []command.Offset{{Group: "g", Topic: "t", Partition: partition, Offset: next, Epoch: epoch}},
	}}
}

func counter(t *testing.T, f *FSM) int64 {
	t.Helper()
	e, _, err := f.Get("n", []byte("k"), KindCounter, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return e.Counter
}

func TestClaimsFenceEarlierOwners(t *testing.T) {
	f := openFSM(t)
	p0 := command.PartitionEpoch{Topic: "t", Partition: 0}
	idx := uint64(0)
	next := func() uint64 { idx++; return idx }

	// An unclaimed partition takes offsets without an epoch.
	if res := apply(t, f, next(), offsetCommit("a", 0, 0, 5)); res.Err != nil {
		t.Fatal(res.Err)
	}
	res := apply(t, f, next(), claimCmd(command.TypeClaim, "a", p0, command.PartitionEpoch{Topic: "t", Partition: 1}))
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	want := []ClaimedPartition{{Topic: "t", Partition: 0, Epoch: 1, Offset: 5, HasOffset: true}, {Topic: "t", Partition: 1, Epoch: 1}}
	if len(res.Claimed) != 2 || res.Claimed[0] != want[0] || res.Claimed[1] != want[1] {
		t.Fatalf("claim = %+v, want %+v", res.Claimed, want)
	}
	if res := apply(t, f, next(), offsetCommit("a", 0, 1, 6)); res.Err != nil {
		t.Fatalf("owner's commit: %v", res.Err)
	}
	// b claims partition 0: a becomes a zombie.
	res = apply(t, f, next(), claimCmd(command.TypeClaim, "b", p0))
	if res.Err != nil || res.Claimed[0].Epoch != 2 || res.Claimed[0].Offset != 6 {
		t.Fatalf("second claim = %+v, %v", res.Claimed, res.Err)
	}
	before := dump(t, f)
	for name, tc := range map[string]struct {
		cmd  *command.Command
		want string
	}{
		"zombie":         {offsetCommit("a", 0, 1, 7), "epoch 1 was superseded by epoch 2 (owner \"b\")"},
		"no epoch":       {offsetCommit("b", 0, 0, 7), "carries no epoch"},
		"future epoch":   {offsetCommit("b", 0, 3, 7), "epoch 3 is from the future"},
		"other client":   {offsetCommit("c", 0, 2, 7), "belongs to owner \"b\", not to client \"c\""},
		"never claimed":  {offsetCommit("b", 9, 1, 7), "epoch 1 was never issued"},
		"claimed, other": {offsetCommit("b", 1, 1, 7), "belongs to owner \"a\""},
	} {
		t.Run(name, func(t *testing.T) {
			res := apply(t, f, next(), tc.cmd)
			var fe *FenceError
			if !errors.As(res.Err, &fe) || !errors.Is(res.Err, ErrFenced) || !errors.Is(res.Err, ErrRejected) {
				t.Fatalf("err = %v, want a *FenceError", res.Err)
			}
			if fe.Field != "offsets[0].epoch" || !strings.Contains(fe.Reason, tc.want) {
				t.Fatalf("err = %v, want field offsets[0].epoch and %q", fe, tc.want)
			}
		})
	}
	if after := dump(t, f); len(after) != len(before) {
		t.Fatalf("fenced commits changed the state: %d keys before, %d after", len(before), len(after))
	}
	if got := counter(t, f); got != 2 {
		t.Fatalf("counter = %d, want 2 (only the unfenced commits)", got)
	}

	// A release by the superseded owner changes nothing; b's own release
	// fences b too.
	if res := apply(t, f, next(), claimCmd(command.TypeRelease, "a", command.PartitionEpoch{Topic: "t", Partition: 0, Epoch: 1})); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res := apply(t, f, next(), offsetCommit("b", 0, 2, 8)); res.Err != nil {
		t.Fatalf("b after a's stale release: %v", res.Err)
	}
	if res := apply(t, f, next(), claimCmd(command.TypeRelease, "b", command.PartitionEpoch{Topic: "t", Partition: 0, Epoch: 2})); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res := apply(t, f, next(), offsetCommit("b", 0, 2, 9)); !strings.Contains(errString(res.Err), "was released") {
		t.Fatalf("commit after release: %v", res.Err)
	}
	claims, err := f.Claims("g")
	if err != nil {
		t.Fatal(err)
	}
	if len(claims) != 2 || claims[0].Epoch != 2 || claims[0].Owner != "b" || !claims[0].Released ||
		claims[1].Epoch != 1 || claims[1].Owner != "a" || claims[1].Released || claims[1].ClaimedAt != 1e18 {
		t.Fatalf("claims = %+v", claims)
	}
	// The next claim after a release takes the next epoch.
	res = apply(t, f, next(), claimCmd(command.TypeClaim, "a", p0))
	if res.Err != nil || res.Claimed[0].Epoch != 3 || res.Claimed[0].Offset != 8 {
		t.Fatalf("claim after release = %+v, %v", res.Claimed, res.Err)
	}
}

func TestClaimWithoutOwnerIsRejected(t *testing.T) {
	f := openFSM(t)
	for i, typ := range []command.Type{command.TypeClaim, command.TypeRelease} {
		res := apply(t, f, uint64(i+1), claimCmd(typ, "", command.PartitionEpoch{Topic: "t"}))
		var re *RejectError
		if !errors.As(res.Err, &re) || re.Field != "owner" {
			t.Fatalf("type %d: err = %v, want a rejection of owner", typ, res.Err)
		}
	}
}

// TestRetryOfAFencedOutCommitIsStillAcknowledged: a commit applied before
// its owner was fenced, retried after, is acknowledged as applied, not
// refused: it did apply, once.
func TestRetryOfAFencedOutCommitIsStillAcknowledged(t *testing.T) {
	f := openFSM(t)
	apply(t, f, 1, claimCmd(command.TypeClaim, "a", command.PartitionEpoch{Topic: "t"}))
	apply(t, f, 2, openSessionCmd("a", 11, 0))
	c := offsetCommit("a", 0, 1, 1)
	inSession(c, 11, 0, 7)
	if res := apply(t, f, 3, c); res.Err != nil {
		t.Fatal(res.Err)
	}
	apply(t, f, 4, claimCmd(command.TypeClaim, "b", command.PartitionEpoch{Topic: "t"}))
	res := apply(t, f, 5, c)
	if res.Err != nil || !res.Duplicate || res.Index != 3 {
		t.Fatalf("retry = %+v, want a duplicate of index 3", res)
	}
	if got := counter(t, f); got != 1 {
		t.Fatalf("counter = %d, want 1", got)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestGroupReadsOffsetsClaimsAndTheAppliedIndexOfOneState: while entries
// apply, every Group read returns the offsets, the claims and the applied
// index of one state. Odd entries commit partition 1's offset as their own
// index; even ones claim partition 0 again, one epoch more each.
func TestGroupReadsOffsetsClaimsAndTheAppliedIndexOfOneState(t *testing.T) {
	f := openFSM(t)
	const entries = 2000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := uint64(1); i <= entries; i++ {
			cmd := commitCmd(int64(i), nil, []command.Offset{{Group: "g", Topic: "t", Partition: 1, Offset: int64(i)}})
			if i%2 == 0 {
				cmd = claimCmd(command.TypeClaim, []string{"a", "b"}[i/2%2], command.PartitionEpoch{Topic: "t", Partition: 0})
			}
			f.Apply(&raft.Log{Index: i, Type: raft.LogCommand, Data: command.Encode(nil, cmd)})
		}
	}()
	reads := 0
	for finished := false; !finished; reads++ {
		select {
		case <-done:
			finished = true
		default:
		}
		g, err := f.Group("g")
		if err != nil {
			t.Fatal(err)
		}
		a := int64(g.Applied)
		wantOffset, wantEpoch := max(a-(1-a%2), 0), uint64(a/2) // the last odd entry's index
		var offset int64
		for _, o := range g.Offsets {
			if o.Partition == 1 {
				offset = o.Offset
			}
		}
		var epoch uint64
		for _, c := range g.Claims {
			if c.Partition == 0 {
				epoch = c.Epoch
			}
		}
		if offset != wantOffset || epoch != wantEpoch {
			t.Fatalf("Group at applied index %d: partition 1 at offset %d, partition 0 at epoch %d; want %d and %d", a, offset, epoch, wantOffset, wantEpoch)
		}
	}
	t.Logf("%d reads while %d entries applied", reads, entries)
}
