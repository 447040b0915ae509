package fsm

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// TestTheWindowCacheAnswersAsTheBatchDoes drives the window cache as the
// apply loop does, against a real Pebble: batches of writes, deletions
// and range deletions, some cut back to a mark (a rejected entry), some
// committed, some dropped, with reads in between. Every read through the
// cache must return what the batch being built holds, whether the cache
// holds three entries (always evicting), many, or pairs too large for a
// slot.
func TestTheWindowCacheAnswersAsTheBatchDoes(t *testing.T) {
	for _, slots := range []int64{3, 1000} {
		for seed := range uint64(4) {
			t.Run(fmt.Sprintf("slots=%d/seed=%d", slots, seed), func(t *testing.T) {
				runWindowCacheModel(t, seed, slots*aggSlotCost)
			})
		}
	}
}

func runWindowCacheModel(t *testing.T, seed uint64, size int64) {
	r := rand.New(rand.NewPCG(seed, 77))
	db, err := pebble.Open(filepath.Join(t.TempDir(), "db"), &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c := newAggCache(size)
	keys := make([][]byte, 12)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "\x0cwin-%02d", i)
	}
	value := func() []byte {
		if r.IntN(8) == 0 {
			return bytes.Repeat([]byte{'x'}, aggSlotPayload) // does not fit a slot
		}
		return fmt.Appendf(nil, "v%d", r.IntN(1000))
	}
	committed := map[string][]byte{}
	hits := 0
	for batchNo := range 400 {
		b := db.NewIndexedBatch()
		// The batch's writes, so that a cut can rebuild it, and the
		// model of what it holds.
		type op struct {
			key, val []byte
			del, all bool
		}
		var ops []op
		view := func() map[string][]byte {
			m := cloneMap(committed)
			for _, o := range ops {
				switch {
				case o.all:
					clear(m)
				case o.del:
					delete(m, string(o.key))
				default:
					m[string(o.key)] = o.val
				}
			}
			return m
		}
		for range 1 + r.IntN(12) {
			k := keys[r.IntN(len(keys))]
			switch p := r.IntN(100); {
			case p < 45:
				_, dirty := c.dirty[string(k)]
				if _, _, cached := c.lookup(k); cached && !dirty && !c.dropped {
					hits++
				}
				got, ok, err := c.get(b, k)
				if err != nil {
					t.Fatal(err)
				}
				want, wok := view()[string(k)]
				if ok != wok || !bytes.Equal(got, want) {
					t.Fatalf("batch %d: get(%q) = %q, %v; the batch holds %q, %v", batchNo, k, got, ok, want, wok)
				}
			case p < 75:
				v := value()
				if err := b.Set(k, v, nil); err != nil {
					t.Fatal(err)
				}
				c.set(k, v)
				ops = append(ops, op{key: k, val: v})
			case p < 88:
				if err := b.Delete(k, nil); err != nil {
					t.Fatal(err)
				}
				c.forget(k)
				ops = append(ops, op{key: k, del: true})
			case p < 90:
				if err := b.DeleteRange([]byte("\x0c"), []byte("\x0d"), nil); err != nil {
					t.Fatal(err)
				}
				c.dropRange()
				ops = append(ops, op{all: true})
			default:
				// A rejected entry: the writes after a mark are cut, and
				// the batch is rebuilt from the ones before it.
				m := r.IntN(len(ops) + 1)
				ops = ops[:m]
				b.Close()
				b = db.NewIndexedBatch()
				for _, o := range ops {
					switch {
					case o.all:
						err = b.DeleteRange([]byte("\x0c"), []byte("\x0d"), nil)
					case o.del:
						err = b.Delete(o.key, nil)
					default:
						err = b.Set(o.key, o.val, nil)
					}
					if err != nil {
						t.Fatal(err)
					}
				}
				c.cutWrites()
			}
		}
		if r.IntN(5) == 0 {
			b.Close()
			c.abort()
			continue
		}
		committed = view()
		if err := b.Commit(pebble.NoSync); err != nil {
			t.Fatal(err)
		}
		b.Close()
		c.commit()
		if len(c.dirty) != 0 || c.cut || c.dropped {
			t.Fatalf("batch %d: the cache kept the batch's state past its commit", batchNo)
		}
		if c.used > c.maxSlots || len(c.index) > c.maxSlots {
			t.Fatalf("batch %d: %d slots and %d index entries, at most %d allowed", batchNo, c.used, len(c.index), c.maxSlots)
		}
	}
	if hits == 0 {
		t.Error("no read was answered by the cache: the test exercises too little")
	}
}

