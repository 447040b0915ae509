package fsm

import (
	"fmt"
	"testing"

	"github.com/statedhq/stated/raftstore/command"
)

// BenchmarkWindowAdd measures applying window adds, 100 per commit, to a
// namespace holding 100,000 open windows: tumbling windows (100,000 keys),
// and hopping windows with size/advance = 60 (1,667 keys, 60 windows
// each), adding to slices that exist and, in "new-slice", to a new slice
// with every add (its 60 windows' index records read). ns/op is per add;
// no window closes during the run.
func BenchmarkWindowAdd(b *testing.B) {
	const hour, minute = 3_600_000, 60_000
	base := int64(1_700_000_000_000) / (100 * hour) * (100 * hour)
	for _, c := range []struct {
		name string
		spec command.WindowSpec
		keys int
		// open is how many windows the keys' first adds open.
		open int
		// at is the event time of the i-th add.
		at func(i int64) int64
	}{
		{"tumbling", command.WindowSpec{Shape: command.ShapeTumbling, SizeMs: hour}, 100_000, 100_000,
			func(i int64) int64 { return base + i%hour }},
		// Ten keys: each commit adds ten times to each one's window,
		// which it wrote itself earlier in the commit.
		{"tumbling-10-keys", command.WindowSpec{Shape: command.ShapeTumbling, SizeMs: hour}, 10, 10,
			func(i int64) int64 { return base + i%hour }},
		{"hopping-60", command.WindowSpec{Shape: command.ShapeHopping, SizeMs: hour, AdvanceMs: minute}, 100_000 / 60, 100_000 - 60,
			func(i int64) int64 { return base + 59*minute + i%minute }},
		{"hopping-60-new-slice", command.WindowSpec{Shape: command.ShapeHopping, SizeMs: 60 * minute, AdvanceMs: minute}, 100_000 / 60, 100_000 - 60,
			func(i int64) int64 { return base + (59+i/(100_000/60))*minute }},
	} {
		b.Run(c.name, func(b *testing.B) {
			f, err := Open(b.TempDir()+"/state", nil)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			spec := c.spec
			spec.Namespace, spec.Aggregate, spec.Emit, spec.Late = "n", command.AggSumInt, command.EmitFinal, command.LateDrop
			// The watermark stays where the windows opened: nothing closes.
			spec.MaxOutOfOrderMs, spec.GraceMs = 100*hour, 0
			run := benchApply(b, f)
			run(&command.Command{Type: command.TypeDefineWindows, Windows: &spec})
			keys := make([][]byte, c.keys)
			for k := range keys {
				keys[k] = fmt.Appendf(nil, "user-%06d", k)
			}
			const perCommit = 100
			adds := func(from, n int64, at func(int64) int64) {
				c := &command.Commit{WindowAdds: make([]command.WindowAdd, n)}
				for j := range n {
					i := from + j
					c.WindowAdds[j] = command.WindowAdd{Namespace: "n", Source: "t/0", Key: keys[i%int64(len(keys))], EventTimeMs: at(i), Int: 1}
				}
				run(&command.Command{Type: command.TypeCommit, Now: 1e18, Commit: c})
			}
			// Open the windows: every key gets its window (hopping: its 60).
			for i := int64(0); i < int64(c.keys); i += 1000 {
				adds(i, min(1000, int64(c.keys)-i), func(int64) int64 { return base + 59*minute })
			}
			sts, err := f.WindowStatuses()
			if err != nil || sts[0].OpenWindows < int64(c.open) {
				b.Fatalf("%+v %v", sts, err)
			}
			b.ResetTimer()
			for i := int64(0); i < int64(b.N); i += perCommit {
				adds(i, min(perCommit, int64(b.N)-i), c.at)
			}
			b.StopTimer()
			if sts, _ := f.WindowStatuses(); sts[0].Pending != 0 {
				b.Fatalf("windows closed during the run: %+v", sts[0])
			}
		})
	}
}

