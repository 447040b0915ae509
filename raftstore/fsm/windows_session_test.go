package fsm

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	"github.com/statedhq/stated/raftstore/command"
)

// sessionStartSpec is a session namespace whose sessions of key "u" share a
// data segment (segments of 1000 ms) and stay retained for 2 s after their
// last event.
func sessionStartSpec() command.WindowSpec {
	return command.WindowSpec{Namespace: "s", Shape: command.ShapeSession, GapMs: 30, RetentionMs: 2000,
		Aggregate: command.AggSumInt, Emit: command.EmitFinal, Late: command.LateDrop}
}

func (w *wfsm) mustShow(what, key, want string) {
	w.t.Helper()
	got, err := w.f.Windows("s", []byte(key), 0, command.MaxEventTime+1)
	if err != nil || fmtWindows(got) != want {
		w.t.Fatalf("%s: windows of %q\n%s(err %v)\nwant\n%s", what, key, fmtWindows(got), err, want)
	}
}

func (w *wfsm) mustEmit(what string, c *command.Commit, want string) {
	w.t.Helper()
	res := w.mustCommit(c)
	for i, st := range res.Adds {
		if st != command.AddOnTime {
			w.t.Fatalf("%s: add %d is %v, want on time", what, i, st)
		}
	}
	if got := fmtEmissions(res.Emissions); got != want {
		w.t.Fatalf("%s: emissions\n%s\nwant\n%s", what, got, want)
	}
}

func (w *wfsm) mustCountOpen(what string, want int64) {
	w.t.Helper()
	sts, err := w.f.WindowStatuses()
	if err != nil || len(sts) != 1 || sts[0].OpenWindows != want {
		w.t.Fatalf("%s: statuses %+v (err %v), want %d open windows", what, sts, err, want)
	}
	open, err := w.f.OpenWindows("s", nil, 0, 0)
	if err != nil || int64(len(open)) != want {
		w.t.Fatalf("%s: open windows\n%s(err %v), want %d", what, fmtWindows(open), err, want)
	}
}

// TestWindowClosedSessionSurvivesANewSessionWithTheSameStart: a closed
// session is retained for queries; a later record at its start is on time
// when it bridges into an open session, and the merged session then starts
// where the closed one does, in the same segment. Both must stay: the
// closed one with its result until retention drops it, the open one until
// it closes with its own final. Before the fix the new session's write
// replaced the closed one's record.
func TestWindowClosedSessionSurvivesANewSessionWithTheSameStart(t *testing.T) {
	w := newWFSM(t)
	w.mustDefine(sessionStartSpec())
	other := func(ts int64) command.WindowAdd { return addIntRec("s", "other", ts, 0) }

	w.mustEmit("first session", adds(addIntRec("s", "u", 2060, 1)), "")
	w.mustEmit("the watermark passes 2090", adds(other(2095)),
		"s#1 k1 u [2060,2061) n=1 i=1 f=0 b=\"\" v=[] tr=false wm=2095\n")
	// 2080 is on time (2080+30 > 2095) and starts a session of its own:
	// closed sessions never merge. 2060 bridges into it (2080-30 <= 2060).
	w.mustEmit("a new session", adds(addIntRec("s", "u", 2080, 10)), "")
	w.mustEmit("a record at the closed session's start", adds(addIntRec("s", "u", 2060, 100)), "")
	w.mustShow("after the merge", "u",
		"\"u\" [2060,2061) close=2090 closed=true n=1 i=1 f=0 b=\"\" v=[] tr=false\n"+
			"\"u\" [2060,2081) close=2110 closed=false n=2 i=110 f=0 b=\"\" v=[] tr=false\n")
	w.mustCountOpen("after the merge", 2)

	// A Raft snapshot carries both.
	view := windowView(t, w.f) + sessionView(t, w.f)
	restored := restoreCopy(t, w.f)
	if got := windowView(t, restored) + sessionView(t, restored); got != view {
		t.Fatalf("after a snapshot restore\n%s\nwant\n%s", got, view)
	}

	w.mustEmit("the open session closes", adds(other(2110)),
		"s#2 k1 u [2060,2081) n=2 i=110 f=0 b=\"\" v=[] tr=false wm=2110\n")
	w.mustCountOpen("after the close", 1)
	// A third session with the same start: wm 2110, so 2085 is on time and
	// 2060 bridges into it.
	w.mustEmit("a third session", adds(addIntRec("s", "u", 2085, 1000), addIntRec("s", "u", 2060, 10000)), "")
	w.mustEmit("the third closes", adds(other(2200)),
		"s#3 k1 u [2060,2086) n=2 i=11000 f=0 b=\"\" v=[] tr=false wm=2200\n"+
			"s#4 k1 other [2095,2111) n=2 i=0 f=0 b=\"\" v=[] tr=false wm=2200\n")
	w.mustShow("three closed sessions at one start", "u",
		"\"u\" [2060,2061) close=2090 closed=true n=1 i=1 f=0 b=\"\" v=[] tr=false\n"+
			"\"u\" [2060,2081) close=2110 closed=true n=2 i=110 f=0 b=\"\" v=[] tr=false\n"+
			"\"u\" [2060,2086) close=2115 closed=true n=2 i=11000 f=0 b=\"\" v=[] tr=false\n")
	w.mustCountOpen("all of u closed", 1)

	// Retention: segment 2 goes once the watermark reaches 3*1000 + 2000.
	w.mustEmit("before retention ends", adds(other(4999)), "s#5 k1 other [2200,2201) n=1 i=0 f=0 b=\"\" v=[] tr=false wm=4999\n")
	if got, _ := w.f.Windows("s", []byte("u"), 0, command.MaxEventTime+1); len(got) != 3 {
		t.Fatalf("dropped before retention ended: %s", fmtWindows(got))
	}
	w.mustEmit("retention ends", adds(other(5000)), "")
	w.mustShow("after retention", "u", "")
	if n := countPrefix(t, w.f, prefixWindowData); n != 1 {
		t.Fatalf("%d window data records after retention, want 1 (other's open session)", n)
	}
}

