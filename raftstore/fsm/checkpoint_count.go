package fsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
)

// countInParallel says whether CountCheckpoint splits the state into
// ranges counted at once (one per CPU, up to 4). It does not yet: on the
// shared 2-core VM, BenchmarkCountCheckpoint measured no gain in wall
// time and 2 ranges 8% more CPU than one, with no core idle; a quiet
// machine decides.
const countInParallel = false

// countParts is how many ranges of the state CountCheckpoint counts at
// once.
func countParts() int {
	if !countInParallel {
		return 1
	}
	return min(runtime.GOMAXPROCS(0), 4)
}

// CountCheckpoint counts the state entries of a local checkpoint and
// their key and value bytes, exactly. It counts each table that stands
// alone from its properties (countSoloTables) and reads the rest, about
// 1.1-1.7 CPU-seconds per GB read. It stops when ctx ends.
func CountCheckpoint(ctx context.Context, dir string) (keys, bytes uint64, err error) {
	return countCheckpoint(ctx, dir, countParts())
}

// countCheckpoint counts the state: in one range, the tables that can be
// counted from their properties first (countSoloTables); in parts
// ranges at once, split at table boundaries (stateSplits).
func countCheckpoint(ctx context.Context, dir string, parts int) (keys, bytes uint64, err error) {
	if ctx.Err() != nil {
		return 0, 0, context.Cause(ctx)
	}
	db, err := openCheckpoint(dir)
	if err != nil {
		return 0, 0, err
	}
	defer db.Close()
	if parts == 1 {
		c, err := countState(ctx, db, dir)
		return c.keys, c.bytes, err
	}
	return countInRanges(ctx, db, parts)
}

// countState counts the state of the checkpoint db in dir, from its
// tables' properties where it can (countSoloTables), or else by reading
// it all in one range.
func countState(ctx context.Context, db *pebble.DB, dir string) (soloCount, error) {
	c, err := countSoloTables(ctx, db, dir)
	if err == nil {
		return c, nil
	}
	if ctx.Err() != nil {
		return soloCount{}, context.Cause(ctx)
	}
	// Whatever kept the tables from being sorted out, a plain iteration
	// counts them all, and says why.
	c = soloCount{readWhole: wholeReason(err)}
	lower, upper := stateRange()
	err = c.countRange(ctx, db, lower, upper)
	return c, err
}

// countInRanges counts the state in parts ranges at once, split at table
// boundaries (stateSplits).
func countInRanges(ctx context.Context, db *pebble.DB, parts int) (keys, bytes uint64, err error) {
	bounds, err := stateSplits(db, parts)
	if err != nil {
		return 0, 0, err
	}
	type part struct {
		keys, bytes uint64
		err         error
	}
	counted := make([]part, len(bounds)-1)
	var wg sync.WaitGroup
	for i := range counted {
		wg.Go(func() {
			p := &counted[i]
			p.keys, p.bytes, p.err = countRange(ctx, db, bounds[i], bounds[i+1])
		})
	}
	wg.Wait()
	for _, p := range counted {
		if p.err != nil {
			return 0, 0, p.err
		}
		keys += p.keys
		bytes += p.bytes
	}
	return keys, bytes, nil
}

// countRange counts the entries in [lower, upper) and their bytes.
func countRange(ctx context.Context, db *pebble.DB, lower, upper []byte) (keys, bytes uint64, err error) {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return 0, 0, err
	}
	for ok := it.First(); ok; ok = it.Next() {
		keys++
		bytes += uint64(len(it.Key()) + len(it.Value()))
		if keys%4096 == 0 && ctx.Err() != nil {
			it.Close()
			return 0, 0, context.Cause(ctx)
		}
	}
	return keys, bytes, it.Close()
}

