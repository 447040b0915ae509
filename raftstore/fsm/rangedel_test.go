package fsm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/batchrepr"
	"github.com/cockroachdb/pebble/v2/record"

	"github.com/statedhq/stated/raftstore/command"
)

// rangeDeletions counts the range deletions and the batches in the WAL
// files of the closed Pebble directory dir.
func rangeDeletions(t *testing.T, dir string) (dels, batches int) {
	t.Helper()
	logs, err := checkpointWALs(dir)
	if err != nil || len(logs) == 0 {
		t.Fatalf("WALs of %s: %v, err %v", dir, logs, err)
	}
	for _, l := range logs {
		f, err := os.Open(l.path)
		if err != nil {
			t.Fatal(err)
		}
		rr := newRecordReader(record.NewReader, f, l.num)
		for {
			rec, err := rr.Next()
			if errors.Is(err, io.EOF) || errors.Is(err, record.ErrZeroedChunk) || errors.Is(err, record.ErrInvalidChunk) {
				break // the end of what was written
			}
			if err != nil {
				t.Fatalf("WAL %s: %v", l.path, err)
			}
			repr, err := io.ReadAll(rec)
			if err != nil {
				t.Fatalf("WAL %s: %v", l.path, err)
			}
			batches++
			r := batchrepr.Read(repr)
			for {
				kind, _, _, ok, err := r.Next()
				if err != nil {
					t.Fatalf("WAL %s: %v", l.path, err)
				}
				if !ok {
					break
				}
				if kind == pebble.InternalKeyKindRangeDelete {
					dels++
				}
			}
		}
		f.Close()
	}
	return dels, batches
}

