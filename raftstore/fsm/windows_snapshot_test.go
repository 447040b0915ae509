package fsm

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/statedhq/stated/raftstore/command"
)

// windowView is everything the window queries show, rendered.
func windowView(t *testing.T, f *FSM) string {
	t.Helper()
	var b bytes.Buffer
	sts, err := f.WindowStatuses()
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range sts {
		fmt.Fprintf(&b, "%+v\n", st)
		ns := st.Spec.Namespace
		ems, err := f.Emissions(ns, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		open, err := f.OpenWindows(ns, nil, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(fmtEmissions(ems) + fmtWindows(open))
		for _, k := range []string{"a", "b"} {
			ws, err := f.Windows(ns, []byte(k), 0, command.MaxEventTime+1)
			if err != nil {
				t.Fatal(err)
			}
			b.WriteString(fmtWindows(ws))
		}
	}
	return b.String()
}

// windowLog is a log that leaves open windows and sessions, pending
// emissions, timers and several sources behind after each prefix.
func windowLog() []*command.Command {
	now := int64(1_700_000_000_000_000_000)
	log := []*command.Command{
		{Type: command.TypeDefineWindows, Windows: &command.WindowSpec{Namespace: "tum", Shape: command.ShapeTumbling, SizeMs: 100,
			GraceMs: 20, Aggregate: command.AggSumInt, Emit: command.EmitFinal, Late: command.LateReturn}},
		{Type: command.TypeDefineWindows, Windows: &command.WindowSpec{Namespace: "hop", Shape: command.ShapeHopping, SizeMs: 300,
			AdvanceMs: 100, MaxOutOfOrderMs: 50, Aggregate: command.AggList, MaxListValues: 3, Emit: command.EmitUpdates, Late: command.LateDrop}},
		{Type: command.TypeDefineWindows, Windows: &command.WindowSpec{Namespace: "ses", Shape: command.ShapeSession, GapMs: 80,
			Aggregate: command.AggMaxFloat, Emit: command.EmitFinal, Late: command.LateDrop, IdleTimeoutMs: 1000}},
	}
	for i := range 60 {
		now += 50_000_000
		ts := int64(i) * 37
		c := &command.Commit{}
		for _, ns := range []string{"tum", "hop", "ses"} {
			for _, k := range []string{"a", "b"} {
				c.WindowAdds = append(c.WindowAdds, command.WindowAdd{Namespace: ns, Source: fmt.Sprint("p", i%3), Key: []byte(k),
					EventTimeMs: ts - int64(i%4)*30 + 200, Int: int64(i), Float: float64(i) / 2, Bytes: fmt.Appendf(nil, "v%d", i)})
			}
		}
		if i%7 == 0 {
			c.Timers = append(c.Timers, command.TimerOp{Namespace: "tum", Key: []byte("a"), TimeMs: ts + 500})
		}
		if i%5 == 4 {
			// Acknowledge the first emission of hop: ids are stable, so the
			// same ack applies on a replay.
			c.Acks = append(c.Acks, command.EmissionAck{Namespace: "hop", ID: uint64(i)})
		}
		log = append(log, &command.Command{Type: command.TypeCommit, Now: now, Commit: c})
	}
	// A tick after the sources fell silent.
	log = append(log, &command.Command{Type: command.TypeWindowTick, Now: now + 2_000_000_000})
	return log
}

func TestWindowsSurviveSnapshotRestoreAndCheckpoint(t *testing.T) {
	f := openFSM(t)
	f.SetCheckpointDir(filepath.Join(t.TempDir(), "cps"))
	log := windowLog()
	cut := 35
	var cp *CheckpointResult
	for i, cmd := range log[:cut] {
		if res := apply(t, f, uint64(i+1), cmd); res.Err != nil {
			t.Fatalf("entry %d: %v", i+1, res.Err)
		}
	}
	res := apply(t, f, uint64(cut+1), &command.Command{Type: command.TypeCheckpoint, Now: 1})
	if cp = res.Checkpoint; cp == nil || cp.Wait() != nil {
		t.Fatalf("checkpoint: %+v", res)
	}
	atCut := windowView(t, f)
	if !bytes.Contains([]byte(atCut), []byte("[")) || !bytes.Contains([]byte(atCut), []byte("Pending:")) {
		t.Fatalf("the log left no windows: %s", atCut)
	}
	// A Raft snapshot restored into a fresh state machine: the same bytes.
	restored := openFSM(t)
	if err := restored.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, f)))); err != nil {
		t.Fatal(err)
	}
	sameContents(t, f, restored)
	if got := windowView(t, restored); got != atCut {
		t.Fatalf("after restore\n%s\nwant\n%s", got, atCut)
	}
	// The local Pebble checkpoint, opened as a state machine.
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.CopyFS(dir, os.DirFS(cp.Dir)); err != nil {
		t.Fatal(err)
	}
	fromCkpt, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fromCkpt.Close() })
	if got := windowView(t, fromCkpt); got != atCut {
		t.Fatalf("from the checkpoint\n%s\nwant\n%s", got, atCut)
	}
	// Replaying the rest of the log onto each copy closes the same
	// windows with the same results and emission ids.
	for i, cmd := range log[cut:] {
		idx := uint64(cut + 2 + i)
		want := apply(t, f, idx, cmd)
		for name, g := range map[string]*FSM{"restored": restored, "checkpoint": fromCkpt} {
			got := apply(t, g, idx, cmd)
			if fmtEmissions(got.Emissions) != fmtEmissions(want.Emissions) || fmt.Sprint(got.Adds) != fmt.Sprint(want.Adds) || (got.Err == nil) != (want.Err == nil) {
				t.Fatalf("%s, entry %d: %v %v\n%s\nwant %v %v\n%s", name, idx, got.Err, got.Adds, fmtEmissions(got.Emissions), want.Err, want.Adds, fmtEmissions(want.Emissions))
			}
		}
	}
	end := windowView(t, f)
	for _, g := range []*FSM{restored, fromCkpt} {
		if got := windowView(t, g); got != end {
			t.Fatalf("at the end\n%s\nwant\n%s", got, end)
		}
	}
	sameContents(t, f, restored)
}

// TestWindowsApplyDeterministically feeds two state machines the same
// window log: they return the same results and hold the same bytes.
// (TestWindowsMatchModel does the same for every random log it draws.)
func TestWindowsApplyDeterministically(t *testing.T) {
	a, b := openFSM(t), openFSM(t)
	for i, cmd := range windowLog() {
		data := command.Encode(nil, cmd)
		ra := a.Apply(rlog(uint64(i+1), data)).(*Result)
		rb := b.Apply(rlog(uint64(i+1), data)).(*Result)
		if fmt.Sprintf("%+v", *ra) != fmt.Sprintf("%+v", *rb) {
			t.Fatalf("entry %d: %+v\nvs %+v", i+1, *ra, *rb)
		}
	}
	sameContents(t, a, b)
	if n := countPrefix(t, a, prefixWindowOutbox); n == 0 {
		t.Fatal("the log left no emissions: it shows too little")
	}
}
