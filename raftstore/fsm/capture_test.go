package fsm

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// segmentBytes returns the bytes of the segment first..last of the
// leader's log: written to a file from the log's entries when c is nil,
// else made of c's records in memory.
func segmentBytes(t *testing.T, l *changelogLeader, first, last uint64, c *CapturedChangelog) []byte {
	t.Helper()
	if c != nil {
		seg, err := c.Segment(first, last)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if _, err := seg.WriteTo(&b); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	p := filepath.Join(t.TempDir(), "seg")
	w, err := CreateChangelogSegment(p, first, last, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range l.logs[first-1 : last] {
		if err = w.Append(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The records the apply loop captures make, byte for byte, the segment
// that reading the same entries from the log makes: every kind of command
// entry (rejected and duplicate ones, a batch of commits, completions,
// barriers), configuration entries and new terms in between, entries
// after the barrier in the barrier's own batch going to the next segment.
func TestCapturedChangelogIsTheSegmentReadFromTheLog(t *testing.T) {
	l := newChangelogLeader(t)
	l.f.CaptureChangelog(64 << 20)
	spec := tumbling("w", 1000, 0, command.AggCount)
	nowMs := clNow / 1e6
	l.must(&command.Command{Type: command.TypeSetClusterID, Now: clNow, ClusterID: "c1"})
	l.must(&command.Command{Type: command.TypeDefineWindows, Now: clNow, Windows: &spec})
	l.must(openSessionCmd("s", 77, clNow))
	base := l.must(&command.Command{Type: command.TypeCheckpoint, Now: clNow}).Checkpoint
	if base.Captured == nil || base.Captured.From != 1 || base.Captured.Last != base.Index || base.Captured.Count != 4 {
		t.Fatalf("the table barrier's capture = %+v, want entries 1..%d in 4 records", base.Captured, base.Index)
	}
	base.Captured.Release()

	l.configuration()
	l.term = 2
	l.must(clCommit([]command.Mutation{
		{Op: command.OpPut, Namespace: "ns", Key: []byte("a"), Value: bytes.Repeat([]byte("v"), 3*captureChunkSize/2)},
		{Op: command.OpCounterAdd, Namespace: "n", Key: []byte("k"), Delta: 3},
	}, clOffset(0, 15)))
	if res := l.step(clCommit(nil, clOffset(0, 5)))[0]; !errors.Is(res.Err, ErrRejected) {
		t.Fatalf("an offset moving back: %v, want a rejection", res.Err)
	}
	l.must(inSession(putCmd("s", "sk", "v2"), 77, 0, 1))
	if res := l.step(inSession(putCmd("s", "sk", "v2"), 77, 0, 1))[0]; !res.Duplicate {
		t.Fatalf("a retry: %s, want a duplicate", fmtResult(res))
	}
	l.must(&command.Command{Type: command.TypeCommit, Now: clNow + 3e9, Commit: adds(add("w", "u", nowMs+1500))})
	l.must(&command.Command{Type: command.TypeCheckpointDone, Now: clNow + 5e9, Epoch: 1, Offsets: []command.Offset{clOffset(0, 10)}})
	l.configuration()
	l.term = 3
	l.must(&command.Command{Type: command.TypeCommitBatch, Now: clNow + 6e9, Batch: []*command.Commit{
		{Mutations: []command.Mutation{{Op: command.OpDeletePrefix, Namespace: "ns", Key: []byte("a")}}},
		{Offsets: []command.Offset{clOffset(0, 1)}}, // refused: moves back
	}})
	res := l.step(
		clCommit(nil, clOffset(1, 30)),
		&command.Command{Type: command.TypeCheckpoint, Now: clNow + 7e9, Changelog: true},
		clCommit([]command.Mutation{{Op: command.OpPut, Namespace: "ns", Key: []byte("after"), Value: []byte("1")}}),
		&command.Command{Type: command.TypeWindowTick, Now: clNow + 8e9},
	)
	cut := res[1].Checkpoint
	if cut == nil || cut.Captured == nil {
		t.Fatalf("changelog barrier %+v: nothing captured", cut)
	}
	c := cut.Captured
	if c.From != base.Index+1 || c.Last != cut.Index || c.First != base.Index+2 || c.Count != 9 {
		t.Fatalf("captured %d..%d, first record %d, %d records; want %d..%d, first %d, 9 records",
			c.From, c.Last, c.First, c.Count, base.Index+1, cut.Index, base.Index+2)
	}
	fromLog := segmentBytes(t, l, c.From, c.Last, nil)
	if got := segmentBytes(t, l, c.From, c.Last, c); !bytes.Equal(got, fromLog) {
		t.Fatalf("the segment from the captured records (%d bytes) differs from the one read from the log (%d bytes)", len(got), len(fromLog))
	}

	// The segment from the first index captured, or from a later one
	// (after a table checkpoint that holds entries past its barrier),
	// which leaves out the records before it, is the one the log makes;
	// one that starts before what was captured, or ends elsewhere,
	// cannot be made of them.
	for _, first := range []uint64{c.From, c.From + 1, c.First + 1, c.First + 4, c.Last} {
		want := segmentBytes(t, l, first, c.Last, nil)
		seg, err := c.Segment(first, c.Last)
		if err != nil {
			t.Fatal(err)
		}
		var written bytes.Buffer
		if _, err := seg.WriteTo(&written); err != nil {
			t.Fatal(err)
		}
		// What it writes, and what its readers read, twice.
		for _, got := range [][]byte{written.Bytes(), readAll(t, seg.Reader()), readAll(t, seg.Reader())} {
			if !bytes.Equal(got, want) || seg.Size() != int64(len(want)) {
				t.Fatalf("the segment %d..%d held in memory (%d bytes, Size %d) differs from the one read from the log (%d bytes)", first, c.Last, len(got), seg.Size(), len(want))
			}
		}
	}
	for _, r := range [][2]uint64{{c.From - 1, c.Last}, {c.From, c.Last - 1}, {c.From, c.Last + 1}, {0, c.Last}} {
		if _, err := c.Segment(r[0], r[1]); err == nil {
			t.Fatalf("a segment of %d..%d from entries captured %d..%d", r[0], r[1], c.From, c.Last)
		}
	}
	c.Release()

	// The entries after the barrier, in its batch and after it, are the
	// next segment's.
	next := l.must(&command.Command{Type: command.TypeCheckpoint, Now: clNow + 9e9, Changelog: true}).Checkpoint
	n := next.Captured
	if n == nil || n.From != cut.Index+1 || n.Last != next.Index || n.Count != 3 {
		t.Fatalf("the next capture = %+v, want %d..%d in 3 records", n, cut.Index+1, next.Index)
	}
	if got, want := segmentBytes(t, l, n.From, n.Last, n), segmentBytes(t, l, n.From, n.Last, nil); !bytes.Equal(got, want) {
		t.Fatal("the next segment from the captured records differs from the one read from the log")
	}
	n.Release()
}

// Past its limit, capture drops what it holds and pauses until the next
// barrier, which then hands over nothing; the barrier after that has the
// entries since the one before.
func TestCaptureOverItsLimitHandsOverNothingUntilTheNextBarrier(t *testing.T) {
	l := newChangelogLeader(t)
	l.f.CaptureChangelog(4 << 10)
	big := bytes.Repeat([]byte("x"), 3<<10)
	put := func(k string) {
		l.must(clCommit([]command.Mutation{{Op: command.OpPut, Namespace: "ns", Key: []byte(k), Value: big}}))
	}
	put("a")
	put("b") // over 4 KiB
	put("c")
	first := l.must(&command.Command{Type: command.TypeCheckpoint, Now: clNow, Changelog: true}).Checkpoint
	if first.Captured != nil {
		t.Fatalf("a barrier after the limit was passed handed over %+v, want nothing", first.Captured)
	}
	put("d")
	second := l.must(&command.Command{Type: command.TypeCheckpoint, Now: clNow, Changelog: true}).Checkpoint
	c := second.Captured
	if c == nil || c.From != first.Index+1 || c.Last != second.Index || c.Count != 2 {
		t.Fatalf("the barrier after = %+v, want %d..%d in 2 records", c, first.Index+1, second.Index)
	}
	if got, want := segmentBytes(t, l, c.From, c.Last, c), segmentBytes(t, l, c.From, c.Last, nil); !bytes.Equal(got, want) {
		t.Fatal("the segment from the captured records differs from the one read from the log")
	}
}

// Capture turned on mid-way covers the entries applied after; a snapshot
// restored by Raft breaks it until the next barrier; turned off, a
// barrier hands over nothing.
func TestCaptureStartsAtTheNextEntryAndBreaksOnARestore(t *testing.T) {
	l := newChangelogLeader(t)
	put := func(k string) {
		l.must(clCommit([]command.Mutation{{Op: command.OpPut, Namespace: "ns", Key: []byte(k), Value: []byte("v")}}))
	}
	put("a")
	if cp := l.must(&command.Command{Type: command.TypeCheckpoint, Now: clNow, Changelog: true}).Checkpoint; cp.Captured != nil {
		t.Fatalf("capture off: the barrier handed over %+v", cp.Captured)
	}
	put("b")
	l.f.CaptureChangelog(1 << 20)
	on := uint64(len(l.logs)) + 1
	put("c")
	cp := l.must(&command.Command{Type: command.TypeCheckpoint, Now: clNow, Changelog: true}).Checkpoint
	if c := cp.Captured; c == nil || c.From != on || c.First != on || c.Count != 2 {
		t.Fatalf("capture turned on before entry %d: the barrier handed over %+v", on, c)
	}

	// A snapshot from a leader further on replaces the state.
	leader := openFSM(t)
	fillFSM(t, leader, "leader", 50)
	if err := l.f.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, leader)))); err != nil {
		t.Fatal(err)
	}
	for len(l.logs) < 50 {
		l.logs = append(l.logs, &raft.Log{Index: uint64(len(l.logs) + 1), Type: raft.LogNoop})
	}
	put("d")
	if cp := l.must(&command.Command{Type: command.TypeCheckpoint, Now: clNow, Changelog: true}).Checkpoint; cp.Captured != nil {
		t.Fatalf("after a restored snapshot the barrier handed over %+v, want nothing", cp.Captured)
	}
	put("e")
	if cp := l.must(&command.Command{Type: command.TypeCheckpoint, Now: clNow, Changelog: true}).Checkpoint; cp.Captured == nil || cp.Captured.Count != 2 {
		t.Fatalf("the barrier after that handed over %+v, want 2 records", cp.Captured)
	}

	l.f.CaptureChangelog(0)
	put("f")
	if cp := l.must(&command.Command{Type: command.TypeCheckpoint, Now: clNow, Changelog: true}).Checkpoint; cp.Captured != nil {
		t.Fatalf("capture turned off: the barrier handed over %+v", cp.Captured)
	}
}

func readAll(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
