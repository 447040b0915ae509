package fsm

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// applyInBatches applies the commands of data to two new state machines,
// one entry at a time to the first and with ApplyBatch in batches of
// random sizes (one entry included, configuration changes mixed in, as
// Raft sends them) to the second. Every entry's result, the applied index
// after every batch, the local checkpoints of barriers and the final bytes
// must be the same.
func applyInBatches(t *testing.T, seed uint64, data [][]byte) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 0xba7c4))
	var logs []*raft.Log
	for _, d := range data {
		if r.IntN(16) == 0 {
			logs = append(logs, &raft.Log{Index: uint64(len(logs) + 1), Type: raft.LogConfiguration, Data: []byte("conf")})
		}
		logs = append(logs, &raft.Log{Index: uint64(len(logs) + 1), Term: 1, Type: raft.LogCommand, Data: d})
	}
	one, batched := openFSM(t), openFSM(t)
	want := make([]*Result, len(logs))
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			want[i] = one.Apply(l).(*Result)
			if cp := want[i].Checkpoint; cp != nil {
				if err := cp.Wait(); err != nil {
					t.Fatalf("seed %d: checkpoint at index %d: %v", seed, l.Index, err)
				}
			}
		}
	}
	var lastCmd uint64
	var cps []*CheckpointResult
	for i := 0; i < len(logs); {
		n := 1 + r.IntN(24)
		if r.IntN(4) == 0 {
			n = 1
		}
		batch := logs[i:min(i+n, len(logs))]
		got := batched.Batching().ApplyBatch(batch)
		if len(got) != len(batch) {
			t.Fatalf("seed %d: ApplyBatch of %d entries returned %d results", seed, len(batch), len(got))
		}
		for j, l := range batch {
			if l.Type != raft.LogCommand {
				if got[j] != nil {
					t.Fatalf("seed %d: configuration entry %d returned %v, want nil", seed, l.Index, got[j])
				}
				continue
			}
			lastCmd = l.Index
			res := got[j].(*Result)
			if d := diffBatchResult(res, want[i+j]); d != "" {
				t.Fatalf("seed %d: entry %d in a batch of %d (position %d): %s\none by one: %s\ncommand: %s",
					seed, l.Index, len(batch), j, d, fmtResult(want[i+j]), describe(l.Data))
			}
			if cp := res.Checkpoint; cp != nil {
				cps = append(cps, cp)
			}
		}
		// Once the batch's local checkpoints and removals are done
		// (a later barrier or completion may remove an earlier one).
		for _, cp := range cps {
			if err := cp.Wait(); err != nil {
				t.Fatalf("seed %d: checkpoint at index %d: %v", seed, cp.Index, err)
			}
		}
		batched.removals.wait()
		for _, cp := range cps {
			checkBarrierCut(t, seed, cp, batch[len(batch)-1].Index)
		}
		cps = cps[:0]
		if got := batched.AppliedIndex(); got != lastCmd {
			t.Fatalf("seed %d: applied index %d after a batch ending at %d, want %d (its last command)", seed, got, batch[len(batch)-1].Index, lastCmd)
		}
		i += len(batch)
	}
	sameContents(t, one, batched)
}

// checkBarrierCut checks that a barrier's local checkpoint, made, holds
// the state as of the barrier or as of a later entry of its batch (it is
// made while the rest of the batch applies), never of an entry before it.
func checkBarrierCut(t *testing.T, seed uint64, cp *CheckpointResult, batchEnd uint64) {
	t.Helper()
	if _, err := os.Stat(cp.Dir); errors.Is(err, os.ErrNotExist) {
		return // a later barrier or completion in the batch removed it
	}
	info, err := ReadCheckpoint(cp.Dir)
	if err != nil {
		t.Fatalf("seed %d: read checkpoint at index %d: %v", seed, cp.Index, err)
	}
	if info.AppliedIndex < cp.Index || info.AppliedIndex > batchEnd {
		t.Fatalf("seed %d: checkpoint of the barrier at index %d holds applied index %d (batch ends at %d)", seed, cp.Index, info.AppliedIndex, batchEnd)
	}
	if info.Epoch < cp.Epoch {
		t.Fatalf("seed %d: checkpoint of epoch %d at index %d holds epoch %d", seed, cp.Epoch, cp.Index, info.Epoch)
	}
}