// BenchmarkWindowAddFirstRecordOfAKey measures the add that opens a key's
// hopping windows, one add per commit: each of the size/advance windows
// containing the record is new and gets an index record. At the largest
// ratio a new definition may have (command.MaxWindowsPerRecord), this is
// the most one add costs. ns/op is per add.
func BenchmarkWindowAddFirstRecordOfAKey(b *testing.B) {
	const minute = 60_000
	for _, ratio := range []int64{60, 1000, command.MaxWindowsPerRecord} {
		b.Run(fmt.Sprintf("windows-per-record=%d", ratio), func(b *testing.B) {
			f, err := Open(b.TempDir()+"/state", nil)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			spec := command.WindowSpec{Namespace: "n", Shape: command.ShapeHopping, SizeMs: ratio * minute, AdvanceMs: minute,
				Aggregate: command.AggCount, Emit: command.EmitFinal, Late: command.LateDrop, MaxOutOfOrderMs: 1e9}
			run := benchApply(b, f)
			run(&command.Command{Type: command.TypeDefineWindows, Windows: &spec})
			at := int64(1_700_000_000_000) / minute * minute
			b.ResetTimer()
			for i := range b.N {
				c := &command.Commit{WindowAdds: []command.WindowAdd{{Namespace: "n", Source: "t/0", Key: fmt.Appendf(nil, "user-%09d", i), EventTimeMs: at}}}
				run(&command.Command{Type: command.TypeCommit, Now: 1e18, Commit: c})
			}
			b.StopTimer()
			if sts, err := f.WindowStatuses(); err != nil || sts[0].OpenWindows != int64(b.N)*ratio {
				b.Fatalf("%+v %v: want %d open windows", sts, err, int64(b.N)*ratio)
			}
		})
	}
}

// BenchmarkWindowCommitsOfOneSource applies b.N one-add commits from one
// source, the same memtable throughout. Each entry recomputes the
// namespace's watermark from its sources; iterating the source records
// stepped over one overwritten version per earlier commit, so that the
// 20,000th commit cost 1.7 ms against 46 µs for the first. Run it with
// -benchtime 20000x: ns/op must stay that of a short run.
func BenchmarkWindowCommitsOfOneSource(b *testing.B) { benchOneAddCommits(b, 1) }

// BenchmarkWindowCommitsOfManySources applies b.N one-add commits, each
// from one of 64 sources (a topic of 64 partitions). Every entry
// recomputes the namespace's watermark, which reads all 64 source
// records: what a commit of one partition's records pays for the others.
func BenchmarkWindowCommitsOfManySources(b *testing.B) { benchOneAddCommits(b, 64) }

