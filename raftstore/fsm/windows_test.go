package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"

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

// stateWithoutAppliedIndex is every key and value but the applied index,
// which every entry moves, refused or not.
func stateWithoutAppliedIndex(t *testing.T, f *FSM) string {
	t.Helper()
	var b strings.Builder
	for _, kv := range dump(t, f) {
		if !bytes.Equal(kv[0], keyAppliedIndex) {
			fmt.Fprintf(&b, "%x=%x\n", kv[0], kv[1])
		}
	}
	return b.String()
}

func TestWindowDefineIsValidatedAtApplyAndImmutable(t *testing.T) {
	w := newWFSM(t)
	spec := tumbling("clicks", 60_000, 500, command.AggCount)
	if res := w.define(spec); res.Err != nil || !res.WindowsCreated {
		t.Fatalf("define: %+v", res)
	}
	before := stateWithoutAppliedIndex(t, w.f)
	// The same spec again, also with its defaults spelled out: a no-op.
	same := spec
	same.RetentionMs, same.IdleTimeoutMs, same.MaxPendingEmissions = 60_500, command.DefaultIdleTimeoutMs, command.DefaultMaxPendingEmissions
	for _, s := range []command.WindowSpec{spec, same} {
		if res := w.define(s); res.Err != nil || res.WindowsCreated {
			t.Fatalf("identical redefinition: %+v", res)
		}
	}
	other := spec
	other.SizeMs = 30_000
	bad := spec
	bad.Namespace, bad.GraceMs = "other", -1
	badRet := spec
	badRet.Namespace, badRet.RetentionMs = "other", 1000
	opaque := spec
	opaque.Namespace, opaque.Shape, opaque.AdvanceMs, opaque.Aggregate = "other", command.ShapeHopping, 1000, command.AggOpaque
	for _, c := range []struct {
		name, field, reason string
		spec                command.WindowSpec
	}{
		{"redefined differently", "size_ms", `redefining window namespace "clicks": size_ms is 60000, not 30000`, other},
		{"negative grace", "grace_ms", "must not be negative", bad},
		{"retention below size + grace", "retention_ms", "below size + grace = 60500 ms", badRet},
		{"opaque hopping", "aggregate", "opaque works with tumbling windows only", opaque},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := w.define(c.spec)
			var re *RejectError
			if !errors.As(res.Err, &re) || re.Field != c.field || !strings.Contains(re.Reason, c.reason) {
				t.Fatalf("define: %v, want a refusal of %s (%s)", res.Err, c.field, c.reason)
			}
			if got := stateWithoutAppliedIndex(t, w.f); got != before {
				t.Fatalf("a refused definition changed the state")
			}
		})
	}
	got, ok, err := w.f.WindowSpec("clicks")
	if err != nil || !ok || got != spec.WithDefaults() {
		t.Fatalf("spec %+v %v %v", got, ok, err)
	}
}

