package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// TestWindowsMatchModel applies random window logs to the FSM and to the
// reference model (windows_model_test.go) and compares, after every entry,
// the refusal, the add results, the emissions (ids, kinds, keys, bounds,
// results, order), and what the queries show: every namespace's
// watermark, counters and sources, its outbox, its open windows (also
// paged) and every key's windows. Each shape runs with every aggregate it
// allows, two namespaces at a time (one dropping late records into a small
// outbox, one returning them), with records of several keys and sources
// out of order, watermark hints, sources that fall silent past their idle
// timeout (and ticks that then close windows), acknowledgements, timers,
// redefinitions and refused commands. At the end the log is applied to a
// second FSM, which must hold the same bytes.
//
// Each run uses one fixed seed and one new one (under the race detector
// only the new one), each in its subtests' names; replay one with
// STATED_TEST_SEED=<seed>, and set STATED_TEST_STEPS=<n> for longer logs.
func TestWindowsMatchModel(t *testing.T) {
	if modelRace {
		t.Skip("applies random window logs from one goroutine: 28 logs took 41 s under the race detector; go test ./raftstore/fsm runs it, with a fixed and a random seed")
	}
	seeds := []uint64{1, uint64(time.Now().UnixNano())}
	steps := 250
	if testing.Short() {
		steps = 80
	}
	if s := os.Getenv("STATED_TEST_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("STATED_TEST_SEED=%q: %v", s, err)
		}
		seeds = []uint64{seed}
	}
	if s := os.Getenv("STATED_TEST_STEPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("STATED_TEST_STEPS=%q: want a positive number", s)
		}
		steps = n
	}
	aggs := []command.Aggregate{command.AggCount, command.AggSumInt, command.AggSumFloat, command.AggMinInt,
		command.AggMaxInt, command.AggMinFloat, command.AggMaxFloat, command.AggLast, command.AggList, command.AggOpaque}
	for _, seed := range seeds {
		for _, shape := range []command.Shape{command.ShapeTumbling, command.ShapeHopping, command.ShapeSession} {
			for _, agg := range aggs {
				if agg == command.AggOpaque && shape != command.ShapeTumbling {
					continue
				}
				name := fmt.Sprintf("seed=%d/shape=%d/agg=%d", seed, shape, agg)
				t.Run(name, func(t *testing.T) {
					s := seed*131 + uint64(shape)*17 + uint64(agg)
					runWindowModel(t, s, shape, agg, steps)
					if t.Failed() {
						t.Logf("replay with STATED_TEST_SEED=%d -run 'TestWindowsMatchModel/%s'", seed, name)
					}
				})
			}
		}
	}
}

type wRun struct {
	t     *testing.T
	r     *rand.Rand
	f     *FSM
	m     *wModel
	index uint64
	now   int64
	base  int64 // event time around which records arrive
	log   []*raft.Log
	got   []*Result // what f answered each entry of log
	specs []command.WindowSpec
	seen  map[string]int // outcomes, for the log
}