// sessionView renders key "u"'s sessions in namespace "s" (windowView
// shows keys "a" and "b" only).
func sessionView(t *testing.T, f *FSM) string {
	t.Helper()
	ws, err := f.Windows("s", []byte("u"), 0, command.MaxEventTime+1)
	if err != nil {
		t.Fatal(err)
	}
	return fmtWindows(ws)
}

// restoreCopy restores f's Raft snapshot into a new state machine, which
// must hold the same bytes.
func restoreCopy(t *testing.T, f *FSM) *FSM {
	t.Helper()
	g := openFSM(t)
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, f)))); err != nil {
		t.Fatal(err)
	}
	sameContents(t, f, g)
	return g
}

// TestWindowSessionsWrittenInTheOldKeyFormStillQueryMergeAndClose writes
// session state the way stated wrote it before displaced sessions existed
// (every session under ns, segment, key, start; the bytes spelled out
// here, not by the encoder under test), as an old data dir or checkpoint
// holds it, and checks that it is read, merged around and closed right.
func TestWindowSessionsWrittenInTheOldKeyFormStillQueryMergeAndClose(t *testing.T) {
	w := newWFSM(t)
	w.mustDefine(sessionStartSpec())
	dataKey := func(key string, start int64) []byte {
		k := appendComponent([]byte{0x0C}, []byte("s"))
		k = binary.BigEndian.AppendUint64(k, 2) // segment: 2060..2090 / 1000
		k = appendComponent(k, []byte(key))
		return binary.BigEndian.AppendUint64(k, uint64(start)^1<<63)
	}
	indexKey := func(closeMs int64, key string, start int64) []byte {
		k := appendComponent([]byte{0x0D}, []byte("s"))
		k = binary.BigEndian.AppendUint64(k, uint64(closeMs)^1<<63)
		k = appendComponent(k, []byte(key))
		return binary.BigEndian.AppendUint64(k, uint64(start)^1<<63)
	}
	agg := func(n, sum, last int64) []byte {
		return (&aggState{Count: n, Int: sum, SessionLast: last}).encode(nil)
	}
	seg2 := binary.BigEndian.AppendUint64(nil, 2)
	meta := windowMeta{Watermark: 2095, MaxEventTime: 2095, NextEmissionID: 2, OpenWindows: 2}
	b := w.f.db.NewBatch()
	for _, kv := range [][2][]byte{
		{dataKey("u", 2060), agg(1, 1, 2060)}, // closed at 2090, its final (id 1) acknowledged
		{dataKey("u", 2080), agg(1, 10, 2080)}, {indexKey(2110, "u", 2080), seg2},
		{dataKey("v", 2090), agg(1, 7, 2090)}, {indexKey(2120, "v", 2090), seg2},
		{windowMetaKey("s"), meta.encode()},
	} {
		if err := b.Set(kv[0], kv[1], nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(nil); err != nil {
		t.Fatal(err)
	}
	b.Close()
	// Written behind the state machine's back, as an older release left
	// them: what it cached of the namespace's meta is forgotten, as when
	// it opens such a database.
	w.f.records.reset()

	w.mustShow("old state", "u",
		"\"u\" [2060,2061) close=2090 closed=true n=1 i=1 f=0 b=\"\" v=[] tr=false\n"+
			"\"u\" [2080,2081) close=2110 closed=false n=1 i=10 f=0 b=\"\" v=[] tr=false\n")
	w.mustCountOpen("old state", 2)
	w.mustEmit("a record at the closed session's start", adds(addIntRec("s", "u", 2060, 100)), "")
	w.mustShow("after the merge", "u",
		"\"u\" [2060,2061) close=2090 closed=true n=1 i=1 f=0 b=\"\" v=[] tr=false\n"+
			"\"u\" [2060,2081) close=2110 closed=false n=2 i=110 f=0 b=\"\" v=[] tr=false\n")
	w.mustCountOpen("after the merge", 2)
	w.mustEmit("both close", adds(addIntRec("s", "other", 2200, 0)),
		"s#2 k1 u [2060,2081) n=2 i=110 f=0 b=\"\" v=[] tr=false wm=2200\n"+
			"s#3 k1 v [2090,2091) n=1 i=7 f=0 b=\"\" v=[] tr=false wm=2200\n")
	w.mustShow("closed", "v", "\"v\" [2090,2091) close=2120 closed=true n=1 i=7 f=0 b=\"\" v=[] tr=false\n")
	w.mustCountOpen("closed", 1)
	w.mustEmit("retention ends", adds(addIntRec("s", "other", 5000, 0)),
		"s#4 k1 other [2200,2201) n=1 i=0 f=0 b=\"\" v=[] tr=false wm=5000\n")
	w.mustShow("after retention", "u", "")
	if n := countPrefix(t, w.f, prefixWindowData); n != 1 {
		t.Fatalf("%d window data records after retention, want 1 (other's open session)", n)
	}
}