func TestWindowCommitRefusalsApplyNothing(t *testing.T) {
	w := newWFSM(t)
	w.mustDefine(tumbling("sums", 1000, 0, command.AggSumInt))
	w.mustDefine(tumbling("counts", 1000, 0, command.AggCount))
	// One closed window pending in the outbox, one open window.
	w.mustCommit(adds(addIntRec("sums", "k", 10, 1), addIntRec("sums", "k", 2500, 1)))
	if p, _ := w.f.Emissions("sums", 0, 0); len(p) != 1 {
		t.Fatalf("pending %s", fmtEmissions(p))
	}
	before := stateWithoutAppliedIndex(t, w.f)
	ok := addIntRec("counts", "k", 2600, 1)
	for _, c := range []struct {
		name, field string
		commit      command.Commit
	}{
		{"undefined namespace", "window_adds[1].namespace", command.Commit{WindowAdds: []command.WindowAdd{ok, add("nope", "k", 1)}}},
		{"negative event time", "window_adds[1].event_time_ms", command.Commit{WindowAdds: []command.WindowAdd{ok, add("counts", "k", -1)}}},
		{"event time past the maximum", "window_adds[0].event_time_ms", command.Commit{WindowAdds: []command.WindowAdd{add("counts", "k", command.MaxEventTime+1)}}},
		{"hint to an undefined namespace", "watermark_hints[0].namespace", command.Commit{WindowAdds: []command.WindowAdd{ok}, WatermarkHints: []command.WatermarkHint{{Namespace: "nope"}}}},
		{"hint out of range", "watermark_hints[0].time_ms", command.Commit{WatermarkHints: []command.WatermarkHint{{Namespace: "sums", TimeMs: -3}}}},
		{"ack never emitted", "acks[0].id", command.Commit{WindowAdds: []command.WindowAdd{ok}, Acks: []command.EmissionAck{{Namespace: "sums", ID: 17}}}},
		{"ack twice", "acks[1].id", command.Commit{Acks: []command.EmissionAck{{Namespace: "sums", ID: 1}, {Namespace: "sums", ID: 1}}}},
		{"ack to an undefined namespace", "acks[0].namespace", command.Commit{Acks: []command.EmissionAck{{Namespace: "x", ID: 1}}}},
		{"timer to an undefined namespace", "timers[0].namespace", command.Commit{Timers: []command.TimerOp{{Namespace: "x", TimeMs: 5}}}},
		{"timer out of range", "timers[0].time_ms", command.Commit{Timers: []command.TimerOp{{Namespace: "sums", TimeMs: -5}}}},
		{"sum overflow", "window_adds[1].int_value", command.Commit{WindowAdds: []command.WindowAdd{ok, addIntRec("sums", "k", 2600, math.MaxInt64)}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The keyed mutation and offset of the same commit do not apply either.
			c.commit.Mutations = []command.Mutation{{Op: command.OpPut, Namespace: "kv", Key: []byte("x"), Value: []byte("y")}}
			c.commit.Offsets = []command.Offset{{Group: "g", Topic: "t", Offset: 5}}
			res := w.commit(&c.commit)
			var re *RejectError
			if !errors.As(res.Err, &re) || re.Field != c.field {
				t.Fatalf("commit: %v, want a refusal naming %s", res.Err, c.field)
			}
			if len(res.Adds)+len(res.Emissions) != 0 {
				t.Fatalf("a refused commit returned adds %v and emissions %s", res.Adds, fmtEmissions(res.Emissions))
			}
			if got := stateWithoutAppliedIndex(t, w.f); got != before {
				t.Fatalf("a refused commit changed the state")
			}
		})
	}
	var re *RejectError
	res := w.commit(&command.Commit{Acks: []command.EmissionAck{{Namespace: "sums", ID: 17}}})
	if !errors.As(res.Err, &re) || re.Reason != `emission 17 of "sums" is not pending (never emitted or already acknowledged)` {
		t.Fatalf("ack refusal reads %v", res.Err)
	}
}