// stateSplits splits the state's key range into up to parts ranges at
// table boundaries, about as many boundaries in each: bounds[i] and
// bounds[i+1] are the lower and upper bounds of range i. Tables are of
// similar sizes, so the ranges hold similar bytes. The ranges cover the
// state whatever the tables hold: the split only balances the work.
func stateSplits(db *pebble.DB, parts int) ([][]byte, error) {
	lower, upper := []byte{prefixState}, []byte{prefixState + 1}
	bounds := [][]byte{lower}
	if parts > 1 {
		levels, err := db.SSTables(pebble.WithKeyRangeFilter(lower, upper))
		if err != nil {
			return nil, err
		}
		var keys [][]byte
		for _, l := range levels {
			for _, t := range l {
				for _, k := range [][]byte{t.Smallest.UserKey, t.Largest.UserKey} {
					if bytes.Compare(k, lower) > 0 && bytes.Compare(k, upper) < 0 {
						keys = append(keys, k)
					}
				}
			}
		}
		slices.SortFunc(keys, bytes.Compare)
		keys = slices.CompactFunc(keys, bytes.Equal)
		for i := 1; i < parts && len(keys) > 0; i++ {
			if k := keys[i*len(keys)/parts]; bytes.Compare(k, bounds[len(bounds)-1]) > 0 {
				bounds = append(bounds, bytes.Clone(k))
			}
		}
	}
	return append(bounds, upper), nil
}

// soloCount is what countSoloTables counted, and how.
type soloCount struct {
	keys, bytes uint64
	// tables were counted from their properties, holding tableKeys of
	// the keys; the rest was read in ranges.
	tables    int
	tableKeys uint64
	ranges    int
	// readWhole, when set, says why no table was counted from its
	// properties and the state was read whole.
	readWhole string
}

// countSoloTables counts the state of the checkpoint db in dir exactly,
// reading as little of it as it can. A table that nothing else in the
// checkpoint overlaps (no other table of any level, nothing in its
// WALs) holds the only version of each of its keys. When it also holds
// nothing but state entries, and neither deletions, merges, range keys
// nor keys kept for a snapshot, its properties count it: one entry per
// key, and its raw key and value sizes. Everything else is read in the
// ranges between such tables, as a whole count reads it. A state written
// in rising keys (appends) and settled into its lowest level is then
// counted from its tables' properties, plus what was written since; a
// state overwritten at random has no such table, and is read whole.
//
// Each table's state entries are bounded by opening it, unless its
// bounds already lie within the state: the applied index and the
// sessions' records, written beside the state in every batch, put most
// of a flush's or compaction's bounds outside it.
func countSoloTables(ctx context.Context, db *pebble.DB, dir string) (soloCount, error) {
	var c soloCount
	lower, upper := stateRange()
	levels, err := db.SSTables(pebble.WithProperties(), pebble.WithKeyRangeFilter(lower, upper))
	if err != nil {
		return c, err
	}
	// extent is [start, end) of the state entries of one table or of one
	// WAL key or range.
	type extent struct {
		start, end []byte
		t          *pebble.SSTableInfo // nil for a WAL's
		countable  bool                // by its properties, if alone
	}
	var exts []extent
	d := &delta{lower: lower, upper: upper}
	if err := d.readWALs(dir); err != nil {
		return c, err
	}
	for _, k := range d.walKeys {
		exts = append(exts, extent{start: k, end: keyAfter(k)})
	}
	for _, s := range d.spans {
		exts = append(exts, extent{start: s.start, end: s.end})
	}
	for _, l := range levels {
		for i := range l {
			t := &l[i]
			if t.Virtual {
				return c, countWhole("%s holds a virtual table", dir)
			}
			e := extent{t: t, countable: countableTable(t, lower, upper)}
			if e.countable {
				e.start, e.end = t.Smallest.UserKey, keyAfter(t.Largest.UserKey)
			} else {
				var ok bool
				if e.start, e.end, ok, err = tableStateExtent(ctx, tablePath(dir, t), lower, upper); err != nil {
					return c, err
				} else if !ok {
					continue
				}
			}
			exts = append(exts, e)
		}
	}
	slices.SortFunc(exts, func(a, b extent) int { return bytes.Compare(a.start, b.start) })
	// A table stands alone when no extent before it ends past its start
	// and the next does not start before its end.
	next := lower
	var reach []byte // the furthest end of the extents before
	for i, e := range exts {
		alone := e.countable && (reach == nil || bytes.Compare(reach, e.start) <= 0) &&
			(i+1 == len(exts) || bytes.Compare(exts[i+1].start, e.end) >= 0)
		if reach == nil || bytes.Compare(e.end, reach) > 0 {
			reach = e.end
		}
		if !alone {
			continue
		}
		p := e.t.Properties
		c.keys += p.NumEntries
		c.bytes += p.RawKeySize - 8*p.NumEntries + p.RawValueSize
		c.tables++
		c.tableKeys += p.NumEntries
		if err := c.countRange(ctx, db, next, e.start); err != nil {
			return c, err
		}
		next = e.end
	}
	err = c.countRange(ctx, db, next, upper)
	return c, err
}

