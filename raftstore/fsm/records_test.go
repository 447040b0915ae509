package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/batchrepr"
)

// TestASessionCheckReadsTheStateASnapshotInstalled: the apply loop keeps
// the session and lane records in memory (records.go). A Raft snapshot
// installed on a replica that is behind replaces its database, records
// included: a retry of a commit that the snapshot holds must be answered
// as a duplicate, not applied again on the strength of the replica's
// older lane record.
func TestASessionCheckReadsTheStateASnapshotInstalled(t *testing.T) {
	lead, behind := openFSM(t), openFSM(t)
	for _, f := range []*FSM{lead, behind} {
		apply(t, f, 1, openSessionCmd("x", 100, 0))
		if res := apply(t, f, 2, inSession(addCmd("x", 1), 100, 0, 1)); res.Err != nil || res.Duplicate {
			t.Fatalf("seq 1: %+v", res)
		}
	}
	for seq := uint64(2); seq <= 3; seq++ {
		if res := apply(t, lead, seq+1, inSession(addCmd("x", 1), 100, 0, seq)); res.Err != nil || res.Duplicate {
			t.Fatalf("seq %d: %+v", seq, res)
		}
	}
	if err := behind.Restore(nopCloser{bytes.NewReader(snapshotBytes(t, lead))}); err != nil {
		t.Fatal(err)
	}
	// The client did not hear back from seq 3 and retries it here.
	res := apply(t, behind, 5, inSession(addCmd("x", 1), 100, 0, 3))
	if res.Err != nil || !res.Duplicate || res.Index != 4 {
		t.Fatalf("retry of seq 3 after the snapshot = %+v, want a duplicate of index 4", res)
	}
	if got := counterValue(t, behind, "n", "k", 1e18); got != 3 {
		t.Fatalf("counter = %d after the retry, want 3: the retry was applied twice", got)
	}
	res = apply(t, behind, 6, inSession(addCmd("x", 1), 100, 0, 4))
	if res.Err != nil || res.Duplicate {
		t.Fatalf("seq 4: %+v", res)
	}
	if got := counterValue(t, behind, "n", "k", 1e18); got != 4 {
		t.Fatalf("counter = %d, want 4", got)
	}
}

// TestRecordCacheReadsWhatPebbleHolds drives the record cache with random
// writes, lane drops, rejected-entry cuts, commits, abandoned batches and
// replaced databases, beside a real Pebble database and indexed batch
// that get the same writes, and checks that every read through the cache
// returns what a read through the batch returns; half the runs with a
// bound small enough that the cache keeps emptying itself.
func TestRecordCacheReadsWhatPebbleHolds(t *testing.T) {
	// One goroutine drives the cache: under the race detector (27 s for
	// 20 seeds) four seeds run, two of each bound.
	seeds := uint64(20)
	if modelRace {
		seeds = 4
	}
	for seed := uint64(1); seed <= seeds; seed++ {
		// Odd seeds bound the cache at 5 records, so that it empties
		// itself often.
		bound := maxCachedRecords
		if seed%2 == 1 {
			bound = 5
		}
		t.Run(fmt.Sprint(seed), func(t *testing.T) { recordCacheRun(t, seed, 3000, bound) })
	}
}