func runWindowModel(t *testing.T, seed uint64, shape command.Shape, agg command.Aggregate, steps int) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	run := &wRun{t: t, r: r, f: openFSM(t), m: newWModel(), now: 1_700_000_000_000_000_000, base: 100 + 5*r.Int64N(600), seen: map[string]int{}}
	for i, late := range []command.LatePolicy{command.LateDrop, command.LateReturn} {
		spec := command.WindowSpec{Namespace: string(rune('a' + i)), Shape: shape, Aggregate: agg, Late: late,
			GraceMs: pick(r, []int64{0, 30, 100}), MaxOutOfOrderMs: pick(r, []int64{0, 20, 60}),
			IdleTimeoutMs: 2000, Emit: pick(r, []command.EmitMode{command.EmitFinal, command.EmitUpdates})}
		switch shape {
		case command.ShapeTumbling:
			spec.SizeMs = pick(r, []int64{50, 100, 300})
		case command.ShapeHopping:
			spec.SizeMs = pick(r, []int64{60, 100, 300})
			spec.AdvanceMs = pick(r, []int64{spec.SizeMs, spec.SizeMs / 2, spec.SizeMs / 3, 40})
		case command.ShapeSession:
			spec.GapMs = pick(r, []int64{30, 80})
		}
		if agg == command.AggList {
			spec.MaxListValues = int32(1 + r.IntN(3))
		}
		if r.IntN(2) == 0 {
			spec.RetentionMs = spec.MinRetention() + r.Int64N(3000)
		}
		if i == 0 {
			spec.MaxPendingEmissions = 12
		}
		run.specs = append(run.specs, spec)
		run.step(&command.Command{Type: command.TypeDefineWindows, Windows: &spec})
	}
	// A short run (the race detector's 80 steps) may draw no late record
	// or close no window; it goes on, up to four times as long, until it
	// has done both, so that the check below fails only for a generator
	// that cannot reach them.
	for i := 0; i < steps || i < 4*steps && (run.seen["closed"] == 0 || run.seen["late"] == 0); i++ {
		run.step(run.next())
	}
	// Determinism: the same log applied to another FSM gives the same bytes,
	// and the same answers, whatever its window cache holds: as much as
	// f's, one window (always evicting), or nothing (off).
	for _, size := range []int64{DefaultWindowCacheSize, aggSlotCost, 0} {
		g, err := Open(filepath.Join(t.TempDir(), "state"), nil, WithWindowCacheSize(size))
		if err != nil {
			t.Fatal(err)
		}
		for i, l := range run.log {
			got, want := g.Apply(l).(*Result), run.got[i]
			if fmt.Sprint(got.Err) != fmt.Sprint(want.Err) || !slices.Equal(got.Adds, want.Adds) ||
				fmtEmissions(got.Emissions) != fmtEmissions(want.Emissions) {
				t.Fatalf("window cache of %d bytes: entry %d answered %v %v %s, the first state machine %v %v %s", size, l.Index,
					got.Err, got.Adds, fmtEmissions(got.Emissions), want.Err, want.Adds, fmtEmissions(want.Emissions))
			}
		}
		sameContents(t, run.f, g)
		g.Close()
	}
	// And in batches of random sizes (ApplyBatch): the same results,
	// entry by entry, and the same bytes.
	var data [][]byte
	for _, l := range run.log {
		data = append(data, l.Data)
	}
	applyInBatches(t, seed, data)
	t.Logf("outcomes: %v", run.seen)
	if run.seen["closed"] == 0 || run.seen["late"] == 0 {
		t.Errorf("the log closed %d windows and saw %d late records: the generator exercises too little", run.seen["closed"], run.seen["late"])
	}
}

var wKeys = []string{"k0", "k1", "k2", "k\x00"}

// next draws the next command.
func (run *wRun) next() *command.Command {
	r := run.r
	run.now += r.Int64N(120) * 1_000_000
	run.base += 5 * r.Int64N(5) // times on a grid of 5 ms, so that boundaries are hit exactly
	switch p := r.IntN(100); {
	case p < 6:
		// A quiet spell: every source goes idle (some exactly at their
		// timeout); the leader ticks when due.
		run.now += pick(r, []int64{2_000_000_000, 2_100_000_000})
		return &command.Command{Type: command.TypeWindowTick}
	case p < 9:
		return &command.Command{Type: command.TypeWindowTick}
	case p < 11:
		spec := run.specs[r.IntN(2)]
		if r.IntN(2) == 0 {
			spec.GraceMs++
		}
		return &command.Command{Type: command.TypeDefineWindows, Windows: &spec}
	case p < 16:
		return &command.Command{Type: command.TypeCommit, Commit: run.refused()}
	}
	c := &command.Commit{}
	for range r.IntN(4) {
		c.WindowAdds = append(c.WindowAdds, run.add())
	}
	if r.IntN(8) == 0 {
		c.WatermarkHints = append(c.WatermarkHints, command.WatermarkHint{Namespace: run.ns(), Source: pick(r, []string{"", "s1", "slow"}),
			TimeMs: max(run.base-5*r.Int64N(40), 0)})
	}
	for _, name := range []string{"a", "b"} {
		n := run.m.nss[name]
		if len(n.outbox) > 0 && r.IntN(3) == 0 {
			for _, e := range n.outbox[:min(len(n.outbox), 1+r.IntN(8))] {
				c.Acks = append(c.Acks, command.EmissionAck{Namespace: name, ID: e.ID})
			}
		}
	}
	if r.IntN(6) == 0 {
		c.Timers = append(c.Timers, command.TimerOp{Namespace: run.ns(), Key: []byte(pick(r, wKeys)),
			TimeMs: max(run.base+5*r.Int64N(60)-100, 0), Delete: r.IntN(4) == 0})
	}
	return &command.Command{Type: command.TypeCommit, Commit: c}
}