// countRange adds what [lower, upper) holds, read entry by entry.
func (c *soloCount) countRange(ctx context.Context, db *pebble.DB, lower, upper []byte) error {
	if bytes.Compare(lower, upper) >= 0 {
		return nil
	}
	keys, n, err := countRange(ctx, db, lower, upper)
	c.keys, c.bytes, c.ranges = c.keys+keys, c.bytes+n, c.ranges+1
	return err
}

// countableTable reports whether the properties of t count its entries
// and their bytes exactly, as long as nothing else overlaps it: it lies
// within [lower, upper), and holds no deletion of any kind, no merge
// operand, no range key, no value in a blob file, and no key kept only
// for a snapshot (the only way two versions of one key share a table).
func countableTable(t *pebble.SSTableInfo, lower, upper []byte) bool {
	p := t.Properties
	return p != nil && p.NumDeletions == 0 && p.NumRangeDeletions == 0 && p.NumSizedDeletions == 0 &&
		p.NumMergeOperands == 0 && p.SnapshotPinnedKeys == 0 && p.NumValuesInBlobFiles == 0 &&
		p.NumRangeKeySets == 0 && p.NumRangeKeyUnsets == 0 && p.NumRangeKeyDels == 0 &&
		p.RawKeySize >= 8*p.NumEntries &&
		bytes.Compare(t.Smallest.UserKey, lower) >= 0 && bytes.Compare(t.Largest.UserKey, upper) < 0
}

// tableStateExtent opens the table file p and returns [start, end)
// around its point keys and range deletions within [lower, upper); ok is
// false when it holds none there.
func tableStateExtent(ctx context.Context, p string, lower, upper []byte) (start, end []byte, ok bool, err error) {
	r, err := openTableReader(ctx, p)
	if err != nil {
		return nil, nil, false, err
	}
	defer r.Close()
	widen := func(s, e []byte) {
		if !ok || bytes.Compare(s, start) < 0 {
			start = bytes.Clone(s)
		}
		if !ok || bytes.Compare(e, end) > 0 {
			end = bytes.Clone(e)
		}
		ok = true
	}
	dels := &delta{lower: lower, upper: upper}
	if err := rangeDels(ctx, r, dels.addSpan); err != nil {
		return nil, nil, false, fmt.Errorf("fsm: read table %s: %w", p, err)
	}
	for _, s := range dels.spans {
		widen(s.start, s.end)
	}
	it, err := r.NewIter(sstable.NoTransforms, lower, upper, sstable.AssertNoBlobHandles)
	if err != nil {
		return nil, nil, false, fmt.Errorf("fsm: read table %s: %w", p, err)
	}
	if kv := it.First(); kv != nil {
		widen(kv.K.UserKey, keyAfter(kv.K.UserKey))
	}
	if kv := it.SeekLT(upper, 0); kv != nil {
		widen(kv.K.UserKey, keyAfter(kv.K.UserKey))
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, nil, false, fmt.Errorf("fsm: read table %s: %w", p, err)
	}
	return start, end, ok, nil
}

// keyAfter is the first key after k.
func keyAfter(k []byte) []byte { return append(k[:len(k):len(k)], 0) }