// TestDeletesAndClosingWindowsWriteNoRangeDeletionPerEntry: deleting a key,
// closing windows, firing timers, dropping a window segment that holds a
// few keys and a session's lanes write point deletions, and only a prefix
// holding more than pointDeleteLimit keys gets a range deletion. Pebble fragments a
// memtable's range deletions anew on the first read after one is added,
// all of them, so one per entry made every later read slower with each
// delete since the last flush (BenchmarkDeleteCommits,
// BenchmarkWindowCommitsClosingWindows).
func TestDeletesAndClosingWindowsWriteNoRangeDeletionPerEntry(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	f, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	run := benchApply(t, f)
	commit := func(c *command.Commit) *Result {
		return run(&command.Command{Type: command.TypeCommit, Now: 1, Commit: c})
	}

	const rounds = 200
	// Keys with a value and map entries, then a delete of each, one per
	// entry, and deletes of keys that never existed.
	for i := range rounds {
		k := fmt.Appendf(nil, "k%d", i)
		commit(&command.Commit{Mutations: []command.Mutation{
			{Op: command.OpPut, Namespace: "n", Key: k, Value: []byte("v")},
			{Op: command.OpMapPut, Namespace: "n", Key: k, SubKey: []byte("a"), Value: []byte("1")},
		}})
	}
	for i := range rounds {
		commit(&command.Commit{Mutations: []command.Mutation{
			{Op: command.OpDelete, Namespace: "n", Key: fmt.Appendf(nil, "k%d", i)},
			{Op: command.OpDelete, Namespace: "n", Key: fmt.Appendf(nil, "never%d", i)},
		}})
	}
	// Windows of one second, a retention of two (segments of one second
	// drop as the watermark passes), a record per entry one second on
	// from the last: each entry closes a window, fires a timer, and
	// acknowledges the emissions of the entry before.
	spec := command.WindowSpec{Namespace: "w", Shape: command.ShapeTumbling, SizeMs: 1000, RetentionMs: 2000,
		Aggregate: command.AggSumInt, Emit: command.EmitFinal, Late: command.LateDrop}
	run(&command.Command{Type: command.TypeDefineWindows, Windows: &spec})
	base := int64(1_700_000_000_000)
	var acks []command.EmissionAck
	emitted := 0
	for i := range rounds {
		t0 := base + int64(i)*1000
		res := commit(&command.Commit{Acks: acks,
			WindowAdds: []command.WindowAdd{{Namespace: "w", Source: "s", Key: fmt.Appendf(nil, "k%d", i%3), EventTimeMs: t0, Int: 1}},
			Timers:     []command.TimerOp{{Namespace: "w", TimeMs: t0 + 500, Key: []byte("t")}},
		})
		acks = acks[:0]
		for _, e := range res.Emissions {
			acks = append(acks, command.EmissionAck{Namespace: "w", ID: e.ID})
		}
		emitted += len(res.Emissions)
	}
	// One window and one timer per entry after the first.
	if want := 2 * (rounds - 1); emitted != want {
		t.Fatalf("%d emissions over %d entries, want %d", emitted, rounds, want)
	}
	sts, err := f.WindowStatuses()
	if err != nil || len(sts) != 1 || sts[0].OpenWindows != 1 || sts[0].Pending != 2 {
		t.Fatalf("window status %+v, err %v: want one open window and the last entry's two emissions pending", sts, err)
	}
	if open, err := f.OpenWindows("w", nil, 0, 0); err != nil || len(open) != 1 || open[0].StartMs != base+(rounds-1)*1000 {
		t.Fatalf("open windows %+v, err %v: want the last one only", open, err)
	}
	// The segments a retention behind the watermark are gone.
	data := windowNSKey(prefixWindowData, "w")
	it, err := f.db.NewIter(&pebble.IterOptions{LowerBound: data, UpperBound: prefixEnd(data)})
	if err != nil {
		t.Fatal(err)
	}
	kept := 0
	for ok := it.First(); ok; ok = it.Next() {
		kept++
	}
	if err := it.Close(); err != nil || kept > 4 {
		t.Fatalf("%d window data records kept (err %v), want the few of the last retention", kept, err)
	}
	// Client sessions, each with a commit in a lane, then opened again
	// under a new session id (a reused client id), which drops the lanes.
	for i := range 50 {
		client := fmt.Sprintf("c%d", i)
		run(openSessionCmd(client, 1, 0))
		run(inSession(putCmd(client, client, "v"), 1, 0, 1))
		run(openSessionCmd(client, 2, 0))
	}
	// A prefix holding more keys than pointDeleteLimit: one range deletion.
	var puts []command.Mutation
	for i := range pointDeleteLimit + 1 {
		puts = append(puts, command.Mutation{Op: command.OpPut, Namespace: "p", Key: fmt.Appendf(nil, "x%03d", i), Value: []byte("v")})
	}
	commit(&command.Commit{Mutations: puts})
	commit(&command.Commit{Mutations: []command.Mutation{{Op: command.OpDeletePrefix, Namespace: "p", Key: []byte("x")}}})

	for i := range rounds {
		for _, k := range []string{fmt.Sprintf("k%d", i), fmt.Sprintf("never%d", i)} {
			_, okV, errV := f.Get("n", []byte(k), KindValue, nil, 2)
			_, okM, errM := f.Get("n", []byte(k), KindMap, []byte("a"), 2)
			if errV != nil || errM != nil || okV || okM {
				t.Fatalf("key %s after its delete: value found %v, map entry found %v, err %v", k, okV, okM, errors.Join(errV, errM))
			}
		}
	}
	left := 0
	if err := f.Scan(ScanQuery{Namespace: "p"}, 2, func(Entry) error { left++; return nil }); err != nil || left != 0 {
		t.Fatalf("namespace p after its prefix's delete: %d entries, err %v", left, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	dels, batches := rangeDeletions(t, dir)
	if batches < 3*rounds {
		t.Fatalf("the WAL holds %d batches, want at least the %d entries above", batches, 3*rounds)
	}
	if dels != 1 {
		t.Fatalf("%d range deletions in the WAL, want 1 (the prefix of %d keys)", dels, pointDeleteLimit+1)
	}
}