func (run *wRun) ns() string { return pick(run.r, []string{"a", "b"}) }

func (run *wRun) add() command.WindowAdd {
	r := run.r
	// Mostly around base, some far behind (late), and a slow source.
	t := run.base - 5*r.Int64N(16)
	if r.IntN(6) == 0 {
		t = run.base - 100 - 5*r.Int64N(120)
	}
	src := pick(r, []string{"", "", "s1", "s1", "slow"})
	if src == "slow" && r.IntN(3) != 0 {
		src = "s1" // the slow source is rarely heard from
	}
	return command.WindowAdd{Namespace: run.ns(), Source: src, Key: []byte(pick(r, wKeys)), EventTimeMs: max(t, 0),
		Int: r.Int64N(40) - 10, Float: float64(r.IntN(40)-10) / 4, Bytes: fmt.Appendf(nil, "v%d", r.IntN(1000))}
}

// refused draws a commit the state machine must refuse as a whole.
func (run *wRun) refused() *command.Commit {
	r := run.r
	c := &command.Commit{WindowAdds: []command.WindowAdd{run.add()}}
	switch r.IntN(5) {
	case 0:
		c.WindowAdds = append(c.WindowAdds, command.WindowAdd{Namespace: "undefined", Key: []byte("k")})
	case 1:
		c.WindowAdds[0].EventTimeMs = pick(r, []int64{-1, command.MaxEventTime + 1})
	case 2:
		c.Acks = []command.EmissionAck{{Namespace: "a", ID: 1 + uint64(r.IntN(1000))}}
		if n := run.m.nss["a"]; len(n.outbox) > 0 {
			c.Acks = append(c.Acks, c.Acks[0], command.EmissionAck{Namespace: "a", ID: n.outbox[0].ID}, command.EmissionAck{Namespace: "a", ID: n.outbox[0].ID})
		}
	case 3:
		c.Timers = []command.TimerOp{{Namespace: "b", Key: []byte("k"), TimeMs: -5}}
	case 4:
		c.WatermarkHints = []command.WatermarkHint{{Namespace: "nope", TimeMs: 1}}
	}
	return c
}

func (run *wRun) step(cmd *command.Command) {
	t := run.t
	t.Helper()
	if cmd.Type == command.TypeWindowTick {
		due, err := run.f.WindowTickDue(run.now)
		if err != nil {
			t.Fatal(err)
		}
		if want := run.m.tickDue(run.now); due != want {
			t.Fatalf("entry %d: WindowTickDue = %v, the model says %v", run.index+1, due, want)
		}
		if !due && run.r.IntN(2) == 0 {
			return // the leader proposes a tick only when one is due; sometimes test a needless one
		}
	}
	run.index++
	cmd.Now = run.now
	l := &raft.Log{Index: run.index, Type: raft.LogCommand, Data: command.Encode(nil, cmd)}
	run.log = append(run.log, l)
	before := bytes.Clone(l.Data)
	got := run.f.Apply(l).(*Result)
	run.got = append(run.got, got)
	if !bytes.Equal(l.Data, before) {
		// The leader's Raft log replicates the entries the state machine
		// is handed (raftstore.recentLog).
		t.Fatalf("entry %d (%s): the state machine wrote into the entry's bytes", run.index, describeWindowCmd(cmd))
	}
	want := run.m.apply(cmd)
	ctx := func() string { return fmt.Sprintf("entry %d (%s)", run.index, describeWindowCmd(cmd)) }
	if d := diffWindowErr(got.Err, want.err); d != "" {
		t.Fatalf("%s: %s", ctx(), d)
	}
	switch {
	case want.err != nil && errors.Is(want.err, ErrOutboxFull):
		run.seen["outbox full"]++
	case want.err != nil:
		run.seen["refused"]++
	}
	if cmd.Type == command.TypeDefineWindows && want.err == nil && got.WindowsCreated != want.created {
		t.Fatalf("%s: created %v, want %v", ctx(), got.WindowsCreated, want.created)
	}
	if !slices.Equal(got.Adds, want.adds) {
		t.Fatalf("%s: add results %v, want %v", ctx(), got.Adds, want.adds)
	}
	for _, a := range want.adds {
		if a != command.AddOnTime {
			run.seen["late"]++
		}
	}
	for _, e := range want.emissions {
		run.seen[map[command.EmissionKind]string{command.EmissionFinal: "closed", command.EmissionUpdate: "updates", command.EmissionTimer: "timers"}[e.Kind]]++
	}
	if g, w := fmtEmissions(got.Emissions), fmtEmissions(want.emissions); g != w {
		t.Fatalf("%s: emissions\n%s\nwant\n%s", ctx(), g, w)
	}
	if d := run.diffState(); d != "" {
		t.Fatalf("%s: %s", ctx(), d)
	}
}