// diffBatchResult compares every field of two results of one entry.
func diffBatchResult(got, want *Result) string {
	if d := diffResults(got, want); d != "" {
		return d
	}
	if !reflect.DeepEqual(got.Claimed, want.Claimed) || !reflect.DeepEqual(got.Adds, want.Adds) ||
		!reflect.DeepEqual(got.Emissions, want.Emissions) || got.WindowsCreated != want.WindowsCreated ||
		got.Checkpoint != nil && got.Checkpoint.Index != want.Checkpoint.Index {
		return fmt.Sprintf("%s vs %s", fmtResult(got), fmtResult(want))
	}
	return ""
}

func fmtResult(r *Result) string {
	s := fmt.Sprintf("{index %d dup %v err %v claimed %v adds %v emissions %v created %v", r.Index, r.Duplicate, r.Err, r.Claimed, r.Adds, r.Emissions, r.WindowsCreated)
	if r.Session != nil {
		s += fmt.Sprintf(" session %+v", *r.Session)
	}
	if r.Checkpoint != nil {
		s += fmt.Sprintf(" checkpoint epoch %d index %d", r.Checkpoint.Epoch, r.Checkpoint.Index)
	}
	return s + "}"
}

func encodeAll(cmds ...*command.Command) [][]byte {
	var out [][]byte
	for _, c := range cmds {
		out = append(out, command.Encode(nil, c))
	}
	return out
}

// batchLogs makes one batch of command entries from index 1.
func batchLogs(cmds ...*command.Command) []*raft.Log {
	var logs []*raft.Log
	for i, d := range encodeAll(cmds...) {
		logs = append(logs, &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: d})
	}
	return logs
}