func TestWindowQuietSourceStopsHoldingTheWatermarkAfterItsIdleTimeout(t *testing.T) {
	w := newWFSM(t)
	spec := tumbling("clicks", 1000, 0, command.AggCount)
	spec.IdleTimeoutMs = 5000
	w.mustDefine(spec)
	a := func(src string, t int64) command.WindowAdd {
		ad := add("clicks", "u", t)
		ad.Source = src
		return ad
	}
	w.mustCommit(adds(a("p0", 100), a("p1", 200)))
	quietSince := w.now
	// p0 runs ahead; p1 holds the watermark at 200.
	w.now += 1e9
	res := w.mustCommit(adds(a("p0", 5000)))
	if len(res.Emissions) != 0 {
		t.Fatalf("closed while p1 holds the watermark: %s", fmtEmissions(res.Emissions))
	}
	if due, err := w.f.WindowTickDue(quietSince + 5e9 - 1); err != nil || due {
		t.Fatalf("tick due before p1's idle timeout: %v %v", due, err)
	}
	// Exactly at the timeout p1 is idle: the tick closes [0,1000).
	w.now = quietSince + 5e9
	if due, err := w.f.WindowTickDue(w.now); err != nil || !due {
		t.Fatalf("tick not due at p1's idle timeout: %v %v", due, err)
	}
	res = w.tick()
	want := "clicks#1 k1 u [0,1000) n=2 i=0 f=0 b=\"\" v=[] tr=false wm=5000\n"
	if res.Err != nil || fmtEmissions(res.Emissions) != want {
		t.Fatalf("tick: %v\n%s\nwant\n%s", res.Err, fmtEmissions(res.Emissions), want)
	}
	if due, _ := w.f.WindowTickDue(w.now); due {
		t.Fatal("tick still due after the tick")
	}
	// p1 speaks again, behind: the watermark never goes back, and its
	// record is late.
	res = w.mustCommit(adds(a("p1", 300)))
	st, _ := w.f.WindowStatuses()
	if res.Adds[0] != command.AddLateDropped || st[0].Watermark != 5000 {
		t.Fatalf("adds %v watermark %d", res.Adds, st[0].Watermark)
	}
	// With p1 active again (its watermark 300), the namespace stays at 5000.
	if len(st[0].Sources) != 2 || st[0].Sources[1].Watermark != 300 || st[0].Sources[1].LastActive != w.now {
		t.Fatalf("sources %+v", st[0].Sources)
	}
}

func TestWindowLateRecordUnderEachPolicy(t *testing.T) {
	for _, c := range []struct {
		policy command.LatePolicy
		want   command.AddStatus
	}{{command.LateDrop, command.AddLateDropped}, {command.LateReturn, command.AddLateReturned}} {
		t.Run(fmt.Sprint(c.policy), func(t *testing.T) {
			w := newWFSM(t)
			spec := tumbling("n", 1000, 200, command.AggCount)
			spec.Late, spec.MaxOutOfOrderMs = c.policy, 100
			w.mustDefine(spec)
			// Watermark 1100 (1200 - 100 out of order): [0,1000) closes at 1200, not yet.
			w.mustCommit(adds(add("n", "k", 1200)))
			res := w.mustCommit(adds(add("n", "k", 999)))
			if res.Adds[0] != command.AddOnTime {
				t.Fatalf("within grace: %v", res.Adds)
			}
			w.mustCommit(adds(add("n", "k", 1300))) // watermark 1200: [0,1000) closes
			res = w.mustCommit(adds(add("n", "k", 999), add("n", "k", 1000)))
			if !slices.Equal(res.Adds, []command.AddStatus{c.want, command.AddOnTime}) {
				t.Fatalf("adds %v", res.Adds)
			}
			st, _ := w.f.WindowStatuses()
			dropped, returned := st[0].LateDropped, st[0].LateReturned
			if (c.policy == command.LateDrop && (dropped != 1 || returned != 0)) || (c.policy == command.LateReturn && (dropped != 0 || returned != 1)) {
				t.Fatalf("late counts dropped %d returned %d", dropped, returned)
			}
			if st[0].Adds != 5 {
				t.Fatalf("adds counted %d, want 5", st[0].Adds)
			}
		})
	}
}

func countPrefix(t *testing.T, f *FSM, prefix byte) int {
	t.Helper()
	f.mu.RLock()
	defer f.mu.RUnlock()
	it, err := f.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefix}, UpperBound: []byte{prefix + 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	return n
}