func cloneMap(m map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// TestAWindowAddAfterARejectedCommitReadsWhatWasCommitted applies, in one
// ApplyBatch call, commits of a CommitBatch entry of which the second
// adds to two windows and is then refused (an int sum that would
// overflow), and an entry after it: the refused commit's adds must leave
// no trace, in the state or in what the window cache answers the next
// adds, to a window a later commit of the batch wrote (w) and to one it
// did not (x). The same with the cache off and with a cache of one
// window.
func TestAWindowAddAfterARejectedCommitReadsWhatWasCommitted(t *testing.T) {
	const hour = 3_600_000
	spec := command.WindowSpec{Namespace: "n", Shape: command.ShapeTumbling, SizeMs: hour, Aggregate: command.AggSumInt,
		Emit: command.EmitFinal, Late: command.LateDrop, MaxOutOfOrderMs: 100 * hour}
	add := func(key string, v int64) command.WindowAdd {
		return command.WindowAdd{Namespace: "n", Source: "s", Key: []byte(key), EventTimeMs: 10 * hour, Int: v}
	}
	enc := func(cmd *command.Command) []byte { cmd.Now = 1e18; return command.Encode(nil, cmd) }
	var fsms []*FSM
	for _, size := range []int64{DefaultWindowCacheSize, 0, aggSlotCost} {
		f, err := Open(filepath.Join(t.TempDir(), "state"), nil, WithWindowCacheSize(size))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		logs := []*raft.Log{
			{Index: 1, Type: raft.LogCommand, Data: enc(&command.Command{Type: command.TypeDefineWindows, Windows: &spec})},
			{Index: 2, Type: raft.LogCommand, Data: enc(&command.Command{Type: command.TypeCommit, Commit: &command.Commit{
				WindowAdds: []command.WindowAdd{add("w", 5), add("x", 7), add("full", math.MaxInt64)}}})},
		}
		for _, l := range logs {
			if res := f.Apply(l).(*Result); res.Err != nil {
				t.Fatal(res.Err)
			}
		}
		// Both windows are cached now (when the cache is on).
		batch := []*raft.Log{
			{Index: 3, Type: raft.LogCommand, Data: enc(&command.Command{Type: command.TypeCommitBatch, Batch: []*command.Commit{
				{WindowAdds: []command.WindowAdd{add("w", 10)}},
				{WindowAdds: []command.WindowAdd{add("w", 100), add("x", 100), add("full", 1)}},
				{WindowAdds: []command.WindowAdd{add("w", 1)}},
			}})},
			{Index: 4, Type: raft.LogCommand, Data: enc(&command.Command{Type: command.TypeCommit, Commit: &command.Commit{
				WindowAdds: []command.WindowAdd{add("w", 1000)}}})},
		}
		out := f.Batching().ApplyBatch(batch)
		res := out[0].(*Result)
		if res.Batch[0].Err != nil || res.Batch[2].Err != nil || res.Batch[1].Err == nil {
			t.Fatalf("cache of %d bytes: the batch's results %v, %v, %v; want the second refused", size, res.Batch[0].Err, res.Batch[1].Err, res.Batch[2].Err)
		}
		if err := out[1].(*Result).Err; err != nil {
			t.Fatal(err)
		}
		// One more entry, alone, reads what the cache kept.
		if res := f.Apply(&raft.Log{Index: 5, Type: raft.LogCommand, Data: enc(&command.Command{Type: command.TypeCommit,
			Commit: &command.Commit{WindowAdds: []command.WindowAdd{add("w", 10000), add("x", 1)}}})}).(*Result); res.Err != nil {
			t.Fatal(res.Err)
		}
		for key, want := range map[string]int64{"w": 5 + 10 + 1 + 1000 + 10000, "x": 7 + 1} {
			ws, err := f.Windows("n", []byte(key), 0, math.MaxInt64)
			if err != nil || len(ws) != 1 {
				t.Fatalf("cache of %d bytes: windows of %s: %+v, %v", size, key, ws, err)
			}
			if ws[0].Int != want {
				t.Fatalf("cache of %d bytes: the sum of %s's window is %d, want %d", size, key, ws[0].Int, want)
			}
		}
		fsms = append(fsms, f)
	}
	sameContents(t, fsms[0], fsms[1])
	sameContents(t, fsms[0], fsms[2])
}

// TestTheWindowCacheIsEmptiedWithTheState restores a snapshot of other
// state into a state machine whose cache holds a window: the next add
// must build on the restored aggregate, not on the cached one.
func TestTheWindowCacheIsEmptiedWithTheState(t *testing.T) {
	const hour = 3_600_000
	spec := command.WindowSpec{Namespace: "n", Shape: command.ShapeTumbling, SizeMs: hour, Aggregate: command.AggSumInt,
		Emit: command.EmitFinal, Late: command.LateDrop, MaxOutOfOrderMs: 100 * hour}
	addTo := func(f *FSM, index uint64, v int64) {
		t.Helper()
		res := apply(t, f, index, &command.Command{Type: command.TypeCommit, Now: 1e18, Commit: &command.Commit{
			WindowAdds: []command.WindowAdd{{Namespace: "n", Source: "s", Key: []byte("w"), EventTimeMs: 10 * hour, Int: v}}}})
		if res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	mine, leader := openFSM(t), openFSM(t)
	for _, f := range []*FSM{mine, leader} {
		if res := apply(t, f, 1, &command.Command{Type: command.TypeDefineWindows, Now: 1e18, Windows: &spec}); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	addTo(mine, 2, 5) // cached: 5
	addTo(leader, 2, 100)
	addTo(leader, 3, 100)
	if err := mine.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, leader)))); err != nil {
		t.Fatal(err)
	}
	addTo(mine, 4, 1)
	ws, err := mine.Windows("n", []byte("w"), 0, math.MaxInt64)
	if err != nil || len(ws) != 1 || ws[0].Int != 201 {
		t.Fatalf("after the restore and one add: %+v, %v; want one window summing 201", ws, err)
	}
}

