package fsm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// changelogLeader applies commands to a state machine as Raft entries,
// keeping the log, as a leader's Raft log holds it.
type changelogLeader struct {
	t    *testing.T
	f    *FSM
	logs []*raft.Log // every entry, from index 1
	term uint64
}

func newChangelogLeader(t *testing.T) *changelogLeader {
	f := openFSM(t)
	f.SetCheckpointDir(filepath.Join(t.TempDir(), "local-checkpoints"))
	return &changelogLeader{t: t, f: f, term: 1}
}

// step applies cmds as one batch of entries, as Raft hands them over.
func (l *changelogLeader) step(cmds ...*command.Command) []*Result {
	l.t.Helper()
	var batch []*raft.Log
	for _, c := range cmds {
		batch = append(batch, &raft.Log{Index: uint64(len(l.logs) + 1), Term: l.term, Type: raft.LogCommand, Data: command.Encode(nil, c)})
		l.logs = append(l.logs, batch[len(batch)-1])
	}
	var out []*Result
	for _, r := range l.f.Batching().ApplyBatch(batch) {
		res := r.(*Result)
		if cp := res.Checkpoint; cp != nil {
			if err := cp.Wait(); err != nil {
				l.t.Fatalf("checkpoint at index %d: %v", cp.Index, err)
			}
		}
		out = append(out, res)
	}
	return out
}

// must applies cmd alone and fails the test if it is refused.
func (l *changelogLeader) must(cmd *command.Command) *Result {
	l.t.Helper()
	res := l.step(cmd)[0]
	if res.Err != nil {
		l.t.Fatalf("entry %d: %v", len(l.logs), res.Err)
	}
	return res
}

// configuration appends a configuration entry, which the state machine
// keeps nothing of and a segment leaves out.
func (l *changelogLeader) configuration() {
	e := &raft.Log{Index: uint64(len(l.logs) + 1), Term: l.term, Type: raft.LogConfiguration, Data: []byte("conf")}
	l.logs = append(l.logs, e)
	l.f.Batching().ApplyBatch([]*raft.Log{e})
}

// changelogFixture is a leader's log from a plain checkpoint (the base) to
// a changelog barrier (the cut), written into three segments.
type changelogFixture struct {
	leader   *changelogLeader
	base     string // a copy of the base's local checkpoint
	segments []string
	want     ChangelogTarget
	cut      *CheckpointResult
	state    [][2][]byte // the leader's state at the cut
}

const clNow = int64(1e18)

func clCommit(muts []command.Mutation, offs ...command.Offset) *command.Command {
	return commitCmd(clNow, muts, offs)
}

func clOffset(p int32, off int64) command.Offset {
	return command.Offset{Group: "g", Topic: "t", Partition: p, Offset: off}
}

