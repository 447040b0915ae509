package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/statedhq/stated/raftstore/command"
)

// wfsm drives an FSM with window commands, numbering entries itself.
type wfsm struct {
	t     *testing.T
	f     *FSM
	index uint64
	now   int64 // the leader's clock, Unix ns
}

func newWFSM(t *testing.T) *wfsm {
	return &wfsm{t: t, f: openFSM(t), now: 1_700_000_000_000_000_000}
}

func (w *wfsm) apply(cmd *command.Command) *Result {
	w.t.Helper()
	w.index++
	if cmd.Now == 0 {
		cmd.Now = w.now
	}
	return apply(w.t, w.f, w.index, cmd)
}

func (w *wfsm) define(spec command.WindowSpec) *Result {
	w.t.Helper()
	return w.apply(&command.Command{Type: command.TypeDefineWindows, Windows: &spec})
}

func (w *wfsm) mustDefine(spec command.WindowSpec) {
	w.t.Helper()
	if res := w.define(spec); res.Err != nil {
		w.t.Fatalf("define %s: %v", spec.Namespace, res.Err)
	}
}

func (w *wfsm) commit(c *command.Commit) *Result {
	w.t.Helper()
	return w.apply(&command.Command{Type: command.TypeCommit, Commit: c})
}

func (w *wfsm) mustCommit(c *command.Commit) *Result {
	w.t.Helper()
	res := w.commit(c)
	if res.Err != nil {
		w.t.Fatalf("commit: %v", res.Err)
	}
	return res
}

func (w *wfsm) tick() *Result {
	w.t.Helper()
	return w.apply(&command.Command{Type: command.TypeWindowTick})
}

func add(ns, key string, t int64) command.WindowAdd {
	return command.WindowAdd{Namespace: ns, Key: []byte(key), EventTimeMs: t}
}

func addIntRec(ns, key string, t, v int64) command.WindowAdd {
	a := add(ns, key, t)
	a.Int = v
	return a
}

func adds(as ...command.WindowAdd) *command.Commit { return &command.Commit{WindowAdds: as} }

func tumbling(ns string, size, grace int64, agg command.Aggregate) command.WindowSpec {
	return command.WindowSpec{Namespace: ns, Shape: command.ShapeTumbling, SizeMs: size, GraceMs: grace,
		Aggregate: agg, Emit: command.EmitFinal, Late: command.LateDrop}
}

// fmtEmissions renders emissions compactly for comparisons in tests.
func fmtEmissions(es []command.Emission) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "%s#%d k%d %s [%d,%d) n=%d i=%d f=%g b=%q v=%q tr=%v wm=%d\n", e.Namespace, e.ID, e.Kind, e.Key,
			e.StartMs, e.EndMs, e.Count, e.Int, e.Float, e.Bytes, e.Values, e.Truncated, e.Watermark)
	}
	return b.String()
}

func TestWindowsTumblingCloseInTheEntryThatMovesTheWatermark(t *testing.T) {
	w := newWFSM(t)
	w.mustDefine(tumbling("clicks", 1000, 500, command.AggSumInt))
	res := w.mustCommit(adds(addIntRec("clicks", "u1", 100, 2), addIntRec("clicks", "u1", 900, 3), addIntRec("clicks", "u2", 1200, 7)))
	if len(res.Emissions) != 0 || len(res.Adds) != 3 || res.Adds[0] != command.AddOnTime {
		t.Fatalf("adds %v emissions %s", res.Adds, fmtEmissions(res.Emissions))
	}
	// Watermark 1499: [0,1000) closes at 1500, not yet.
	res = w.mustCommit(adds(addIntRec("clicks", "u2", 1499, 1)))
	if len(res.Emissions) != 0 {
		t.Fatalf("closed early: %s", fmtEmissions(res.Emissions))
	}
	res = w.mustCommit(adds(addIntRec("clicks", "u2", 1500, 1)))
	want := "clicks#1 k1 u1 [0,1000) n=2 i=5 f=0 b=\"\" v=[] tr=false wm=1500\n"
	if got := fmtEmissions(res.Emissions); got != want {
		t.Fatalf("emissions\n%s\nwant\n%s", got, want)
	}
	pend, err := w.f.Emissions("clicks", 0, 0)
	if err != nil || fmtEmissions(pend) != want {
		t.Fatalf("outbox %s %v", fmtEmissions(pend), err)
	}
	// A late record is dropped and counted.
	res = w.mustCommit(adds(addIntRec("clicks", "u1", 999, 1)))
	if res.Adds[0] != command.AddLateDropped {
		t.Fatalf("late add: %v", res.Adds)
	}
	st, err := w.f.WindowStatuses()
	if err != nil || len(st) != 1 || st[0].LateDropped != 1 || st[0].Pending != 1 || st[0].OpenWindows != 1 {
		t.Fatalf("status %+v %v", st, err)
	}
	got, err := w.f.Windows("clicks", []byte("u1"), 0, 10_000)
	if err != nil || len(got) != 1 || !got[0].Closed || got[0].Int != 5 {
		t.Fatalf("windows %+v %v", got, err)
	}
	// Ack it; acking it again refuses the commit.
	w.mustCommit(&command.Commit{Acks: []command.EmissionAck{{Namespace: "clicks", ID: 1}}})
	res = w.commit(&command.Commit{Acks: []command.EmissionAck{{Namespace: "clicks", ID: 1}}})
	var re *RejectError
	if !errors.As(res.Err, &re) || re.Field != "acks[0].id" {
		t.Fatalf("second ack: %v", res.Err)
	}
}

func TestWindowsSmokeEveryShape(t *testing.T) {
	w := newWFSM(t)
	w.mustDefine(command.WindowSpec{Namespace: "h", Shape: command.ShapeHopping, SizeMs: 3000, AdvanceMs: 1000,
		Aggregate: command.AggCount, Emit: command.EmitUpdates, Late: command.LateReturn})
	w.mustDefine(command.WindowSpec{Namespace: "s", Shape: command.ShapeSession, GapMs: 200,
		Aggregate: command.AggList, MaxListValues: 2, Emit: command.EmitFinal, Late: command.LateReturn})
	res := w.mustCommit(adds(add("h", "k", 2500), add("s", "k", 10), add("s", "k", 300), add("s", "k", 150)))
	t.Logf("%v\n%s", res.Adds, fmtEmissions(res.Emissions))
	res = w.mustCommit(adds(add("h", "k", 9000), add("s", "k", 9000)))
	t.Logf("%v\n%s", res.Adds, fmtEmissions(res.Emissions))
	if !bytes.Contains([]byte(fmtEmissions(res.Emissions)), []byte("s#1 k1 k [10,301) n=3")) {
		t.Fatalf("session not merged")
	}
}
