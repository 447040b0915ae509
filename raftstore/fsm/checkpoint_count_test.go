package fsm

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"

	"github.com/statedhq/stated/raftstore/command"
)

// TestCountCheckpointSplitCountsWhatAPlainScanCounts: a state spread
// over many tables (a flush after every commit), with overwrites, map
// and list entries, point deletes, key and prefix deletes crossing table
// boundaries and expired entries, is counted the same in one range and
// split at table boundaries into 2, 3 and 8, and the same as the live
// state machine counts it.
func TestCountCheckpointSplitCountsWhatAPlainScanCounts(t *testing.T) {
	f := openFSM(t)
	f.SetCheckpointDir(filepath.Join(t.TempDir(), "cps"))
	rng, fill := rand.New(rand.NewPCG(7, 8)), rand.NewChaCha8([32]byte{7})
	idx := uint64(0)
	step := func(cmd *command.Command) {
		t.Helper()
		idx++
		if res := apply(t, f, idx, cmd); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	key := func(i int) []byte { return binary.BigEndian.AppendUint32([]byte("k"), uint32(i)) }
	for c := range 60 {
		var muts []command.Mutation
		for range 200 {
			i := rng.IntN(5000)
			v := make([]byte, 1+rng.IntN(2000))
			fill.Read(v)
			switch rng.IntN(8) {
			case 0:
				muts = append(muts, command.Mutation{Op: command.OpMapPut, Namespace: "m", Key: key(i % 50), SubKey: key(i), Value: v})
			case 1:
				muts = append(muts, command.Mutation{Op: command.OpMapDelete, Namespace: "m", Key: key(i % 50), SubKey: key(i)})
			case 2:
				muts = append(muts, command.Mutation{Op: command.OpListAppend, Namespace: "l", Key: key(i % 20), Value: v})
			case 3:
				muts = append(muts, command.Mutation{Op: command.OpDelete, Namespace: "p", Key: key(i)})
			case 4:
				muts = append(muts, command.Mutation{Op: command.OpPut, Namespace: "p", Key: key(i), Value: v, TTL: 10})
			default:
				muts = append(muts, command.Mutation{Op: command.OpPut, Namespace: "p", Key: key(i), Value: v})
			}
		}
		if c%10 == 9 {
			// A prefix delete over a tenth of the keys, across tables.
			muts = append(muts, command.Mutation{Op: command.OpDeletePrefix, Namespace: "p", Key: []byte{'k', 0, 0, byte(rng.IntN(20))}})
		}
		step(commitCmd(int64(c), muts, nil))
		if c%20 == 19 {
			step(&command.Command{Type: command.TypeExpire, Now: int64(c), ExpireLimit: 10_000})
		}
		if err := f.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	step(commitCmd(100, []command.Mutation{{Op: command.OpPut, Namespace: "p", Key: []byte("after the flush"), Value: []byte("in the WAL")}}, nil))
	idx++
	res := apply(t, f, idx, &command.Command{Type: command.TypeCheckpoint, Now: 100})
	if res.Checkpoint == nil || res.Checkpoint.Wait() != nil {
		t.Fatalf("checkpoint: %+v", res.Checkpoint)
	}
	live, err := f.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if live.StateKeys < 1000 {
		t.Fatalf("the state holds %d keys; the test wants more", live.StateKeys)
	}
	db, err := openCheckpoint(res.Checkpoint.Dir)
	if err != nil {
		t.Fatal(err)
	}
	bounds, err := stateSplits(db, 8)
	levels, _ := db.SSTables()
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(bounds) < 3 {
		t.Fatalf("split into %d ranges, want several: the tables are too few to test the split (%d levels: %v)", len(bounds)-1, len(levels), levels)
	}
	for _, parts := range []int{1, 2, 3, 8} {
		t.Run(fmt.Sprintf("parts=%d", parts), func(t *testing.T) {
			keys, n, err := countCheckpoint(context.Background(), res.Checkpoint.Dir, parts)
			if err != nil {
				t.Fatal(err)
			}
			if keys != live.StateKeys || n != live.StateBytes {
				t.Fatalf("counted %d keys, %d bytes; the live state holds %d, %d", keys, n, live.StateKeys, live.StateBytes)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := CountCheckpoint(ctx, res.Checkpoint.Dir); err != context.Canceled {
		t.Fatalf("a count with its context ended returned %v, want context.Canceled", err)
	}
}

// TestCountSoloTablesCountsWhatAPlainScanCounts: a state appended in
// rising keys and compacted into its lowest level is counted mostly from
// its tables' properties, and exactly, the same as a plain scan of the
// checkpoint and the live state machine count it, whatever overlaps
// those tables: new appends, a prefix delete (a range deletion) in the
// WAL and flushed, overwrites and deletes of old keys in a newer table
// and in the WAL, random commits over the whole state, and tables that
// keep two versions of keys for a snapshot.
func TestCountSoloTablesCountsWhatAPlainScanCounts(t *testing.T) {
	s := newDeltaStore(t, 11)
	key := func(i int) []byte { return binary.BigEndian.AppendUint32([]byte("a"), uint32(i)) }
	next := 0
	appendKeys := func(now int64, n int) {
		t.Helper()
		for n > 0 {
			var muts []command.Mutation
			for range min(n, 200) {
				v := make([]byte, 1+s.rng.IntN(300))
				s.fill.Read(v)
				muts = append(muts, command.Mutation{Op: command.OpPut, Namespace: "a", Key: key(next), Value: v})
				next++
				n--
			}
			s.step(commitCmd(now, muts, nil))
		}
	}
	compact := func() {
		t.Helper()
		if err := s.f.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := s.f.db.Compact(context.Background(), []byte{prefixSystem}, []byte{0xff}, false); err != nil {
			t.Fatal(err)
		}
	}
	// check takes a checkpoint (flushed first, or with what was written
	// since the last flush in its WAL), counts it every way, and returns
	// how the solo count went and how many keys its tables keep for a
	// snapshot.
	check := func(name string, now int64, flush bool) (soloCount, uint64) {
		t.Helper()
		var dir string
		if flush {
			_, dir = s.checkpoint(now)
		} else {
			res := s.step(&command.Command{Type: command.TypeCheckpoint, Now: now})
			if res.Checkpoint == nil || res.Checkpoint.Wait() != nil {
				t.Fatalf("checkpoint: %+v", res.Checkpoint)
			}
			if _, err := TrimCheckpointWAL(res.Checkpoint.Dir); err != nil {
				t.Fatal(err)
			}
			dir = res.Checkpoint.Dir
		}
		live, err := s.f.Counts()
		if err != nil {
			t.Fatal(err)
		}
		db, err := openCheckpoint(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		lower, upper := stateRange()
		scanKeys, scanBytes, err := countRange(context.Background(), db, lower, upper)
		if err != nil {
			t.Fatal(err)
		}
		c, err := countSoloTables(context.Background(), db, dir)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c.keys != scanKeys || c.bytes != scanBytes || scanKeys != live.StateKeys || scanBytes != live.StateBytes {
			t.Fatalf("%s: counted %d keys, %d bytes (%d tables from their properties, %d ranges read); a plain scan %d, %d; the live state %d, %d",
				name, c.keys, c.bytes, c.tables, c.ranges, scanKeys, scanBytes, live.StateKeys, live.StateBytes)
		}
		keys, bytes, err := CountCheckpoint(context.Background(), dir)
		if err != nil || keys != scanKeys || bytes != scanBytes {
			t.Fatalf("%s: CountCheckpoint counted %d keys, %d bytes (%v); a plain scan %d, %d", name, keys, bytes, err, scanKeys, scanBytes)
		}
		t.Logf("%s: %d keys, %d of them in %d tables counted from their properties, %d ranges read", name, c.keys, c.tableKeys, c.tables, c.ranges)
		levels, err := db.SSTables(pebble.WithProperties())
		if err != nil {
			t.Fatal(err)
		}
		var pinned uint64
		for _, l := range levels {
			for _, tb := range l {
				pinned += tb.Properties.SnapshotPinnedKeys
			}
		}
		return c, pinned
	}
	// mostly wants at least min keys counted from tables' properties.
	mostly := func(name string, c soloCount, min uint64) {
		t.Helper()
		if c.tableKeys < min {
			t.Fatalf("%s: %d keys counted from %d tables' properties; want %d at least", name, c.tableKeys, c.tables, min)
		}
	}

	appendKeys(1, 20000)
	compact()
	c, _ := check("settled appends", 2, true)
	mostly("settled appends", c, 18000)
	appendKeys(3, 3000)
	c, _ = check("appends since, unflushed and flushed", 4, true)
	mostly("appends since", c, 18000)
	compact()
	// A prefix delete over 256 old keys (a range deletion), in the WAL,
	// then flushed.
	s.step(commitCmd(5, []command.Mutation{{Op: command.OpDeletePrefix, Namespace: "a", Key: []byte{'a', 0, 0, 0x1f}}}, nil))
	c, _ = check("a prefix delete in the WAL", 6, false)
	mostly("a prefix delete in the WAL", c, 18000)
	c, _ = check("a prefix delete flushed", 7, true)
	mostly("a prefix delete flushed", c, 18000)
	compact()
	// New keys, half of them deleted before their flush, and deletes of
	// keys never written: a table of their own, with its tombstones.
	first := next
	appendKeys(8, 500)
	var dels []command.Mutation
	for i := first; i < next+100; i += 2 {
		dels = append(dels, command.Mutation{Op: command.OpDelete, Namespace: "a", Key: key(i)})
	}
	s.step(commitCmd(8, dels, nil))
	c, _ = check("new keys and deletes, flushed", 8, true)
	mostly("new keys and deletes, flushed", c, 18000)
	compact()
	// Overwrites and deletes of old keys below 2000, in a newer table
	// and in the WAL.
	for i := range 40 {
		k := s.rng.IntN(2000)
		muts := []command.Mutation{{Op: command.OpPut, Namespace: "a", Key: key(k), Value: []byte("new")}}
		if i%3 == 0 {
			muts = append(muts, command.Mutation{Op: command.OpDelete, Namespace: "a", Key: key(k + 1)})
		}
		s.step(commitCmd(8, muts, nil))
		if i == 20 {
			if err := s.f.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The same above 10000, in the WAL only.
	for i := range 20 {
		k := 10000 + s.rng.IntN(2000)
		muts := []command.Mutation{{Op: command.OpPut, Namespace: "a", Key: key(k), Value: []byte("newer")}}
		if i%3 == 0 {
			muts = append(muts, command.Mutation{Op: command.OpDelete, Namespace: "a", Key: key(k + 1)})
		}
		s.step(commitCmd(8, muts, nil))
	}
	c, _ = check("overwrites and deletes over old tables", 9, false)
	mostly("overwrites and deletes over old tables", c, 12000)
	// Random commits over the whole state: no table stands alone.
	for range 30 {
		s.commit(10, 20, 20000)
	}
	check("random commits", 11, true)
	// Two versions of keys kept in one table for a snapshot.
	compact()
	snap := s.f.db.NewSnapshot()
	for i := 0; i < 20000; i += 7 {
		s.step(commitCmd(12, []command.Mutation{{Op: command.OpPut, Namespace: "a", Key: key(i), Value: []byte("kept beside the old")}}, nil))
	}
	compact()
	_, pinned := check("keys pinned by a snapshot", 13, true)
	snap.Close()
	if pinned == 0 {
		t.Fatal("no table of the checkpoint keeps a key for the snapshot: the test wants some")
	}

	// A checkpoint whose WALs cannot be read as the count needs (here a
	// segment of a failover WAL beside them) is read whole, exactly, and
	// the count says why.
	compact()
	_, dir := s.checkpoint(14)
	db, err := openCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := os.WriteFile(filepath.Join(dir, "000099-001.log"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	lower, upper := stateRange()
	scanKeys, scanBytes, err := countRange(context.Background(), db, lower, upper)
	if err != nil {
		t.Fatal(err)
	}
	c, err = countState(context.Background(), db, dir)
	if err != nil || c.keys != scanKeys || c.bytes != scanBytes || c.tables != 0 || !strings.Contains(c.readWhole, "WAL segment") {
		t.Fatalf("with a WAL segment: counted %+v (%v); want %d keys, %d bytes, read whole because of the segment", c, err, scanKeys, scanBytes)
	}
	n, err := NewCheckpointCounter(filepath.Join(t.TempDir(), "base")).Count(context.Background(), dir)
	if err != nil || n.Keys != scanKeys || n.Bytes != scanBytes || !strings.Contains(n.Whole, "no table counted from its properties") {
		t.Fatalf("with a WAL segment: the counter counted %+v (%v); want %d keys, %d bytes, and why no table was counted from its properties", n, err, scanKeys, scanBytes)
	}
}

// TestCountableTableWantsNothingButOneVersionOfStateKeys: a table's
// properties count it only when it holds nothing but one version of each
// of its state keys: any deletion, merge operand, range key, blob value
// or key kept for a snapshot, or a bound outside the state, rules it out.
func TestCountableTableWantsNothingButOneVersionOfStateKeys(t *testing.T) {
	lower, upper := stateRange()
	inState := func(k string) []byte { return append([]byte{prefixState}, k...) }
	table := func(edit func(*pebble.SSTableInfo)) *pebble.SSTableInfo {
		ti := &pebble.SSTableInfo{Properties: &sstable.Properties{}}
		ti.Smallest.UserKey, ti.Largest.UserKey = inState("a"), inState("z")
		ti.Properties.NumEntries, ti.Properties.RawKeySize, ti.Properties.RawValueSize = 10, 10*(8+2), 100
		if edit != nil {
			edit(ti)
		}
		return ti
	}
	if !countableTable(table(nil), lower, upper) {
		t.Fatal("a table of ten state entries and nothing else is not countable")
	}
	edges := table(func(ti *pebble.SSTableInfo) {
		ti.Smallest.UserKey, ti.Largest.UserKey = lower, append(bytes.Clone(lower), 0xff, 0xff)
	})
	if !countableTable(edges, lower, upper) {
		t.Fatal("a table from the state's first key to just below its upper bound is not countable")
	}
	for name, edit := range map[string]func(*pebble.SSTableInfo){
		"no properties":                func(ti *pebble.SSTableInfo) { ti.Properties = nil },
		"a deletion":                   func(ti *pebble.SSTableInfo) { ti.Properties.NumDeletions = 1 },
		"a range deletion":             func(ti *pebble.SSTableInfo) { ti.Properties.NumRangeDeletions = 1 },
		"a sized deletion":             func(ti *pebble.SSTableInfo) { ti.Properties.NumSizedDeletions = 1 },
		"a merge operand":              func(ti *pebble.SSTableInfo) { ti.Properties.NumMergeOperands = 1 },
		"a key for a snapshot":         func(ti *pebble.SSTableInfo) { ti.Properties.SnapshotPinnedKeys = 1 },
		"a value in a blob":            func(ti *pebble.SSTableInfo) { ti.Properties.NumValuesInBlobFiles = 1 },
		"a range key set":              func(ti *pebble.SSTableInfo) { ti.Properties.NumRangeKeySets = 1 },
		"a range key unset":            func(ti *pebble.SSTableInfo) { ti.Properties.NumRangeKeyUnsets = 1 },
		"a range key delete":           func(ti *pebble.SSTableInfo) { ti.Properties.NumRangeKeyDels = 1 },
		"key sizes below the trailers": func(ti *pebble.SSTableInfo) { ti.Properties.RawKeySize = 79 },
		"a bound below the state":      func(ti *pebble.SSTableInfo) { ti.Smallest.UserKey = []byte{prefixSystem, 'a'} },
		"a bound above the state":      func(ti *pebble.SSTableInfo) { ti.Largest.UserKey = []byte{prefixLane, 'x'} },
		"a bound at the state's end":   func(ti *pebble.SSTableInfo) { ti.Largest.UserKey = bytes.Clone(upper) },
		"a bound just below the state": func(ti *pebble.SSTableInfo) { ti.Smallest.UserKey = []byte{prefixState - 1, 0xff} },
	} {
		if countableTable(table(edit), lower, upper) {
			t.Errorf("a table with %s is countable", name)
		}
	}
}