func TestApplyBatchEntriesSeeTheEarlierEntriesOfTheirBatch(t *testing.T) {
	const now = int64(1_700_000_000_000_000_000)
	add := func(delta int64) command.Mutation {
		return command.Mutation{Op: command.OpCounterAdd, Namespace: "n", Key: []byte("c"), Delta: delta}
	}
	put := command.Mutation{Op: command.OpPut, Namespace: "n", Key: []byte("p"), Value: []byte("v")}
	puts := func(n int) []command.Mutation {
		var muts []command.Mutation
		for i := range n {
			muts = append(muts, command.Mutation{Op: command.OpPut, Namespace: "n", Key: fmt.Appendf(nil, "b%d", i), Value: []byte("v")})
		}
		return muts
	}
	session := func(seq uint64, hash byte, muts ...command.Mutation) *command.Command {
		return &command.Command{Type: command.TypeCommit, Now: now, Commit: &command.Commit{
			ClientID: "cl", SessionID: 7, Seq: seq, Hash: [16]byte{hash}, Mutations: muts}}
	}
	open := &command.Command{Type: command.TypeOpenSession, Now: now,
		Session: &command.Session{ClientID: "cl", ID: 7, IdleTimeout: int64(time.Hour)}}
	claim := &command.Command{Type: command.TypeClaim, Now: now, Claim: &command.Claim{
		Group: "g", Owner: "o", Partitions: []command.PartitionEpoch{{Topic: "t", Partition: 0}}}}
	fenced := func(epoch uint64, offset int64) *command.Command {
		return &command.Command{Type: command.TypeCommit, Now: now, Commit: &command.Commit{
			ClientID: "o", Offsets: []command.Offset{{Group: "g", Topic: "t", Partition: 0, Offset: offset, Epoch: epoch}}}}
	}
	for _, tc := range []struct {
		name  string
		cmds  []*command.Command
		check func(t *testing.T, f *FSM, res []*Result)
	}{
		{"two counter adds to one key", []*command.Command{commitCmd(now, []command.Mutation{add(2)}, nil), commitCmd(now, []command.Mutation{add(3)}, nil)},
			func(t *testing.T, f *FSM, res []*Result) {
				if v := counterValue(t, f, "n", "c", now); v != 5 {
					t.Fatalf("counter = %d after adds of 2 and 3 in one batch, want 5", v)
				}
			}},
		{"a sequence retried in the batch that applied it", []*command.Command{open, session(1, 11, add(1)), session(1, 11, add(1)), session(2, 12, add(1))},
			func(t *testing.T, f *FSM, res []*Result) {
				if !res[2].Duplicate || res[2].Index != 2 || res[2].Err != nil {
					t.Fatalf("the retry returned %s, want a duplicate of index 2", fmtResult(res[2]))
				}
				if v := counterValue(t, f, "n", "c", now); v != 2 {
					t.Fatalf("counter = %d, want 2: the retry must not apply again", v)
				}
			}},
		{"a sequence reused with other contents in the batch", []*command.Command{open, session(1, 11, add(1)), session(1, 99, add(1))},
			func(t *testing.T, f *FSM, res []*Result) {
				var se *SessionError
				if !errors.As(res[2].Err, &se) || se.Reason != SequenceReused {
					t.Fatalf("the reuse returned %s, want a sequence-reused refusal", fmtResult(res[2]))
				}
			}},
		{"a claim then an offset commit of its epoch, and one of the epoch before", []*command.Command{claim, fenced(1, 10), fenced(0, 11)},
			func(t *testing.T, f *FSM, res []*Result) {
				if res[1].Err != nil || len(res[0].Claimed) != 1 || res[0].Claimed[0].Epoch != 1 {
					t.Fatalf("claim %s then commit %s: want epoch 1 claimed and the commit applied", fmtResult(res[0]), fmtResult(res[1]))
				}
				if !errors.Is(res[2].Err, ErrFenced) {
					t.Fatalf("a commit of epoch 0 after the claim returned %s, want fenced", fmtResult(res[2]))
				}
			}},
		{"an offset lower than the one the entry before stored", []*command.Command{fenced(0, 10), fenced(0, 5)},
			func(t *testing.T, f *FSM, res []*Result) {
				var re *RejectError
				if !errors.As(res[1].Err, &re) || re.Field != "offsets[0].offset" {
					t.Fatalf("the lower offset returned %s, want a rejection of offsets[0].offset", fmtResult(res[1]))
				}
			}},
		{"a rejected entry that wrote before its refusal leaves nothing", []*command.Command{
			commitCmd(now, []command.Mutation{add(math.MaxInt64 - 1)}, nil),
			commitCmd(now, []command.Mutation{put, add(5)}, nil), // the put, then an overflow
			commitCmd(now, []command.Mutation{add(-1)}, nil)},
			func(t *testing.T, f *FSM, res []*Result) {
				if !errors.Is(res[1].Err, ErrRejected) {
					t.Fatalf("the overflowing add returned %s, want a rejection", fmtResult(res[1]))
				}
				if _, ok, err := f.Get("n", []byte("p"), KindValue, nil, now); ok || err != nil {
					t.Fatalf("the rejected entry's put is visible (found %v, err %v)", ok, err)
				}
				if v := counterValue(t, f, "n", "c", now); v != math.MaxInt64-2 {
					t.Fatalf("counter = %d, want %d", v, int64(math.MaxInt64-2))
				}
			}},
		{"commits too big to share the batch, between small ones", []*command.Command{
			commitCmd(now, []command.Mutation{add(1)}, nil),
			commitCmd(now, append(puts(groupMaxOps), add(10)), nil),            // alone: reads the add before it
			commitCmd(now, []command.Mutation{add(100)}, nil),                  // reads the big one from the database
			commitCmd(now, append(puts(groupMaxOps), add(math.MaxInt64)), nil), // alone, rejected after its puts
			commitCmd(now, []command.Mutation{add(1000)}, nil)},
			func(t *testing.T, f *FSM, res []*Result) {
				if res[1].Err != nil || !errors.Is(res[3].Err, ErrRejected) {
					t.Fatalf("big commits returned %s and %s, want applied and rejected", fmtResult(res[1]), fmtResult(res[3]))
				}
				if v := counterValue(t, f, "n", "c", now); v != 1111 {
					t.Fatalf("counter = %d, want 1111", v)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := batchLogs(tc.cmds...)
			one := openFSM(t)
			var want []*Result
			for _, l := range logs {
				want = append(want, one.Apply(l).(*Result))
			}
			f := openFSM(t)
			out := f.Batching().ApplyBatch(logs)
			var got []*Result
			for i, o := range out {
				got = append(got, o.(*Result))
				if d := diffBatchResult(got[i], want[i]); d != "" {
					t.Fatalf("entry %d: batched %s", i+1, d)
				}
			}
			tc.check(t, f, got)
			tc.check(t, one, want)
			if f.AppliedIndex() != uint64(len(logs)) {
				t.Fatalf("applied index %d, want %d", f.AppliedIndex(), len(logs))
			}
			sameContents(t, one, f)
		})
	}
}

func counterValue(t testing.TB, f *FSM, ns, key string, now int64) int64 {
	t.Helper()
	e, ok, err := f.Get(ns, []byte(key), KindCounter, nil, now)
	if err != nil || !ok {
		t.Fatalf("counter %s/%s: found %v, err %v", ns, key, ok, err)
	}
	return e.Counter
}

// TestApplyBatchMovesTheAppliedIndexOnlyOverCommittedWrites has readers
// wait for each index while batches apply: whatever index they see, the
// writes up to it must be readable.
func TestApplyBatchMovesTheAppliedIndexOnlyOverCommittedWrites(t *testing.T) {
	f := openFSM(t)
	const entries = 600
	add := command.Mutation{Op: command.OpCounterAdd, Namespace: "n", Key: []byte("c"), Delta: 1}
	var logs []*raft.Log
	for i := 1; i <= entries; i++ {
		logs = append(logs, &raft.Log{Index: uint64(i), Type: raft.LogCommand, Data: command.Encode(nil, commitCmd(1, []command.Mutation{add}, nil))})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for want := uint64(1); want <= entries; want++ {
				if err := f.WaitApplied(ctx, want); err != nil {
					errs <- err
					return
				}
				idx := f.AppliedIndex()
				e, ok, err := f.Get("n", []byte("c"), KindCounter, nil, 1)
				if err != nil || !ok || e.Counter < int64(idx) {
					errs <- fmt.Errorf("applied index %d but the counter reads %d (found %v, err %v)", idx, e.Counter, ok, err)
					return
				}
				want = idx
			}
		}()
	}
	r := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < len(logs); {
		n := 1 + r.IntN(64)
		f.Batching().ApplyBatch(logs[i:min(i+n, len(logs))])
		i += n
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// A commit of more than groupMaxOps writes applies in a Pebble batch of
// its own, after the entries before it are committed. Wherever it sits in
// Raft's batch (first, last, between others, next to another one), its
// writes must be committed, with the applied index moving past it only
// then: the batch's end once lost a large commit that ended it, while the
// applied index said it was in.
func TestApplyBatchCommitsAGroupLargerThanAShare(t *testing.T) {
	small := func(i int) []byte {
		return command.Encode(nil, commitCmd(1, []command.Mutation{{Op: command.OpPut, Namespace: "n", Key: fmt.Appendf(nil, "s%d", i), Value: []byte("v")}}, nil))
	}
	large := func(i int) []byte {
		muts := make([]command.Mutation, groupMaxOps+1)
		for j := range muts {
			muts[j] = command.Mutation{Op: command.OpPut, Namespace: "n", Key: fmt.Appendf(nil, "l%d/%d", i, j), Value: []byte("v")}
		}
		return command.Encode(nil, commitCmd(1, muts, nil))
	}
	for _, shape := range []string{"L", "SL", "LS", "SLS", "LL", "SLL", "LSL", "SSLSSL"} {
		t.Run(shape, func(t *testing.T) {
			var logs []*raft.Log
			for i, c := range shape {
				d := small(i)
				if c == 'L' {
					d = large(i)
				}
				logs = append(logs, &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: d})
			}
			dir := filepath.Join(t.TempDir(), "state")
			batched, err := Open(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			one := openFSM(t)
			for i, res := range batched.Batching().ApplyBatch(logs) {
				if r := res.(*Result); r.Err != nil || r.Index != logs[i].Index {
					t.Fatalf("entry %d: %+v", logs[i].Index, r)
				}
				one.Apply(logs[i])
			}
			if got := batched.AppliedIndex(); got != uint64(len(logs)) {
				t.Fatalf("applied index %d after a batch of %d entries", got, len(logs))
			}
			sameContents(t, one, batched)
			// And in Pebble, not only in memory: reopened, it has them.
			if err := batched.Close(); err != nil {
				t.Fatal(err)
			}
			reopened, err := Open(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer reopened.Close()
			if got := reopened.AppliedIndex(); got != uint64(len(logs)) {
				t.Fatalf("reopened: applied index %d, want %d", got, len(logs))
			}
			sameContents(t, one, reopened)
		})
	}
}

// TestACommitBatchEntryIsNeverCommittedInParts: the commits of one
// TypeCommitBatch entry share its index, so a large one among them must
// not get a Pebble batch of its own, as a large entry among entries does:
// committed apart, it would be recorded under the entry's applied index
// while the commits after it were not yet written, and a crash then would
// skip them on restart.
func TestACommitBatchEntryIsNeverCommittedInParts(t *testing.T) {
	large := &command.Command{Type: command.TypeCommit, Commit: &command.Commit{Mutations: make([]command.Mutation, groupMaxOps+1)}}
	g := group{entries: 2}
	if !g.alone(large) {
		t.Fatal("a large commit among several entries does not go alone: the case this test guards is gone")
	}
	g.whole = true
	if g.alone(large) {
		t.Fatal("a large commit inside a commit batch entry goes into a Pebble batch of its own")
	}

	// And a batch entry of a small, a large and a small commit applies
	// each of them.
	f := openFSM(t)
	var muts []command.Mutation
	for i := range groupMaxOps + 1 {
		muts = append(muts, command.Mutation{Op: command.OpPut, Namespace: "ns", Key: fmt.Appendf(nil, "big%d", i), Value: []byte("v")})
	}
	put := func(k string) *command.Commit {
		return &command.Commit{Mutations: []command.Mutation{{Op: command.OpPut, Namespace: "ns", Key: []byte(k), Value: []byte("v")}}}
	}
	data := command.Encode(nil, &command.Command{Type: command.TypeCommitBatch, Now: 1, Batch: []*command.Commit{put("a"), {Mutations: muts}, put("b")}})
	res := f.Apply(&raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: data}).(*Result)
	if res.Err != nil || len(res.Batch) != 3 {
		t.Fatalf("batch entry: err %v, %d results", res.Err, len(res.Batch))
	}
	for i, r := range res.Batch {
		if r.Err != nil || r.Index != 1 {
			t.Fatalf("commit %d: index %d, err %v", i, r.Index, r.Err)
		}
	}
	for _, k := range []string{"a", "b", "big0", fmt.Sprintf("big%d", groupMaxOps)} {
		if _, ok, err := f.Get("ns", []byte(k), KindValue, nil, 1); err != nil || !ok {
			t.Fatalf("key %s after the batch entry: found %v, %v", k, ok, err)
		}
	}
	if got := f.AppliedIndex(); got != 1 {
		t.Fatalf("applied index %d, want 1", got)
	}
}

// TestACommitBatchEntrysCommitsSeeTheWritesOfTheOnesBeforeThem: the
// commits of a TypeCommitBatch entry share one Pebble batch, indexed only
// when one of them reads state (commitReadsState). A commit that adds to a
// counter, or moves an offset, must see what the commits before it in the
// entry wrote; so must a delete, which looks for the keys it deletes
// (clearRange); commits that only write must land in their order.
func TestACommitBatchEntrysCommitsSeeTheWritesOfTheOnesBeforeThem(t *testing.T) {
	add := func(k string, d int64) *command.Commit {
		return &command.Commit{Mutations: []command.Mutation{{Op: command.OpCounterAdd, Namespace: "ns", Key: []byte(k), Delta: d}}}
	}
	put := func(k, v string) *command.Commit {
		return &command.Commit{Mutations: []command.Mutation{{Op: command.OpPut, Namespace: "ns", Key: []byte(k), Value: []byte(v)}}}
	}
	del := func(k string) *command.Commit {
		return &command.Commit{Mutations: []command.Mutation{{Op: command.OpDelete, Namespace: "ns", Key: []byte(k)}}}
	}
	offset := func(o int64) *command.Commit {
		return &command.Commit{Offsets: []command.Offset{{Group: "g", Topic: "t", Partition: 0, Offset: o}}}
	}
	mapDel := &command.Commit{Mutations: []command.Mutation{{Op: command.OpMapDelete, Namespace: "ns", Key: []byte("m"), SubKey: []byte("s")}}}
	delPrefix := &command.Commit{Mutations: []command.Mutation{{Op: command.OpDeletePrefix, Namespace: "ns", Key: []byte("p")}}}
	for _, c := range []*command.Commit{add("k", 1), offset(1), del("k"), delPrefix, {Mutations: []command.Mutation{{Op: command.OpListAppend, Namespace: "ns", Key: []byte("l"), Value: []byte("x")}}}} {
		if !commitReadsState(&command.Command{Type: command.TypeCommit, Commit: c}) {
			t.Fatalf("commitReadsState(%+v) is false", c)
		}
	}
	for _, c := range []*command.Commit{put("k", "v"), mapDel, {}} {
		if commitReadsState(&command.Command{Type: command.TypeCommit, Commit: c}) {
			t.Fatalf("commitReadsState(%+v) is true", c)
		}
	}

	f := openFSM(t)
	apply := func(index uint64, commits ...*command.Commit) *Result {
		t.Helper()
		data := command.Encode(nil, &command.Command{Type: command.TypeCommitBatch, Now: 1, Batch: commits})
		res := f.Apply(&raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}).(*Result)
		if res.Err != nil || len(res.Batch) != len(commits) {
			t.Fatalf("batch entry %d: err %v, %d results for %d commits", index, res.Err, len(res.Batch), len(commits))
		}
		return res
	}

	// Write-only commits: in order, the last write of a key wins.
	apply(1, put("a", "1"), put("b", "1"), put("a", "2"), put("c", "1"))
	for k, want := range map[string]string{"a": "2", "b": "1", "c": "1"} {
		if e, ok, err := f.Get("ns", []byte(k), KindValue, nil, 1); err != nil || !ok || string(e.Value) != want {
			t.Fatalf("key %s after the write-only batch: %q, found %v, err %v; want %q", k, e.Value, ok, err, want)
		}
	}

	// Deletes after writes of the same entry: each finds the keys the
	// commits before it wrote, and they go.
	apply(2, put("d", "1"), del("d"), put("p1", "1"), put("p2", "1"), delPrefix, put("e", "1"))
	for k, want := range map[string]bool{"d": false, "p1": false, "p2": false, "e": true, "a": true} {
		if _, ok, err := f.Get("ns", []byte(k), KindValue, nil, 1); err != nil || ok != want {
			t.Fatalf("key %s after a batch entry deleting what it wrote: found %v, err %v; want found %v", k, ok, err, want)
		}
	}

	// Reads after writes: the second add sees the first, the lower offset
	// is refused against the one the commit before it stored.
	res := apply(3, put("x", "1"), add("n", 2), put("y", "1"), add("n", 3), offset(10), offset(5))
	if got := counterValue(t, f, "ns", "n", 1); got != 5 {
		t.Fatalf("counter after adds of 2 and 3 in one batch entry: %d, want 5", got)
	}
	if err := res.Batch[5].Err; !errors.Is(err, ErrRejected) {
		t.Fatalf("offset 5 after offset 10 in the same batch entry: err %v, want a rejection", err)
	}
	offs, err := f.Offsets("g")
	if err != nil || len(offs) != 1 || offs[0].Offset != 10 {
		t.Fatalf("offsets of group g: %+v, err %v; want offset 10", offs, err)
	}
}

// The state machine decodes every entry into memory it reuses for the
// next (command.Decoder): each entry of a batch, large commits, a commit
// batch's commits and refused commits among them, must still write
// exactly what it encoded, and the buffers the entries came in may be
// reused once applied.
func TestEveryEntryOfABatchWritesWhatItEncoded(t *testing.T) {
	f := openFSM(t)
	r := rand.New(rand.NewPCG(7, 11))
	want := map[string]string{}
	commit := func(entry, n int) *command.Commit {
		c := &command.Commit{}
		for j := range n {
			k, v := fmt.Sprintf("k%03d", r.IntN(400)), fmt.Sprintf("e%d-m%d-%d", entry, j, r.Uint32())
			c.Mutations = append(c.Mutations, command.Mutation{Op: command.OpPut, Namespace: "ns", Key: []byte(k), Value: []byte(v)})
		}
		if r.IntN(5) == 0 {
			// Refused: it writes nothing.
			c.Mutations[r.IntN(n)].Op = 99
		}
		return c
	}
	refused := func(c *command.Commit) bool {
		return slices.ContainsFunc(c.Mutations, func(m command.Mutation) bool { return m.Op == 99 })
	}
	record := func(c *command.Commit, res *Result) {
		if refused(c) != errors.Is(res.Err, ErrRejected) || res.Err != nil && !refused(c) {
			t.Fatalf("a commit refused %v: err %v", refused(c), res.Err)
		}
		if res.Err == nil {
			for _, m := range c.Mutations {
				want[string(m.Key)] = string(m.Value)
			}
		}
	}
	index := uint64(0)
	for round := range 30 {
		var logs []*raft.Log
		var cmds []*command.Command
		for e := range 1 + r.IntN(6) {
			entry := round*10 + e
			cmd := &command.Command{Type: command.TypeCommit, Now: 1, Commit: commit(entry, 1+r.IntN(1200))}
			if r.IntN(3) == 0 {
				cmd = &command.Command{Type: command.TypeCommitBatch, Now: 1, Batch: []*command.Commit{
					commit(entry, 1+r.IntN(200)), commit(entry, 3), commit(entry, 1+r.IntN(900))}}
			}
			index++
			logs = append(logs, &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: command.Encode(nil, cmd)})
			cmds = append(cmds, cmd)
		}
		for j, res := range f.Batching().ApplyBatch(logs) {
			res := res.(*Result)
			if cmds[j].Type == command.TypeCommit {
				record(cmds[j].Commit, res)
				continue
			}
			for k, c := range cmds[j].Batch {
				record(c, res.Batch[k])
			}
		}
		for _, l := range logs {
			clear(l.Data) // Raft's buffers are its own again
		}
		for k, v := range want {
			e, found, err := f.Get("ns", []byte(k), KindValue, nil, 0)
			if err != nil || !found || string(e.Value) != v {
				t.Fatalf("round %d: %s = %q (found %v, err %v), want %q", round, k, e.Value, found, err, v)
			}
		}
	}
}