func recordCacheRun(t *testing.T, seed uint64, steps, bound int) {
	rnd := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	open := func(name string) *pebble.DB {
		db, err := pebble.Open(filepath.Join(dir, name), &pebble.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	db := open("a")
	defer func() { db.Close() }()
	c := newRecordCache()
	c.max = bound
	b := db.NewIndexedBatch()
	defer func() { b.Close() }()

	clients := []string{"a", "b", "ab", "a\x00"}
	key := func() []byte {
		cl := clients[rnd.IntN(len(clients))]
		if rnd.IntN(3) == 0 {
			return sessionKey(cl)
		}
		return laneKey(cl, uint32(rnd.IntN(3)))
	}
	type mark struct {
		repr    []byte
		count   uint32
		records int
	}
	var marks []mark
	for step := 0; step < steps; step++ {
		switch op := rnd.IntN(100); {
		case op < 40: // read
			k := key()
			got, gotOK, err := c.get(b, k)
			if err != nil {
				t.Fatal(err)
			}
			// What the batch will hold once committed: its own
			// writes, then the deferred ones flush adds.
			view := db.NewIndexedBatch()
			if err := view.Apply(b, nil); err != nil {
				t.Fatal(err)
			}
			if err := c.flush(view); err != nil {
				t.Fatal(err)
			}
			want, wantOK, err := getRecord(view, k)
			view.Close()
			if err != nil {
				t.Fatal(err)
			}
			if gotOK != wantOK || !bytes.Equal(got, want) {
				t.Fatalf("seed %d step %d: %q reads %x (%v) through the cache, %x (%v) through the batch", seed, step, k, got, gotOK, want, wantOK)
			}
		case op < 60: // write a record
			k := key()
			v := binary.BigEndian.AppendUint64(nil, rnd.Uint64())
			// Session and lane records go into the batch at its
			// commit (flush), as setRecord writes them.
			c.set(k, v)
			v[0]++ // the cache must hold its own copy
		case op < 66: // delete one
			c.set(key(), nil)
		case op < 71: // drop a client's lanes
			p := laneClientPrefix(clients[rnd.IntN(len(clients))])
			if err := b.DeleteRange(p, prefixEnd(p), nil); err != nil {
				t.Fatal(err)
			}
			c.dropLanes(p)
		case op < 78: // an entry begins
			marks = append(marks, mark{repr: bytes.Clone(b.Repr()), count: b.Count(), records: c.mark()})
		case op < 83 && len(marks) > 0: // and is rejected: its writes cut
			m := marks[len(marks)-1]
			marks = marks[:len(marks)-1]
			nb := db.NewIndexedBatch()
			if m.count > 0 {
				src := db.NewBatch()
				if err := src.SetRepr(m.repr); err != nil {
					t.Fatal(err)
				}
				if err := nb.Apply(src, nil); err != nil {
					t.Fatal(err)
				}
				src.Close()
			}
			b.Close()
			b = nb
			c.cut(m.records)
		case op < 93: // the batch is committed
			if err := c.flush(b); err != nil {
				t.Fatal(err)
			}
			if err := b.Commit(pebble.NoSync); err != nil {
				t.Fatal(err)
			}
			c.commit()
			b.Close()
			b, marks = db.NewIndexedBatch(), nil
		case op < 96: // or abandoned
			c.abort()
			b.Close()
			b, marks = db.NewIndexedBatch(), nil
		default: // the database is replaced by another state
			b.Close()
			db.Close()
			name := fmt.Sprint(step)
			db = open(name)
			nb := db.NewBatch()
			for range 5 {
				nb.Set(key(), binary.BigEndian.AppendUint64(nil, rnd.Uint64()), nil)
			}
			if err := nb.Commit(pebble.NoSync); err != nil {
				t.Fatal(err)
			}
			nb.Close()
			c.reset()
			b, marks = db.NewIndexedBatch(), nil
		}
	}
}

// TestFlushWritesEachRecordsLatestWriteInKeyOrder: flush writes the
// pending session and lane records into the batch in key order, each key
// once with its latest write (a deletion included), leaves out a lane
// write that a later drop of its client's lanes overtook, keeps one made
// after the drop, and writes nothing of the other records (which go into
// the batch as they are made) or of the drops themselves. Enough writes
// that the sort is not an insertion sort, which would keep a key's writes
// in order by chance.
func TestFlushWritesEachRecordsLatestWriteInKeyOrder(t *testing.T) {
	db, err := pebble.Open(filepath.Join(t.TempDir(), "db"), &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c := newRecordCache()
	want := map[string][]byte{} // key -> latest value, nil: deleted
	set := func(k, v []byte) {
		c.set(k, v)
		want[string(k)] = v
	}
	for round := range 3 {
		for _, cl := range []string{"b", "a", "c"} {
			for l := uint32(16); l > 0; l-- {
				set(laneKey(cl, l), fmt.Appendf(nil, "%s/%d/%d", cl, l, round))
			}
			set(sessionKey(cl), fmt.Appendf(nil, "session %s %d", cl, round))
		}
	}
	// b's lanes are dropped, then lane 3 written again; a's session is
	// deleted.
	c.dropLanes(laneClientPrefix("b"))
	for l := uint32(16); l > 0; l-- {
		delete(want, string(laneKey("b", l)))
	}
	set(laneKey("b", 3), []byte("b/3/after the drop"))
	set(sessionKey("a"), nil)
	c.set(windowSpecKey("ns"), []byte("spec")) // not deferred: not flushed

	b := db.NewBatch()
	defer b.Close()
	if err := c.flush(b); err != nil {
		t.Fatal(err)
	}
	got := map[string][]byte{}
	var prev []byte
	r := batchrepr.Read(b.Repr())
	for {
		kind, k, v, ok, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		if prev != nil && bytes.Compare(prev, k) >= 0 {
			t.Fatalf("%q written after %q: want each key once, in key order", k, prev)
		}
		prev = bytes.Clone(k)
		switch kind {
		case pebble.InternalKeyKindSet:
			got[string(k)] = bytes.Clone(v)
		case pebble.InternalKeyKindDelete:
			got[string(k)] = nil
		default:
			t.Fatalf("%q written as %v", k, kind)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("flush wrote %d records, want %d", len(got), len(want))
	}
	for k, v := range want {
		g, ok := got[k]
		if !ok || !bytes.Equal(g, v) || (g == nil) != (v == nil) {
			t.Fatalf("%q: flushed %q (written %v), want %q", k, g, ok, v)
		}
	}
}