func TestWindowSessionMergeAcrossAWatermarkAdvance(t *testing.T) {
	w := newWFSM(t)
	w.mustDefine(command.WindowSpec{Namespace: "s", Shape: command.ShapeSession, GapMs: 100, GraceMs: 1000,
		Aggregate: command.AggList, MaxListValues: 10, Emit: command.EmitFinal, Late: command.LateDrop})
	v := func(t int64, b string) command.WindowAdd {
		a := add("s", "u", t)
		a.Bytes = []byte(b)
		return a
	}
	w.mustCommit(adds(v(100, "a"), v(250, "c")))
	// The watermark moves to 600 (by another key): both sessions stay open.
	w.mustCommit(adds(command.WindowAdd{Namespace: "s", Key: []byte("other"), EventTimeMs: 600}))
	if open, _ := w.f.OpenWindows("s", nil, 0, 0); len(open) != 3 {
		t.Fatalf("open %s", fmtWindows(open))
	}
	// 200 is within the gap of both (exactly at 100 + gap): one session.
	w.mustCommit(adds(v(200, "b")))
	got, err := w.f.Windows("s", []byte("u"), 0, 1000)
	if err != nil || fmtWindows(got) != "\"u\" [100,251) close=1350 closed=false n=3 i=0 f=0 b=\"\" v=[\"a\" \"b\" \"c\"] tr=false\n" {
		t.Fatalf("merged session: %s %v", fmtWindows(got), err)
	}
	// The merge left one data record and one index record for "u" (and one each for "other").
	if d, i := countPrefix(t, w.f, prefixWindowData), countPrefix(t, w.f, prefixWindowIndex); d != 2 || i != 2 {
		t.Fatalf("%d data and %d index records, want 2 and 2", d, i)
	}
	// Close it; a record within the gap of the closed session starts a new one.
	res := w.mustCommit(adds(command.WindowAdd{Namespace: "s", Key: []byte("other"), EventTimeMs: 1400}))
	if len(res.Emissions) != 1 || res.Emissions[0].StartMs != 100 || res.Emissions[0].EndMs != 251 {
		t.Fatalf("close: %s", fmtEmissions(res.Emissions))
	}
	res = w.mustCommit(adds(v(340, "d")))
	if res.Adds[0] != command.AddOnTime {
		t.Fatalf("add after close: %v", res.Adds)
	}
	got, _ = w.f.Windows("s", []byte("u"), 0, 1000)
	if len(got) != 2 || !got[0].Closed || got[1].StartMs != 340 || got[1].Closed || got[1].Count != 1 {
		t.Fatalf("closed sessions never merge: %s", fmtWindows(got))
	}
}

func TestWindowOutboxFullRefusesAddsUntilAcknowledged(t *testing.T) {
	w := newWFSM(t)
	spec := tumbling("n", 100, 0, command.AggCount)
	spec.MaxPendingEmissions = 2
	w.mustDefine(spec)
	w.mustCommit(adds(add("n", "a", 0), add("n", "b", 0), add("n", "c", 0)))
	res := w.mustCommit(adds(add("n", "a", 100)))
	if len(res.Emissions) != 3 {
		t.Fatalf("one entry's closings may pass the cap: %s", fmtEmissions(res.Emissions))
	}
	before := stateWithoutAppliedIndex(t, w.f)
	for _, c := range []*command.Commit{
		adds(add("n", "a", 150)),
		{WatermarkHints: []command.WatermarkHint{{Namespace: "n", TimeMs: 500}}},
		{WindowAdds: []command.WindowAdd{add("n", "a", 150)}, Acks: []command.EmissionAck{{Namespace: "n", ID: 1}}},
	} {
		res = w.commit(c)
		var oe *OutboxFullError
		if !errors.Is(res.Err, ErrOutboxFull) || !errors.Is(res.Err, ErrRejected) || !errors.As(res.Err, &oe) || oe.Pending < 2 {
			t.Fatalf("commit into a full outbox: %v", res.Err)
		}
	}
	if !strings.Contains(res.Err.Error(), `namespace "n" has 2 unacknowledged emissions; acknowledge them first`) {
		t.Fatalf("message: %v", res.Err)
	}
	if got := stateWithoutAppliedIndex(t, w.f); got != before {
		t.Fatal("a refused commit changed the state")
	}
	// Timers and acks alone are not refused; acking two makes room in the same commit.
	w.mustCommit(&command.Commit{Timers: []command.TimerOp{{Namespace: "n", Key: []byte("t"), TimeMs: 10_000}}})
	res = w.mustCommit(&command.Commit{WindowAdds: []command.WindowAdd{add("n", "a", 150)},
		Acks: []command.EmissionAck{{Namespace: "n", ID: 1}, {Namespace: "n", ID: 2}}})
	if res.Adds[0] != command.AddOnTime {
		t.Fatalf("adds %v", res.Adds)
	}
}