func newChangelogFixture(t *testing.T) *changelogFixture {
	t.Helper()
	l := newChangelogLeader(t)
	spec := tumbling("w", 1000, 0, command.AggCount)
	nowMs := clNow / 1e6
	l.must(&command.Command{Type: command.TypeSetClusterID, Now: clNow, ClusterID: "c1"})
	l.must(&command.Command{Type: command.TypeDefineWindows, Now: clNow, Windows: &spec})
	l.must(openSessionCmd("s", 77, clNow))
	l.must(clCommit([]command.Mutation{
		{Op: command.OpPut, Namespace: "ns", Key: []byte("a"), Value: []byte("1")},
		{Op: command.OpCounterAdd, Namespace: "n", Key: []byte("k"), Delta: 5},
	}, clOffset(0, 10), clOffset(1, 20)))
	l.must(inSession(putCmd("s", "sk", "v1"), 77, 0, 1))
	l.must(&command.Command{Type: command.TypeCommit, Now: clNow, Commit: adds(add("w", "u", nowMs), add("w", "u", nowMs+1), add("w", "v", nowMs+2))})
	base := l.must(&command.Command{Type: command.TypeCheckpoint, Now: clNow}).Checkpoint
	fx := &changelogFixture{leader: l, base: filepath.Join(t.TempDir(), "base")}
	if err := os.CopyFS(fx.base, os.DirFS(base.Dir)); err != nil {
		t.Fatal(err)
	}

	// After the base: every kind of entry, rejected and duplicate ones,
	// a completion, a plain barrier, a new term and a configuration.
	l.configuration()
	l.term = 2
	l.must(clCommit([]command.Mutation{
		{Op: command.OpPut, Namespace: "ns", Key: []byte("ttl"), Value: []byte("x"), TTL: 1e9},
		{Op: command.OpCounterAdd, Namespace: "n", Key: []byte("k"), Delta: 3},
		{Op: command.OpMapPut, Namespace: "ns", Key: []byte("m"), SubKey: []byte("s1"), Value: []byte("mv")},
		{Op: command.OpListAppend, Namespace: "ns", Key: []byte("l"), Value: []byte("e1")},
	}, clOffset(0, 15), clOffset(2, 1)))
	if res := l.step(clCommit(nil, clOffset(1, 5)))[0]; !errors.Is(res.Err, ErrRejected) {
		t.Fatalf("an offset moving back: %v, want a rejection", res.Err)
	}
	l.must(inSession(putCmd("s", "sk", "v2"), 77, 0, 2))
	if res := l.step(inSession(putCmd("s", "sk", "v2"), 77, 0, 2))[0]; !res.Duplicate {
		t.Fatalf("a retry: %s, want a duplicate", fmtResult(res))
	}
	l.must(&command.Command{Type: command.TypeCommit, Now: clNow + 3e9, Commit: adds(add("w", "u", nowMs+1500))})
	l.must(&command.Command{Type: command.TypeWindowTick, Now: clNow + 5e9})
	l.must(&command.Command{Type: command.TypeCheckpointDone, Now: clNow + 5e9, Epoch: 1, Offsets: []command.Offset{clOffset(0, 10)}})
	l.must(&command.Command{Type: command.TypeCheckpoint, Now: clNow + 5e9})
	l.must(&command.Command{Type: command.TypeExpire, Now: clNow + 6e9, ExpireLimit: 100})
	l.configuration()
	l.term = 3
	l.must(&command.Command{Type: command.TypeCommitBatch, Now: clNow + 6e9, Batch: []*command.Commit{
		{Mutations: []command.Mutation{{Op: command.OpDeletePrefix, Namespace: "ns", Key: []byte("a")}}},
		{Offsets: []command.Offset{clOffset(0, 1)}}, // refused: moves back
		{Mutations: []command.Mutation{{Op: command.OpCounterAdd, Namespace: "n", Key: []byte("k"), Delta: -1}}},
	}})
	res := l.step(
		clCommit(nil, clOffset(1, 30)),
		&command.Command{Type: command.TypeCheckpoint, Now: clNow + 7e9, Changelog: true},
	)
	fx.cut = res[1].Checkpoint
	if res[0].Err != nil || res[1].Err != nil || fx.cut == nil || !fx.cut.Changelog || fx.cut.Info == nil {
		t.Fatalf("changelog barrier: %s, %s", fmtResult(res[0]), fmtResult(res[1]))
	}
	cut := fx.cut.Index
	if cut != uint64(len(l.logs)) || fx.cut.Epoch != 3 || fx.cut.Term != 3 {
		t.Fatalf("changelog barrier = %+v, want epoch 3 at index %d, term 3", fx.cut, len(l.logs))
	}
	info := fx.cut.Info
	wantOffsets := []command.Offset{clOffset(0, 15), clOffset(1, 30), clOffset(2, 1)}
	if info.AppliedIndex != cut || info.Epoch != 3 || info.ClusterID != "c1" || !slices.Equal(info.Offsets, wantOffsets) {
		t.Fatalf("changelog barrier's info = %+v, want index %d, epoch 3, cluster c1, offsets %v", info, cut, wantOffsets)
	}
	fx.state = dump(t, l.f)
	fx.want = ChangelogTarget{BaseIndex: base.Index, Index: cut, Term: fx.cut.Term, Epoch: fx.cut.Epoch,
		ClusterID: info.ClusterID, Offsets: info.Offsets}

	// Three segments from the base to the cut.
	dir := t.TempDir()
	first := base.Index + 1
	for i, last := range []uint64{first + 2, first + 7, cut} {
		p := filepath.Join(dir, fmt.Sprintf("segment-%d", i))
		w, err := CreateChangelogSegment(p, first, last, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range l.logs[first-1 : last] {
			if err := w.Append(e); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		fx.segments = append(fx.segments, p)
		first = last + 1
	}
	return fx
}

// copyBase copies the base into a new state directory.
func (fx *changelogFixture) copyBase(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.CopyFS(dir, os.DirFS(fx.base)); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestChangelogReplayMakesTheLeadersStateAtTheCut(t *testing.T) {
	fx := newChangelogFixture(t)
	dir := fx.copyBase(t)
	// A local checkpoint of epoch 1 where the replayed state would keep
	// its own: the replayed completion of epoch 1 must not remove it, nor
	// the replayed barrier of epoch 2 make one.
	local := filepath.Join(filepath.Dir(dir), "local-checkpoints")
	kept := filepath.Join(local, fmt.Sprintf("%020d", 1))
	if err := os.MkdirAll(kept, 0o755); err != nil {
		t.Fatal(err)
	}
	// The segments are downloaded beside the base's tables, as a restore
	// does; Pebble leaves them alone.
	var segments []string
	for _, p := range fx.segments {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		q := filepath.Join(dir, "changelog", filepath.Base(p))
		if err := os.MkdirAll(filepath.Dir(q), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(q, b, 0o644); err != nil {
			t.Fatal(err)
		}
		segments = append(segments, q)
	}
	stats, err := ReplayChangelog(context.Background(), dir, segments, fx.want, nil)
	if err != nil {
		t.Fatal(err)
	}
	var commands int
	var size int64
	for _, e := range fx.leader.logs[fx.want.BaseIndex:] {
		if e.Type == raft.LogCommand {
			commands++
		}
	}
	for _, p := range fx.segments {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		size += fi.Size()
	}
	if stats.Segments != 3 || stats.Entries != commands || stats.Bytes != size || stats.Took <= 0 {
		t.Fatalf("stats = %+v, want 3 segments, %d entries, %d bytes", stats, commands, size)
	}
	entries, err := os.ReadDir(local)
	if err != nil || len(entries) != 1 || entries[0].Name() != filepath.Base(kept) {
		t.Fatalf("local checkpoints beside the replayed state: %v, %v; want only the one there before", entries, err)
	}

	f, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := dump(t, f)
	if len(got) != len(fx.state) {
		t.Fatalf("the replayed state has %d keys, the leader's %d", len(got), len(fx.state))
	}
	for i := range got {
		if !bytes.Equal(got[i][0], fx.state[i][0]) || !bytes.Equal(got[i][1], fx.state[i][1]) {
			t.Fatalf("key %d: replayed %x=%x, leader %x=%x", i, got[i][0], got[i][1], fx.state[i][0], fx.state[i][1])
		}
	}
	if f.AppliedIndex() != fx.want.Index {
		t.Fatalf("replayed state at index %d, want %d", f.AppliedIndex(), fx.want.Index)
	}
}

// rewrite copies the segment at p into a new file, changed by edit.
func rewrite(t *testing.T, p string, edit func([]byte) []byte) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(p))
	if err := os.WriteFile(out, edit(b), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// rawSegment encodes a segment of logs, in the order given, without the
// writer's checks.
func rawSegment(t *testing.T, first, last uint64, logs []*raft.Log) string {
	t.Helper()
	b := binary.AppendUvarint(append([]byte(changelogMagic), changelogFormat), first)
	b = appendCRC(binary.AppendUvarint(b, last))
	n := 0
	for _, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		r := binary.AppendUvarint(nil, l.Index)
		r = binary.AppendUvarint(r, l.Term)
		r = binary.AppendUvarint(r, uint64(len(l.Data)))
		b = append(b, appendCRC(append(r, l.Data...))...)
		n++
	}
	b = append(b, appendCRC(binary.AppendUvarint([]byte{changelogTrailer}, uint64(n)))...)
	p := filepath.Join(t.TempDir(), "raw")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestChangelogReplayRefusesWhatDoesNotLeadToTheCut(t *testing.T) {
	fx := newChangelogFixture(t)
	s0, s1, s2 := fx.segments[0], fx.segments[1], fx.segments[2]
	// The first commit of the middle segment that puts "v2".
	var victim *raft.Log
	for _, e := range fx.leader.logs[fx.want.BaseIndex+3:] {
		if e.Type == raft.LogCommand && bytes.Contains(e.Data, []byte("v2")) {
			victim = e
			break
		}
	}
	if victim == nil || victim.Index > fx.want.BaseIndex+8 {
		t.Fatalf("no commit putting v2 in the middle segment: %+v", victim)
	}
	otherBase := fx.leader.f.CheckpointDir(2) // the plain barrier after the base
	for _, tc := range []struct {
		name     string
		segments func() []string
		want     func(w *ChangelogTarget)
		state    func(t *testing.T, dir string) string // prepares the state to replay onto
		segment  string                                // the segment the error names ("" none)
		index    uint64                                // the index the error names (0: not checked)
		reason   string
	}{
		{name: "a flipped byte in a record", segments: func() []string {
			return []string{s0, rewrite(t, s1, func(b []byte) []byte {
				i := bytes.Index(b, []byte("v2"))
				b[i] ^= 0x20
				return b
			}), s2}
		}, segment: "segment-1", index: victim.Index, reason: "CRC-32C"},
		{name: "a missing middle segment", segments: func() []string { return []string{s0, s2} },
			segment: "segment-2", reason: "the one before it ends at"},
		{name: "a last segment that ends before the cut", segments: func() []string { return []string{s0, s1} },
			segment: "segment-1", reason: "the checkpoint's cut is at"},
		{name: "no segment", segments: func() []string { return nil }, reason: "no segment"},
		{name: "a base at another index", state: func(t *testing.T, _ string) string {
			dir := filepath.Join(t.TempDir(), "other")
			if err := os.CopyFS(dir, os.DirFS(otherBase)); err != nil {
				t.Fatal(err)
			}
			return dir
		}, reason: fmt.Sprintf("the changelog starts after %d", fx.want.BaseIndex)},
		{name: "an offset that differs", want: func(w *ChangelogTarget) {
			w.Offsets = slices.Clone(w.Offsets)
			w.Offsets[1].Offset++
		}, reason: `group "g" topic "t" partition 1: offset 30, the checkpoint's is 31`},
		{name: "an offset the checkpoint does not have", want: func(w *ChangelogTarget) {
			w.Offsets = w.Offsets[:2]
		}, reason: `group "g" topic "t" partition 2: offset 1, the checkpoint has none`},
		{name: "an offset the state does not have", want: func(w *ChangelogTarget) {
			w.Offsets = append(slices.Clone(w.Offsets), command.Offset{Group: "h", Topic: "t", Partition: 7, Offset: 3})
		}, reason: `group "h" topic "t" partition 7: no offset, the checkpoint's is 3`},
		{name: "another term at the cut", want: func(w *ChangelogTarget) { w.Term++ },
			segment: "segment-2", index: fx.want.Index, reason: "has term 3, the checkpoint's is 4"},
		{name: "another epoch", want: func(w *ChangelogTarget) { w.Epoch++ }, reason: "at epoch 3, the checkpoint's is 4"},
		{name: "another cluster", want: func(w *ChangelogTarget) { w.ClusterID = "c2" }, reason: `of cluster "c1", the checkpoint of "c2"`},
		{name: "a trailer that counts another number of records", segments: func() []string {
			return []string{s0, s1, rewrite(t, s2, func(b []byte) []byte {
				// The trailer: 0x00, a one-byte count and a CRC.
				count := b[len(b)-5]
				return append(b[:len(b)-6], appendCRC([]byte{changelogTrailer, count + 1})...)
			})}
		}, segment: "segment-2", reason: "the trailer counts"},
		{name: "a truncated segment", segments: func() []string {
			return []string{s0, rewrite(t, s1, func(b []byte) []byte { return b[:len(b)-3] }), s2}
		}, segment: "segment-1", reason: "truncated"},
		{name: "bytes after the trailer", segments: func() []string {
			return []string{s0, rewrite(t, s1, func(b []byte) []byte { return append(b, 0) }), s2}
		}, segment: "segment-1", reason: "1 bytes after the trailer"},
		{name: "not a segment", segments: func() []string {
			return []string{rewrite(t, s0, func(b []byte) []byte { b[0] = 'X'; return b }), s1, s2}
		}, segment: "segment-0", reason: "magic"},
		{name: "records out of order", segments: func() []string {
			logs := slices.Clone(fx.leader.logs[fx.want.BaseIndex:])
			i := slices.Index(logs, victim)
			logs[i], logs[i+1] = logs[i+1], logs[i]
			return []string{rawSegment(t, fx.want.BaseIndex+1, fx.want.Index, logs)}
		}, segment: "raw", index: victim.Index, reason: "out of order"},
		{name: "a state that does not apply", state: func(t *testing.T, dir string) string {
			// The offset of partition 1 is 3 bytes: the commit moving it
			// cannot be applied, which would stop a replica.
			db, err := pebble.Open(dir, &pebble.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Set(offsetKey("g", "t", 1), []byte{1, 2, 3}, pebble.Sync); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			return dir
		}, segment: "segment-0", reason: "offset of 3 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			segments, want, dir := fx.segments, fx.want, fx.copyBase(t)
			if tc.segments != nil {
				segments = tc.segments()
			}
			if tc.want != nil {
				tc.want(&want)
			}
			if tc.state != nil {
				dir = tc.state(t, dir)
			}
			_, err := ReplayChangelog(context.Background(), dir, segments, want, nil)
			t.Log(err)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("replay: %v; want ErrCorrupt saying %q", err, tc.reason)
			}
			if tc.segment != "" && !strings.Contains(err.Error(), tc.segment) {
				t.Fatalf("replay: %v; want it to name %s", err, tc.segment)
			}
			var ce *ChangelogError
			if tc.index != 0 && (!errors.As(err, &ce) || ce.Index != tc.index || !strings.HasSuffix(ce.Segment, tc.segment)) {
				t.Fatalf("replay: %v; want a *ChangelogError at index %d of %s", err, tc.index, tc.segment)
			}
		})
	}
}

func TestChangelogBarrierMakesNoLocalCheckpoint(t *testing.T) {
	l := newChangelogLeader(t)
	l.must(clCommit(nil, clOffset(0, 1)))
	plain := l.must(&command.Command{Type: command.TypeCheckpoint, Now: clNow}).Checkpoint
	if plain.Changelog || plain.Info != nil || plain.Dir != l.f.CheckpointDir(1) {
		t.Fatalf("plain barrier = %+v, want epoch 1's local checkpoint and no info", plain)
	}
	before := dirListing(t, l.f.checkpointDir)
	cp := l.must(&command.Command{Type: command.TypeCheckpoint, Now: clNow, Changelog: true}).Checkpoint
	if !cp.Changelog || cp.Dir != "" || cp.Epoch != 2 || cp.Info == nil || cp.Wait() != nil {
		t.Fatalf("changelog barrier = %+v, want epoch 2 without a directory", cp)
	}
	if after := dirListing(t, l.f.checkpointDir); after != before {
		t.Fatalf("the changelog barrier changed the local checkpoints:\n%s\nwas\n%s", after, before)
	}
	// Removals still wait for the newest local checkpoint made.
	if l.f.lastCkpt != plain {
		t.Fatalf("the newest local checkpoint is %+v, want epoch 1's", l.f.lastCkpt)
	}
	// The changelog epoch's completion removes the local checkpoints
	// before it.
	l.must(&command.Command{Type: command.TypeCheckpointDone, Now: clNow, Epoch: 2})
	l.f.removals.wait()
	if _, err := os.Stat(plain.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("epoch 1's local checkpoint survived epoch 2's completion: %v", err)
	}
	if st, err := l.f.CheckpointState(); err != nil || st.LastEpoch != 2 || st.Completed != 2 {
		t.Fatalf("checkpoint state = %+v, %v", st, err)
	}
}

func TestChangelogBarrierReadsTheStateAsOfItself(t *testing.T) {
	l := newChangelogLeader(t)
	l.must(&command.Command{Type: command.TypeSetClusterID, Now: clNow, ClusterID: "c1"})
	barrier := &command.Command{Type: command.TypeCheckpoint, Now: clNow, Changelog: true}
	for _, tc := range []struct {
		name string
		cmds []*command.Command
		at   int // the barrier's position in cmds
		want []command.Offset
	}{
		{"in the middle of a batch", []*command.Command{
			clCommit(nil, clOffset(0, 5)), barrier, clCommit(nil, clOffset(0, 9), clOffset(1, 1)), clCommit(nil, clOffset(0, 12)),
		}, 1, []command.Offset{clOffset(0, 5)}},
		{"first in a batch", []*command.Command{barrier, clCommit(nil, clOffset(1, 4))}, 0, []command.Offset{clOffset(0, 12), clOffset(1, 1)}},
		{"last in a batch", []*command.Command{clCommit(nil, clOffset(2, 8)), barrier}, 1, []command.Offset{clOffset(0, 12), clOffset(1, 4), clOffset(2, 8)}},
	} {
		res := l.step(tc.cmds...)
		cp := res[tc.at].Checkpoint
		index := uint64(len(l.logs) - len(tc.cmds) + tc.at + 1)
		if cp == nil || cp.Info == nil || cp.Index != index {
			t.Fatalf("%s: barrier result %s", tc.name, fmtResult(res[tc.at]))
		}
		if i := cp.Info; i.AppliedIndex != index || i.Epoch != cp.Epoch || i.ClusterID != "c1" || !slices.Equal(i.Offsets, tc.want) || i.Keys != 0 {
			t.Fatalf("%s: info %+v, want index %d, epoch %d, cluster c1, offsets %v", tc.name, *i, index, cp.Epoch, tc.want)
		}
	}
}

// TestChangelogSegmentHoldsTheCommandEntriesItWasGiven: the segment holds
// the command entries, and its tee saw exactly the file's bytes.
func TestChangelogSegmentHoldsTheCommandEntriesItWasGiven(t *testing.T) {
	p := filepath.Join(t.TempDir(), "seg")
	var tee bytes.Buffer
	w, err := CreateChangelogSegment(p, 10, 20, &tee)
	if err != nil {
		t.Fatal(err)
	}
	in := []*raft.Log{
		{Index: 10, Term: 2, Type: raft.LogCommand, Data: []byte("a")},
		{Index: 11, Term: 2, Type: raft.LogNoop},
		{Index: 12, Term: 3, Type: raft.LogCommand, Data: bytes.Repeat([]byte("b"), 300)},
		{Index: 14, Term: 3, Type: raft.LogCommand},
	}
	for _, l := range in {
		if err := w.Append(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Size() != w.Bytes() {
		t.Fatalf("segment of %d bytes by Bytes, %v on disk", w.Bytes(), fi)
	}
	if file, err := os.ReadFile(p); err != nil || !bytes.Equal(tee.Bytes(), file) {
		t.Fatalf("the tee saw %d bytes, the file holds %d (%v); want the same bytes", tee.Len(), len(file), err)
	}
	s, err := openSegment(p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	var got []*raft.Log
	for {
		l, err := s.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, l)
	}
	want := []*raft.Log{in[0], in[2], in[3]}
	if s.first != 10 || s.last != 20 || len(got) != len(want) {
		t.Fatalf("read %d..%d and %d records, want 10..20 and %d", s.first, s.last, len(got), len(want))
	}
	for i := range got {
		if got[i].Index != want[i].Index || got[i].Term != want[i].Term || got[i].Type != raft.LogCommand || !bytes.Equal(got[i].Data, want[i].Data) {
			t.Fatalf("record %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestChangelogSegmentRefusesEntriesOutOfItsRangeOrOrder(t *testing.T) {
	for _, tc := range []struct {
		name    string
		indexes []uint64
	}{
		{"before the range", []uint64{9}},
		{"after the range", []uint64{10, 21}},
		{"the same index twice", []uint64{10, 12, 12}},
		{"going back", []uint64{10, 13, 11}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "seg")
			w, err := CreateChangelogSegment(p, 10, 20, nil)
			if err != nil {
				t.Fatal(err)
			}
			var last error
			for _, i := range tc.indexes {
				last = w.Append(&raft.Log{Index: i, Type: raft.LogCommand, Data: []byte("x")})
			}
			if last == nil {
				t.Fatal("the last entry was appended")
			}
			if err := w.Close(); err == nil {
				t.Fatal("Close after a failed Append succeeded")
			}
			w.Abort()
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("Abort left the segment: %v", err)
			}
		})
	}
	if _, err := CreateChangelogSegment(filepath.Join(t.TempDir(), "seg"), 5, 4, nil); err == nil {
		t.Fatal("a segment of 5..4 was created")
	}
}

// TestChangelogReplayStopsWhenItsContextEnds: a replay given up on (a
// restore's --timeout) stops before its next batch with the context's
// cause, not as a damaged changelog, which a restore would answer by
// falling back to an older checkpoint.
func TestChangelogReplayStopsWhenItsContextEnds(t *testing.T) {
	fx := newChangelogFixture(t)
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := errors.New("the restore's --timeout")
	cancel(stop)
	stats, err := ReplayChangelog(ctx, fx.copyBase(t), fx.segments, fx.want, nil)
	if !errors.Is(err, stop) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("replay with its context ended: %v; want the context's cause, not ErrCorrupt", err)
	}
	if stats.Entries != 0 {
		t.Errorf("replay with its context ended applied %d entries", stats.Entries)
	}
}