// benchOneAddCommits applies b.N one-add commits to a tumbling namespace,
// from sources taking turns, each of which sent a record before.
func benchOneAddCommits(b *testing.B, sources int) {
	f, err := Open(b.TempDir()+"/state", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	run := benchApply(b, f)
	spec := command.WindowSpec{Namespace: "n", Shape: command.ShapeTumbling, SizeMs: 3_600_000, Aggregate: command.AggSumInt,
		Emit: command.EmitFinal, Late: command.LateDrop, MaxOutOfOrderMs: 360_000_000}
	run(&command.Command{Type: command.TypeDefineWindows, Windows: &spec})
	base := int64(1_700_000_000_000) / 360_000_000 * 360_000_000
	names := make([]string, sources)
	for i := range names {
		names[i] = fmt.Sprintf("t/%d", i)
	}
	add := func(i int) {
		run(&command.Command{Type: command.TypeCommit, Now: 1e18, Commit: &command.Commit{WindowAdds: []command.WindowAdd{{
			Namespace: "n", Source: names[i%sources], Key: fmt.Appendf(nil, "k%d", i%1000), EventTimeMs: base, Int: 1}}}})
	}
	for i := range sources {
		add(i)
	}
	b.ResetTimer()
	for i := range b.N {
		add(i)
	}
}

// benchApply returns a function that applies commands to f as Raft log
// entries of successive indexes, from 1, returns each entry's result, and
// fails tb on any error.
func benchApply(tb testing.TB, f *FSM) func(*command.Command) *Result {
	idx := uint64(1)
	return func(cmd *command.Command) *Result {
		tb.Helper()
		res := f.Apply(rlog(idx, command.Encode(nil, cmd))).(*Result)
		if res.Err != nil {
			tb.Fatalf("entry %d: %v", idx, res.Err)
		}
		idx++
		return res
	}
}

// closingWindows defines window namespace "n" (tumbling, 1 s, an int sum)
// through apply, and returns a function that commits one add a window
// after the last one's, with acks, and returns the emissions of the
// window it closed: each call but the first closes one.
func closingWindows(apply func(*command.Command) *Result) func(acks []command.EmissionAck) []command.Emission {
	spec := command.WindowSpec{Namespace: "n", Shape: command.ShapeTumbling, SizeMs: 1000, Aggregate: command.AggSumInt,
		Emit: command.EmitFinal, Late: command.LateDrop}
	apply(&command.Command{Type: command.TypeDefineWindows, Windows: &spec})
	base, i := int64(1_700_000_000_000), 0
	return func(acks []command.EmissionAck) []command.Emission {
		c := &command.Commit{Acks: acks, WindowAdds: []command.WindowAdd{{Namespace: "n", Source: "t/0",
			Key: fmt.Appendf(nil, "k%d", i%10), EventTimeMs: base + int64(i)*1000, Int: 1}}}
		i++
		return apply(&command.Command{Type: command.TypeCommit, Now: 1e18, Commit: c}).Emissions
	}
}

// acksOf returns the acknowledgements of ems, appended to acks[:0].
func acksOf(acks []command.EmissionAck, ems []command.Emission) []command.EmissionAck {
	acks = acks[:0]
	for _, e := range ems {
		acks = append(acks, command.EmissionAck{Namespace: e.Namespace, ID: e.ID})
	}
	return acks
}

// BenchmarkWindowCommitsClosingWindows applies b.N one-add commits whose
// records move the watermark on by a window each, the same memtable
// throughout: every entry closes a window, drops a segment, and
// acknowledges the emission of the entry before, as a consumer whose
// event times advance does. The close index records went with one range
// deletion per entry, and Pebble fragments all of a memtable's range
// deletions again on the first read after one is added: 1,000 commits
// averaged 4.3 ms each, 4,000 17.7 ms. Run it with -benchtime 20000x:
// ns/op must stay that of a short run.
func BenchmarkWindowCommitsClosingWindows(b *testing.B) {
	add := closingWindows(benchApply(b, openFSM(b)))
	var acks []command.EmissionAck
	closed := 0
	b.ResetTimer()
	for range b.N {
		ems := add(acks)
		acks = acksOf(acks, ems)
		closed += len(ems)
	}
	b.StopTimer()
	if closed != b.N-1 {
		b.Fatalf("%d windows closed over %d commits, want %d", closed, b.N, b.N-1)
	}
}

// BenchmarkWindowAddsToOneSession applies b.N one-add commits to one
// key's session (a gap of an hour, event times a millisecond apart), the
// same memtable throughout. Every add rewrites the session's record, and
// finding the session scanned the key's records with Next, which steps
// over every older version still in the memtable: 1,000 adds averaged
// 45 µs each, 20,000 764 µs. Run it with -benchtime 20000x: ns/op must
// stay that of a short run.
func BenchmarkWindowAddsToOneSession(b *testing.B) {
	f := openFSM(b)
	run := benchApply(b, f)
	spec := command.WindowSpec{Namespace: "n", Shape: command.ShapeSession, GapMs: 3_600_000, Aggregate: command.AggSumInt,
		Emit: command.EmitFinal, Late: command.LateDrop, MaxOutOfOrderMs: 1e9}
	run(&command.Command{Type: command.TypeDefineWindows, Windows: &spec})
	base := int64(1_700_000_000_000)
	b.ResetTimer()
	for i := range b.N {
		run(&command.Command{Type: command.TypeCommit, Now: 1e18, Commit: &command.Commit{WindowAdds: []command.WindowAdd{{
			Namespace: "n", Source: "s", Key: []byte("k"), EventTimeMs: base + int64(i), Int: 1}}}})
	}
	b.StopTimer()
	if sts, err := f.WindowStatuses(); err != nil || sts[0].OpenWindows != 1 {
		b.Fatalf("%+v %v: want one open session", sts, err)
	}
}