func TestWindowTimersFireAfterTheEntrysClosingsInTimeAndKeyOrder(t *testing.T) {
	w := newWFSM(t)
	w.mustDefine(tumbling("n", 100, 0, command.AggCount))
	w.mustCommit(&command.Commit{WindowAdds: []command.WindowAdd{add("n", "z", 10)}, Timers: []command.TimerOp{
		{Namespace: "n", Key: []byte("b"), TimeMs: 50}, {Namespace: "n", Key: []byte("a"), TimeMs: 50},
		{Namespace: "n", Key: []byte("c"), TimeMs: 20}, {Namespace: "n", Key: []byte("c"), TimeMs: 20}, // twice: one timer
		{Namespace: "n", Key: []byte("d"), TimeMs: 30}, {Namespace: "n", Key: []byte("d"), TimeMs: 30, Delete: true},
		{Namespace: "n", Key: []byte("e"), TimeMs: 40, Delete: true}, // deleting a missing timer: a no-op
		{Namespace: "n", Key: []byte("late"), TimeMs: 1000},
	}})
	res := w.mustCommit(adds(add("n", "z", 500)))
	want := "n#1 k1 z [0,100) n=1 i=0 f=0 b=\"\" v=[] tr=false wm=500\n" +
		"n#2 k3 c [20,20) n=0 i=0 f=0 b=\"\" v=[] tr=false wm=500\n" +
		"n#3 k3 a [50,50) n=0 i=0 f=0 b=\"\" v=[] tr=false wm=500\n" +
		"n#4 k3 b [50,50) n=0 i=0 f=0 b=\"\" v=[] tr=false wm=500\n"
	if got := fmtEmissions(res.Emissions); got != want {
		t.Fatalf("emissions\n%s\nwant\n%s", got, want)
	}
	if n := countPrefix(t, w.f, prefixWindowTimer); n != 1 {
		t.Fatalf("%d timers left, want 1", n)
	}
}