func (m *wModel) tickDue(now int64) bool {
	for _, n := range m.nss {
		if n.watermarkAt(now) > n.wm {
			return true
		}
	}
	return false
}

func diffWindowErr(got, want error) string {
	switch {
	case want == nil && got == nil:
		return ""
	case want == nil:
		return fmt.Sprintf("refused (%v), the model applies it", got)
	case got == nil:
		return fmt.Sprintf("applied, the model refuses it (%v)", want)
	}
	var wr *RejectError
	var wf *OutboxFullError
	switch {
	case errors.As(want, &wf):
		var gf *OutboxFullError
		if !errors.As(got, &gf) || gf.Namespace != wf.Namespace || gf.Pending != wf.Pending || !errors.Is(got, ErrRejected) {
			return fmt.Sprintf("refused with %v, want an outbox full error for %q with %d pending", got, wf.Namespace, wf.Pending)
		}
	case errors.As(want, &wr):
		var gr *RejectError
		if !errors.As(got, &gr) || gr.Field != wr.Field {
			return fmt.Sprintf("refused with %v, want a refusal naming %s", got, wr.Field)
		}
	}
	return ""
}

func fmtWindows(ws []Window) string {
	var b strings.Builder
	for _, w := range ws {
		fmt.Fprintf(&b, "%q [%d,%d) close=%d closed=%v n=%d i=%d f=%g b=%q v=%q tr=%v\n", w.Key, w.StartMs, w.EndMs, w.CloseMs,
			w.Closed, w.Count, w.Int, w.Float, w.Bytes, w.Values, w.Truncated)
	}
	return b.String()
}

func fmtModelWindows(ws []wmWindow) string {
	var b strings.Builder
	for _, w := range ws {
		fmt.Fprintf(&b, "%q [%d,%d) close=%d closed=%v n=%d i=%d f=%g b=%q v=%q tr=%v\n", w.key, w.start, w.end, w.closeMs,
			w.closed, w.r.count, w.r.i, w.r.f, w.r.b, w.r.values, w.r.truncated)
	}
	return b.String()
}

