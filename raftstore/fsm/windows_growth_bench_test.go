package fsm

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/statedhq/stated/raftstore/command"
)

// BenchmarkWindowAddSettled measures window adds, 100 per commit, to
// random open windows of a namespace holding 10⁵ or 10⁶ of them: with
// the state still in the memtable, as after the growth study's build
// (flushed=false), and flushed and compacted whole (flushed=true). Each
// add reads its window's aggregate from the window cache, which the
// build's adds filled (the default size holds 10⁶ windows), and a
// window it does not hold through the memtable and the tables. ns/op is
// per add. The growth study measures the same through `stated run`,
// where runs differ by ±20%; here the state machine alone applies adds
// at 10⁶ windows at 0.72× (memtable) and 0.90× (flushed) the 10⁵ rate,
// against 0.64× and 0.72× without the cache (BENCHMARKS.md).
//
// adds=1 commits one add at a time, as the growth study's single row
// does: what a commit costs beside its adds (the namespace's spec and
// bookkeeping, the close index's and the timers' scans) weighs in full.
func BenchmarkWindowAddSettled(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		for _, flushed := range []bool{false, true} {
			b.Run(fmt.Sprintf("windows=%d/flushed=%v", n, flushed), func(b *testing.B) { benchWindowAddSettled(b, n, flushed, 100) })
			b.Run(fmt.Sprintf("windows=%d/flushed=%v/adds=1", n, flushed), func(b *testing.B) { benchWindowAddSettled(b, n, flushed, 1) })
		}
	}
}

func benchWindowAddSettled(b *testing.B, n int, flushed bool, perCommit int) {
	const hour = 3_600_000
	base := int64(1_700_000_000_000) / (100 * hour) * (100 * hour)
	f, err := Open(b.TempDir()+"/state", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	run := benchApply(b, f)
	spec := command.WindowSpec{Namespace: "n", Shape: command.ShapeTumbling, SizeMs: hour, Aggregate: command.AggSumInt,
		Emit: command.EmitFinal, Late: command.LateDrop, MaxOutOfOrderMs: 100 * hour}
	run(&command.Command{Type: command.TypeDefineWindows, Windows: &spec})
	key := func(k int) []byte { return fmt.Appendf(nil, "user-%08d", k) }
	adds := func(keys []int) {
		c := &command.Commit{WindowAdds: make([]command.WindowAdd, len(keys))}
		for j, k := range keys {
			c.WindowAdds[j] = command.WindowAdd{Namespace: "n", Source: "t/0", Key: key(k), EventTimeMs: base + int64(k%hour), Int: 1}
		}
		run(&command.Command{Type: command.TypeCommit, Now: 1e18, Commit: c})
	}
	keys := make([]int, 0, 1000)
	for k := range n {
		keys = append(keys, k)
		if len(keys) == cap(keys) || k == n-1 {
			adds(keys)
			keys = keys[:0]
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	// 1% rewritten at random, then flushed and compacted whole.
	for range n / 100 / 100 {
		keys = keys[:0]
		for range 100 {
			keys = append(keys, r.IntN(n))
		}
		adds(keys)
	}
	if flushed {
		if err := f.Flush(); err != nil {
			b.Fatal(err)
		}
		if err := f.db.Compact(b.Context(), []byte{0}, []byte{0xff}, true); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i += perCommit {
		keys = keys[:0]
		for range min(perCommit, b.N-i) {
			keys = append(keys, r.IntN(n))
		}
		adds(keys)
	}
}