// TestWindowSegmentsDropSoStateStaysBoundedUnderASteadyStream runs a
// long steady stream through tumbling and hopping windows (acknowledging
// every emission) and checks that the window data keys stay bounded:
// segments past retention are dropped.
func TestWindowSegmentsDropSoStateStaysBoundedUnderASteadyStream(t *testing.T) {
	if modelRace {
		t.Skip("a steady stream of window adds from one goroutine: 16 s under the race detector; go test ./raftstore/fsm runs it")
	}
	w := newWFSM(t)
	w.mustDefine(tumbling("t", 1000, 0, command.AggSumInt))
	w.mustDefine(command.WindowSpec{Namespace: "h", Shape: command.ShapeHopping, SizeMs: 2000, AdvanceMs: 500,
		Aggregate: command.AggCount, Emit: command.EmitFinal, Late: command.LateDrop})
	const keys, steps = 10, 600
	most := 0
	for step := range steps {
		c := &command.Commit{}
		for k := range keys {
			ts := int64(step) * 100
			c.WindowAdds = append(c.WindowAdds, addIntRec("t", fmt.Sprint("k", k), ts, 1), add("h", fmt.Sprint("k", k), ts))
		}
		for _, ns := range []string{"t", "h"} {
			p, err := w.f.Emissions(ns, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range p {
				c.Acks = append(c.Acks, command.EmissionAck{Namespace: ns, ID: e.ID})
			}
		}
		w.mustCommit(c)
		most = max(most, countPrefix(t, w.f, prefixWindowData))
	}
	// Retained: windows (slices) starting within about 2.5 retentions
	// before the watermark, per key: t keeps at most 4 (1 s windows,
	// segments of 1 s, retention 1 s), h at most 10 slices (500 ms slices,
	// segments of 1 s, retention 2 s).
	if bound := keys * (4 + 10); most > bound {
		t.Fatalf("up to %d window data keys, want at most %d: segments are not dropped", most, bound)
	}
	st, _ := w.f.WindowStatuses()
	for _, s := range st {
		if s.Watermark != (steps-1)*100 {
			t.Fatalf("%s watermark %d", s.Spec.Namespace, s.Watermark)
		}
	}
	t.Logf("at most %d window data keys over %d steps of %d keys", most, steps, keys)
}

// An int sum is the true sum of its parts, whatever the order they are
// combined in: a hopping window whose slices add up past MaxInt64 and
// back (MaxInt64-1, +10, -20) is reported with its sum, as is a merged
// session; only a sum outside the int64 range saturates (hopping) or is
// refused (a session's merge).
func TestWindowIntSumsThatLeaveTheRangeAndComeBackAreExact(t *testing.T) {
	w := newWFSM(t)
	w.mustDefine(command.WindowSpec{Namespace: "h", Shape: command.ShapeHopping, SizeMs: 3000, AdvanceMs: 1000,
		MaxOutOfOrderMs: 100_000, Aggregate: command.AggSumInt, Emit: command.EmitFinal, Late: command.LateDrop})
	w.mustDefine(command.WindowSpec{Namespace: "s", Shape: command.ShapeSession, GapMs: 100,
		MaxOutOfOrderMs: 100_000, Aggregate: command.AggSumInt, Emit: command.EmitUpdates, Late: command.LateDrop})
	w.mustDefine(command.WindowSpec{Namespace: "hu", Shape: command.ShapeHopping, SizeMs: 2000, AdvanceMs: 1000,
		MaxOutOfOrderMs: 100_000, Aggregate: command.AggSumInt, Emit: command.EmitFinal, Late: command.LateDrop})
	w.mustCommit(adds(addIntRec("h", "k", 500, math.MaxInt64-1), addIntRec("h", "k", 1500, 10), addIntRec("h", "k", 2500, -20),
		addIntRec("s", "k", 1000, math.MaxInt64-1), addIntRec("s", "k", 1200, 10),
		addIntRec("hu", "k", 500, math.MaxInt64), addIntRec("hu", "k", 1500, 1)))
	const want = math.MaxInt64 - 11
	ws, err := w.f.Windows("h", []byte("k"), 0, 1)
	if err != nil || len(ws) != 1 || ws[0].Int != want {
		t.Fatalf("hopping window [0, 3000): %s %v; want the sum %d", fmtWindows(ws), err, int64(want))
	}
	// A record that bridges the two sessions brings their sum back in range.
	res := w.commit(adds(addIntRec("s", "k", 1100, -20)))
	if res.Err != nil || len(res.Emissions) != 1 || res.Emissions[0].Int != want {
		t.Fatalf("merged session: %v %s; want an update with the sum %d", res.Err, fmtEmissions(res.Emissions), int64(want))
	}
	// Its whole sum out of range: refused, naming the add.
	w.mustCommit(adds(addIntRec("s", "k", 1400, 30)))
	before := stateWithoutAppliedIndex(t, w.f)
	res = w.commit(adds(addIntRec("s", "k", 1300, 0)))
	var re *RejectError
	if !errors.As(res.Err, &re) || re.Field != "window_adds[0].int_value" {
		t.Fatalf("a merge whose sum overflows: %v, want a refusal naming window_adds[0].int_value", res.Err)
	}
	if stateWithoutAppliedIndex(t, w.f) != before {
		t.Fatal("the refused merge changed the state")
	}
	// A hopping window whose sum is out of range saturates, in the query
	// and in its emission.
	ws, err = w.f.Windows("hu", []byte("k"), 0, 1)
	if err != nil || len(ws) != 1 || ws[0].Int != math.MaxInt64 {
		t.Fatalf("hopping window [0, 2000): %s %v; want MaxInt64", fmtWindows(ws), err)
	}
	res = w.mustCommit(&command.Commit{WatermarkHints: []command.WatermarkHint{{Namespace: "hu", TimeMs: 2000}, {Namespace: "h", TimeMs: 3000}}})
	got := fmtEmissions(res.Emissions)
	if !strings.Contains(got, "h#1 k1 k [0,3000) n=3 i=9223372036854775796 ") || !strings.Contains(got, "hu#1 k1 k [0,2000) n=2 i=9223372036854775807 ") {
		t.Fatalf("emissions\n%s", got)
	}
}

// TestAFloatSumOfInfinitiesOfBothSignsIsTheSameNaNOnEveryCPU: two merged
// sessions, or two slices of a hopping window, whose float sums overflowed
// opposite ways sum to a NaN whose bits the CPU chooses (0xfff8… on amd64,
// 0x7ff8… on arm64), which the state stored as they came: replicas on two
// CPUs held different bytes for the same log. Every NaN is now math.NaN().
func TestAFloatSumOfInfinitiesOfBothSignsIsTheSameNaNOnEveryCPU(t *testing.T) {
	w := newWFSM(t)
	w.mustDefine(command.WindowSpec{Namespace: "s", Shape: command.ShapeSession, GapMs: 100,
		MaxOutOfOrderMs: 100_000, Aggregate: command.AggSumFloat, Emit: command.EmitUpdates, Late: command.LateDrop})
	w.mustDefine(command.WindowSpec{Namespace: "h", Shape: command.ShapeHopping, SizeMs: 2000, AdvanceMs: 1000,
		MaxOutOfOrderMs: 100_000, Aggregate: command.AggSumFloat, Emit: command.EmitFinal, Late: command.LateDrop})
	f := func(ns string, t int64, v float64) command.WindowAdd {
		a := add(ns, "k", t)
		a.Float = v
		return a
	}
	w.mustCommit(adds(f("s", 1000, math.MaxFloat64), f("s", 1010, math.MaxFloat64), f("s", 1200, -math.MaxFloat64), f("s", 1210, -math.MaxFloat64),
		f("h", 100, math.MaxFloat64), f("h", 200, math.MaxFloat64), f("h", 1100, -math.MaxFloat64), f("h", 1200, -math.MaxFloat64)))
	nan := math.Float64bits(math.NaN())
	// A record that bridges the two sessions merges them.
	res := w.mustCommit(adds(f("s", 1100, 0)))
	if len(res.Emissions) != 1 || math.Float64bits(res.Emissions[0].Float) != nan {
		t.Fatalf("merged session's update: %s; want the float bits %x", fmtEmissions(res.Emissions), nan)
	}
	ws, err := w.f.Windows("s", []byte("k"), 0, 10_000)
	if err != nil || len(ws) != 1 || math.Float64bits(ws[0].Float) != nan {
		t.Fatalf("merged session: %s %v; want the float bits %x", fmtWindows(ws), err, nan)
	}
	// The hopping window [0, 2000) combines its two slices when it closes.
	res = w.mustCommit(&command.Commit{WatermarkHints: []command.WatermarkHint{{Namespace: "h", TimeMs: 2000}}})
	var found bool
	for _, e := range res.Emissions {
		if e.Namespace == "h" && e.StartMs == 0 && e.EndMs == 2000 {
			found = true
			if math.Float64bits(e.Float) != nan {
				t.Fatalf("hopping window [0, 2000): float bits %x, want %x", math.Float64bits(e.Float), nan)
			}
		}
	}
	if !found {
		t.Fatalf("no emission of the hopping window [0, 2000): %s", fmtEmissions(res.Emissions))
	}
}