// TestWindowCacheSizeMustNotBeNegative: a negative size is refused by
// name; zero turns the cache off.
func TestWindowCacheSizeMustNotBeNegative(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "state"), nil, WithWindowCacheSize(-1))
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("window cache size")) {
		t.Fatalf("Open with a window cache of -1 bytes: %v", err)
	}
	f, err := Open(filepath.Join(t.TempDir(), "state"), nil, WithWindowCacheSize(0))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.records.aggs.maxSlots != 0 {
		t.Fatalf("a window cache of 0 bytes has %d slots", f.records.aggs.maxSlots)
	}
	if f.records.aggs.used != 0 {
		t.Fatal("a cache that is off handed out slots")
	}
}

// TestStorageStatsCountTheWindowCache: reads it answered and reads that
// went to Pebble, what it holds, and its memory, the counters carrying
// over a Restore that empties it.
func TestStorageStatsCountTheWindowCache(t *testing.T) {
	const hour = 3_600_000
	spec := command.WindowSpec{Namespace: "n", Shape: command.ShapeTumbling, SizeMs: hour, Aggregate: command.AggSumInt,
		Emit: command.EmitFinal, Late: command.LateDrop, MaxOutOfOrderMs: 100 * hour}
	f, other := openFSM(t), openFSM(t)
	if res := apply(t, f, 1, &command.Command{Type: command.TypeDefineWindows, Now: 1e18, Windows: &spec}); res.Err != nil {
		t.Fatal(res.Err)
	}
	for i := range uint64(3) {
		res := apply(t, f, 2+i, &command.Command{Type: command.TypeCommit, Now: 1e18, Commit: &command.Commit{
			WindowAdds: []command.WindowAdd{{Namespace: "n", Source: "s", Key: []byte("w"), EventTimeMs: 10 * hour, Int: 1}}}})
		if res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	s := f.StorageStats()
	if s.WindowCacheHitsTotal != 2 || s.WindowCacheMissesTotal != 1 || s.WindowCacheEntries != 1 {
		t.Fatalf("after three adds to one window: %d hits, %d misses, %d entries; want 2, 1, 1",
			s.WindowCacheHitsTotal, s.WindowCacheMissesTotal, s.WindowCacheEntries)
	}
	if want := int64(aggChunkSlots*aggSlotBytes + aggIndexBytes); s.WindowCacheBytes != want {
		t.Fatalf("the cache takes %d bytes, want one chunk of slots and one index entry, %d", s.WindowCacheBytes, want)
	}
	if got := int64(unsafe.Sizeof(aggSlot{})); got != aggSlotBytes {
		t.Fatalf("a slot is %d bytes, aggSlotBytes says %d", got, aggSlotBytes)
	}
	if err := f.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, other)))); err != nil {
		t.Fatal(err)
	}
	s = f.StorageStats()
	if s.WindowCacheHitsTotal != 2 || s.WindowCacheMissesTotal != 1 || s.WindowCacheEntries != 0 || s.WindowCacheBytes != 0 {
		t.Fatalf("after a restore: %d hits, %d misses, %d entries, %d bytes; want 2, 1, 0, 0",
			s.WindowCacheHitsTotal, s.WindowCacheMissesTotal, s.WindowCacheEntries, s.WindowCacheBytes)
	}
}