// diffState compares everything the queries show with the model.
func (run *wRun) diffState() string {
	f, m := run.f, run.m
	sts, err := f.WindowStatuses()
	if err != nil {
		return err.Error()
	}
	if len(sts) != len(m.nss) {
		return fmt.Sprintf("%d namespaces, want %d", len(sts), len(m.nss))
	}
	var open, pending int64
	for _, st := range sts {
		n := m.nss[st.Spec.Namespace]
		if n == nil {
			return fmt.Sprintf("namespace %q is not in the model", st.Spec.Namespace)
		}
		var srcs []SourceStatus
		for _, name := range slices.Sorted(maps.Keys(n.sources)) {
			s := n.sources[name]
			srcs = append(srcs, SourceStatus{Source: name, Watermark: s.Watermark, MaxEventTime: s.MaxEventTime, LastActive: s.LastActive})
		}
		ow := n.openWindows()
		want := WindowStatus{Spec: n.spec, Watermark: n.wm, MaxEventTime: n.maxEv, OpenWindows: int64(len(ow)),
			Pending: int64(len(n.outbox)), LateDropped: n.lateDrop, LateReturned: n.lateReturn, Adds: n.adds, Sources: srcs}
		if g, w := fmt.Sprintf("%+v", st), fmt.Sprintf("%+v", want); g != w {
			return fmt.Sprintf("status\n%s\nwant\n%s", g, w)
		}
		open += int64(len(ow))
		pending += int64(len(n.outbox))
		ns := st.Spec.Namespace
		ems, err := f.Emissions(ns, 0, 0)
		if err != nil {
			return err.Error()
		}
		if g, w := fmtEmissions(ems), fmtEmissions(n.outbox); g != w {
			return fmt.Sprintf("outbox of %s\n%s\nwant\n%s", ns, g, w)
		}
		if len(n.outbox) > 1 {
			after := n.outbox[0].ID
			ems, err := f.Emissions(ns, after, 1)
			if err != nil || len(ems) != 1 || ems[0].ID != n.outbox[1].ID {
				return fmt.Sprintf("outbox of %s after %d: %s %v", ns, after, fmtEmissions(ems), err)
			}
		}
		got, err := f.OpenWindows(ns, nil, 0, 0)
		if err != nil {
			return err.Error()
		}
		if g, w := fmtWindows(got), fmtModelWindows(ow); g != w {
			return fmt.Sprintf("open windows of %s\n%s\nwant\n%s", ns, g, w)
		}
		// Paged by two from a cursor, the same list.
		var paged []Window
		var after []byte
		var afterStart int64
		for {
			page, err := f.OpenWindows(ns, after, afterStart, 2)
			if err != nil {
				return err.Error()
			}
			paged = append(paged, page...)
			if len(page) < 2 {
				break
			}
			after, afterStart = page[1].Key, page[1].StartMs
			if after == nil {
				after = []byte{}
			}
		}
		if g, w := fmtWindows(paged), fmtModelWindows(ow); g != w {
			return fmt.Sprintf("open windows of %s paged\n%s\nwant\n%s", ns, g, w)
		}
		for _, k := range wKeys {
			from, to := int64(0), int64(command.MaxEventTime+1)
			if run.r.IntN(2) == 0 {
				from = max(run.base-run.r.Int64N(1500), 0)
				to = from + run.r.Int64N(800)
			}
			got, err := f.Windows(ns, []byte(k), from, to)
			if err != nil {
				return err.Error()
			}
			if g, w := fmtWindows(got), fmtModelWindows(n.windows(k, from, to)); g != w {
				return fmt.Sprintf("windows of %s key %q in [%d,%d)\n%s\nwant\n%s", ns, k, from, to, g, w)
			}
		}
	}
	c, err := f.Counts()
	if err != nil {
		return err.Error()
	}
	if c.WindowNamespaces != uint64(len(m.nss)) || c.OpenWindows != uint64(open) || c.PendingEmissions != uint64(pending) {
		return fmt.Sprintf("counts %+v, want %d namespaces, %d open windows, %d pending", c, len(m.nss), open, pending)
	}
	return ""
}

func describeWindowCmd(cmd *command.Command) string {
	switch cmd.Type {
	case command.TypeDefineWindows:
		return fmt.Sprintf("define %+v", *cmd.Windows)
	case command.TypeWindowTick:
		return fmt.Sprintf("tick at %d", cmd.Now)
	}
	c := cmd.Commit
	var b strings.Builder
	fmt.Fprintf(&b, "commit at %d:", cmd.Now)
	for _, a := range c.WindowAdds {
		fmt.Fprintf(&b, " add(%s %q %q t=%d)", a.Namespace, a.Source, a.Key, a.EventTimeMs)
	}
	for _, h := range c.WatermarkHints {
		fmt.Fprintf(&b, " hint(%s %q %d)", h.Namespace, h.Source, h.TimeMs)
	}
	for _, a := range c.Acks {
		fmt.Fprintf(&b, " ack(%s %d)", a.Namespace, a.ID)
	}
	for _, tm := range c.Timers {
		fmt.Fprintf(&b, " timer(%s %q %d del=%v)", tm.Namespace, tm.Key, tm.TimeMs, tm.Delete)
	}
	return b.String()
}
