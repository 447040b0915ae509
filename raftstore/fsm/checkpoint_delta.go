package fsm

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/batchrepr"
	"github.com/cockroachdb/pebble/v2/record"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// CountBaseDir is where in the data dir, beside the state, the
// checkpoint coordinator keeps its CheckpointCounter's base.
const CountBaseDir = "checkpoint-count-base"

// countBaseFile is the file in a count base that holds its counts. It is
// written last: a base without it is incomplete and is not used.
const countBaseFile = "stated-count.json"

// CheckpointCounter counts the state of one store's successive local
// checkpoints, exactly, and as far as it can without reading the whole
// state.
//
// A checkpoint it counted can be kept as the base of the next count
// (Keep): a copy of the checkpoint made of hard links, with its counts.
// The next checkpoint is then counted from the base. Two checkpoints of a
// store can only differ in a key that is written in a table one of them
// holds and the other does not (tables never change, and a table both
// hold is the same file, hard-linked), or in either one's WAL. So the new
// counts are the base's, plus, for each such key, what the checkpoint
// holds for it less what the base held; a range deletion in those tables
// or WALs is counted over its range in both. Only the tables that changed
// are read, so after a small change the count takes time in proportion
// to the change and to the compactions since, not to the state.
//
// When there is no base, or when the tables that changed hold more than
// a twelfth of the state's table bytes, or when anything about the base
// is not as expected, the state is counted whole (CountCheckpoint: the
// tables that stand alone from their properties, the rest read) and
// CheckpointCount.Whole says why. Each key compared costs two point
// lookups, which read blocks the whole count would read once in order:
// about twenty times a whole count's cost per key (BenchmarkCount-
// CheckpointFromBase: 1% of 200 MB changed took 0.22× a whole count), so
// past a few percent of the keys the whole count is cheaper.
//
// The base holds the tables that compactions have since replaced in the
// store until the next Keep replaces it: up to one checkpoint interval's
// worth of compactions in disk space. Drop removes it.
type CheckpointCounter struct {
	mu   sync.Mutex
	base string
}

// NewCheckpointCounter returns a counter that keeps its base in the
// directory base, which it alone uses.
func NewCheckpointCounter(base string) *CheckpointCounter {
	return &CheckpointCounter{base: base}
}

// CheckpointCount is what a CheckpointCounter found, and how.
type CheckpointCount struct {
	// Keys and Bytes are the state's entries and their key and value
	// bytes, as CountCheckpoint counts them.
	Keys, Bytes uint64
	// Whole is empty when the state was counted from the base; otherwise
	// it says why the state was counted whole.
	Whole string
	// TablesFromProperties and KeysFromProperties are, in a whole count,
	// the tables counted from their properties and the keys they hold;
	// the rest was read.
	TablesFromProperties int
	KeysFromProperties   uint64
	// BaseEpoch is the epoch of the base counted from (with Whole empty).
	BaseEpoch uint64
	// TablesRead and TableBytesRead are the changed tables read to find
	// the keys to compare; KeysCompared is how many distinct keys were
	// looked up in both, and RangesCompared the range deletions' ranges
	// counted in both.
	TablesRead     int
	TableBytesRead uint64
	KeysCompared   uint64
	RangesCompared int
}

// countFromBaseLimit: the state is counted from the base only while the
// changed tables hold at most 1/countFromBaseLimit of the state's table
// bytes (see CheckpointCounter).
const countFromBaseLimit = 12

// countBase is the content of countBaseFile.
type countBase struct {
	Epoch uint64 `json:"epoch"`
	Keys  uint64 `json:"keys"`
	Bytes uint64 `json:"bytes"`
}

// errCountWhole marks a reason to count the state whole.
var errCountWhole = errors.New("fsm: count the state whole")

func countWhole(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errCountWhole}, args...)...)
}

// Count counts the state of the local checkpoint in dir, from the base
// when it can. It stops when ctx ends.
func (c *CheckpointCounter) Count(ctx context.Context, dir string) (CheckpointCount, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Opened once, for the count from the base and for the whole count
	// alike: an open replays the checkpoint's WAL into memtables.
	db, err := openCheckpoint(dir)
	if err != nil {
		return CheckpointCount{}, err
	}
	defer db.Close()
	n, err := c.countFromBase(ctx, dir, db)
	if err == nil {
		return n, nil
	}
	if ctx.Err() != nil {
		return CheckpointCount{}, context.Cause(ctx)
	}
	why := wholeReason(err)
	w, err := countState(ctx, db, dir)
	if err != nil {
		return CheckpointCount{}, err
	}
	if w.readWhole != "" {
		why += "; no table counted from its properties: " + w.readWhole
	}
	return CheckpointCount{Keys: w.keys, Bytes: w.bytes, Whole: why, TablesFromProperties: w.tables, KeysFromProperties: w.tableKeys}, nil
}

// wholeReason is the reason err gives for counting the state whole,
// without errCountWhole's own words.
func wholeReason(err error) string {
	return strings.TrimPrefix(err.Error(), errCountWhole.Error()+": ")
}

// Keep makes the checkpoint in dir, counted as n, the base of the next
// count, in place of the one before. It links the checkpoint's files, so
// it needs dir on the base's file system; nothing may write to them
// after (a local checkpoint is only read, then removed), and dir must be
// whole until Keep returns: the caller removes it only after. On error
// the counter has no base.
func (c *CheckpointCounter) Keep(dir string, epoch uint64, n CheckpointCount) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	tmp, old := c.base+".tmp", c.base+".old"
	err := func() error {
		if err := os.RemoveAll(tmp); err != nil {
			return err
		}
		if err := os.MkdirAll(tmp, 0o755); err != nil {
			return err
		}
		if err := linkFiles(dir, tmp); err != nil {
			return err
		}
		b, err := json.Marshal(countBase{Epoch: epoch, Keys: n.Keys, Bytes: n.Bytes})
		if err != nil {
			return err
		}
		if err := writeSynced(filepath.Join(tmp, countBaseFile), b); err != nil {
			return err
		}
		if err := syncDir(tmp); err != nil {
			return err
		}
		if err := os.RemoveAll(old); err != nil {
			return err
		}
		if err := os.Rename(c.base, old); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if err := os.Rename(tmp, c.base); err != nil {
			return err
		}
		if err := syncDir(filepath.Dir(c.base)); err != nil {
			return err
		}
		return os.RemoveAll(old)
	}()
	if err != nil {
		err = errors.Join(fmt.Errorf("fsm: keep checkpoint %s as the base of the next count: %w", dir, err),
			os.RemoveAll(tmp), os.RemoveAll(c.base))
	}
	return err
}

// Copy links the files of the local checkpoint in dir into a copy of the
// counter's own, beside its base, and returns the copy's directory, which
// Count and Keep then take in place of dir. A count of the copy can go on
// after dir is removed (the next barrier removes the last local
// checkpoint, and a count reading its directory then would fail
// mid-read). It links, so it needs dir on the base's file system, and
// replaces the copy before it: the caller runs one count of a copy at a
// time, and removes the copy with RemoveCopy once it is counted and kept.
func (c *CheckpointCounter) Copy(dir string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cp := c.base + ".count"
	err := func() error {
		if err := os.RemoveAll(cp); err != nil {
			return err
		}
		if err := os.MkdirAll(cp, 0o755); err != nil {
			return err
		}
		return linkFiles(dir, cp)
	}()
	if err != nil {
		return "", errors.Join(fmt.Errorf("fsm: copy checkpoint %s to count it: %w", dir, err), os.RemoveAll(cp))
	}
	return cp, nil
}

// RemoveCopy removes the copy Copy made; the tables its base holds stay.
func (c *CheckpointCounter) RemoveCopy() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return os.RemoveAll(c.base + ".count")
}

// Drop removes the base and any copy, and with them the tables only they
// still hold. A count of the copy that is under way when Drop is called
// ends first (they take the same lock); one that starts after fails to
// open the copy.
func (c *CheckpointCounter) Drop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return errors.Join(os.RemoveAll(c.base), os.RemoveAll(c.base+".tmp"), os.RemoveAll(c.base+".old"), os.RemoveAll(c.base+".count"))
}

// linkFiles hard-links the regular files of dir into dst, which exists.
func linkFiles(dir, dst string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if err := os.Link(filepath.Join(dir, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// writeSynced writes b to a new file p and syncs it.
func writeSynced(p string, b []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// readCountBase reads the counts of the base in dir.
func readCountBase(dir string) (countBase, error) {
	var b countBase
	data, err := os.ReadFile(filepath.Join(dir, countBaseFile))
	if errors.Is(err, os.ErrNotExist) {
		return b, countWhole("no base kept")
	}
	if err != nil {
		return b, countWhole("the base's counts: %v", err)
	}
	if err := json.Unmarshal(data, &b); err != nil {
		return b, countWhole("the base's counts: %v", err)
	}
	return b, nil
}

// stateTable is a table of a checkpoint that may hold state entries.
type stateTable struct {
	path string
	info pebble.SSTableInfo
	fi   os.FileInfo
}

// sameTable reports whether a and b are one table: the same file (a hard
// link of it) with the same place in the store's history.
func sameTable(a, b stateTable) bool {
	return os.SameFile(a.fi, b.fi) &&
		a.info.SmallestSeqNum == b.info.SmallestSeqNum && a.info.LargestSeqNum == b.info.LargestSeqNum &&
		a.info.Smallest.Trailer == b.info.Smallest.Trailer && a.info.Largest.Trailer == b.info.Largest.Trailer &&
		bytes.Equal(a.info.Smallest.UserKey, b.info.Smallest.UserKey) && bytes.Equal(a.info.Largest.UserKey, b.info.Largest.UserKey)
}

// stateTables lists the tables of the checkpoint db in dir that overlap
// the state's key range, by file number.
func stateTables(db *pebble.DB, dir string) (map[uint64]stateTable, uint64, error) {
	lower, upper := stateRange()
	levels, err := db.SSTables(pebble.WithKeyRangeFilter(lower, upper))
	if err != nil {
		return nil, 0, err
	}
	tables := map[uint64]stateTable{}
	var total uint64
	for _, l := range levels {
		for _, t := range l {
			if t.Virtual {
				return nil, 0, countWhole("%s holds a virtual table", dir)
			}
			if len(t.GetBlobReferenceFiles()) > 0 {
				return nil, 0, countWhole("%s holds a table with values in blob files", dir)
			}
			num := uint64(t.BackingSSTNum)
			p := tablePath(dir, &t)
			fi, err := os.Stat(p)
			if err != nil {
				return nil, 0, countWhole("table %d of %s: %v", num, dir, err)
			}
			tables[num] = stateTable{path: p, info: t, fi: fi}
			total += t.Size
		}
	}
	return tables, total, nil
}

// tablePath is the file of table t in the checkpoint in dir.
func tablePath(dir string, t *pebble.SSTableInfo) string {
	return filepath.Join(dir, fmt.Sprintf("%06d.sst", uint64(t.BackingSSTNum)))
}

// stateRange is the key range of the state's entries.
func stateRange() (lower, upper []byte) { return []byte{prefixState}, []byte{prefixState + 1} }

// countFromBase counts the checkpoint in dir, opened as newDB, from the
// base. An error that matches errCountWhole says why it could not.
func (c *CheckpointCounter) countFromBase(ctx context.Context, dir string, newDB *pebble.DB) (CheckpointCount, error) {
	var n CheckpointCount
	if c.base == "" {
		return n, countWhole("no base kept")
	}
	base, err := readCountBase(c.base)
	if err != nil {
		return n, err
	}
	oldDB, err := openCheckpoint(c.base)
	if err != nil {
		return n, countWhole("open the base: %v", err)
	}
	defer oldDB.Close()
	oldT, _, err := stateTables(oldDB, c.base)
	if err != nil {
		return n, err
	}
	newT, total, err := stateTables(newDB, dir)
	if err != nil {
		return n, err
	}
	var changed []stateTable
	for num, t := range newT {
		if o, ok := oldT[num]; !ok || !sameTable(o, t) {
			changed = append(changed, t)
		}
	}
	for num, t := range oldT {
		if nt, ok := newT[num]; !ok || !sameTable(t, nt) {
			changed = append(changed, t)
		}
	}
	var changedBytes uint64
	for _, t := range changed {
		changedBytes += t.info.Size
	}
	if changedBytes*countFromBaseLimit > total {
		// changedBytes holds the new tables and the ones they replaced;
		// total only the state's tables now.
		return n, countWhole("the tables added and removed since the base (epoch %d) hold %d bytes, more than 1/%d of the state's %d", base.Epoch, changedBytes, countFromBaseLimit, total)
	}

	d := &delta{}
	d.lower, d.upper = stateRange()
	for _, wdir := range []string{c.base, dir} {
		if err := d.readWALs(wdir); err != nil {
			return n, err
		}
	}
	defer d.close()
	for _, t := range changed {
		if err := d.openTable(ctx, t); err != nil {
			return n, err
		}
	}
	n.TablesRead, n.TableBytesRead = len(changed), changedBytes
	oldKeys, oldBytes, newKeys, newBytes, err := d.compare(ctx, oldDB, newDB)
	if err != nil {
		return n, err
	}
	n.KeysCompared, n.RangesCompared = d.compared, len(d.spans)
	keys, bytes := base.Keys+newKeys, base.Bytes+newBytes
	if keys < oldKeys || bytes < oldBytes {
		return n, countWhole("the base's counts (%d keys, %d bytes) are less than what it holds of the changed keys (%d, %d)", base.Keys, base.Bytes, oldKeys, oldBytes)
	}
	n.Keys, n.Bytes, n.BaseEpoch = keys-oldKeys, bytes-oldBytes, base.Epoch
	return n, nil
}

// span is a key range [start, end).
type span struct{ start, end []byte }

// delta gathers the keys and ranges in which two checkpoints may differ.
type delta struct {
	lower, upper []byte
	// walKeys are the state keys written in either WAL.
	walKeys [][]byte
	// spans are the ranges deleted in a changed table or a WAL, within
	// the state's range; merged and sorted by compare.
	spans []span
	// tables are the changed tables' point iterators.
	tables   []*tableKeys
	compared uint64
}

// tableKeys walks the state keys of one table.
type tableKeys struct {
	r  *sstable.Reader
	it sstable.Iterator
	// key is the current key, or nil when the table is done.
	key []byte
}

// addSpan adds [start, end) cut to the state's range, if anything is left.
func (d *delta) addSpan(start, end []byte) {
	if bytes.Compare(start, d.lower) < 0 {
		start = d.lower
	}
	if bytes.Compare(end, d.upper) > 0 {
		end = d.upper
	}
	if bytes.Compare(start, end) < 0 {
		d.spans = append(d.spans, span{bytes.Clone(start), bytes.Clone(end)})
	}
}

func (d *delta) inState(k []byte) bool {
	return bytes.Compare(k, d.lower) >= 0 && bytes.Compare(k, d.upper) < 0
}

// readWALs reads the WAL files of the checkpoint in dir: every key and
// range they write may be in its memtable.
func (d *delta) readWALs(dir string) error {
	logs, err := checkpointWALs(dir)
	if err != nil {
		return err
	}
	for _, l := range logs {
		if l.segment {
			return countWhole("%s has a WAL segment %s", dir, filepath.Base(l.path))
		}
		if err := d.readWAL(l.path, l.num); err != nil {
			return err
		}
	}
	return nil
}

// readWAL reads the batches in the log file p of log num.
func (d *delta) readWAL(p string, num uint64) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	rr := newRecordReader(record.NewReader, f, num)
	for {
		rec, err := rr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return countWhole("WAL %s does not read to its end: %v", p, err)
		}
		repr, err := io.ReadAll(rec)
		if err != nil {
			return countWhole("WAL %s does not read to its end: %v", p, err)
		}
		r := batchrepr.Read(repr)
		for {
			kind, ukey, value, ok, err := r.Next()
			if err != nil {
				return countWhole("WAL %s holds a batch that does not read: %v", p, err)
			}
			if !ok {
				break
			}
			switch kind {
			case pebble.InternalKeyKindRangeDelete:
				d.addSpan(ukey, value)
			case pebble.InternalKeyKindIngestSST, pebble.InternalKeyKindExcise:
				return countWhole("WAL %s ingests or excises tables", p)
			case pebble.InternalKeyKindLogData, pebble.InternalKeyKindRangeKeySet,
				pebble.InternalKeyKindRangeKeyUnset, pebble.InternalKeyKindRangeKeyDelete:
				// No point key: range keys are not read by the count.
			default:
				if d.inState(ukey) {
					d.walKeys = append(d.walKeys, bytes.Clone(ukey))
				}
			}
		}
	}
}

// openTableReader opens the table file p outside any database.
func openTableReader(ctx context.Context, p string) (*sstable.Reader, error) {
	f, err := vfs.Default.Open(p)
	if err != nil {
		return nil, err
	}
	readable, err := sstable.NewSimpleReadable(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	r, err := sstable.NewReader(ctx, readable, sstable.ReaderOptions{})
	if err != nil {
		readable.Close()
		return nil, fmt.Errorf("fsm: read table %s: %w", p, err)
	}
	return r, nil
}

// rangeDels calls fn with each range deletion of the table r.
func rangeDels(ctx context.Context, r *sstable.Reader, fn func(start, end []byte)) error {
	rd, err := r.NewRawRangeDelIter(ctx, sstable.NoFragmentTransforms, sstable.NoReadEnv)
	if err != nil || rd == nil {
		return err
	}
	defer rd.Close()
	s, err := rd.First()
	for ; s != nil && err == nil; s, err = rd.Next() {
		fn(s.Start, s.End)
	}
	return err
}

// openTable opens the table t and reads its range deletions.
func (d *delta) openTable(ctx context.Context, t stateTable) error {
	r, err := openTableReader(ctx, t.path)
	if err != nil {
		return err
	}
	tk := &tableKeys{r: r}
	d.tables = append(d.tables, tk)
	if err := rangeDels(ctx, r, d.addSpan); err != nil {
		return fmt.Errorf("fsm: read table %s: %w", t.path, err)
	}
	if tk.it, err = r.NewIter(sstable.NoTransforms, d.lower, d.upper, sstable.AssertNoBlobHandles); err != nil {
		return fmt.Errorf("fsm: read table %s: %w", t.path, err)
	}
	if kv := tk.it.First(); kv != nil {
		tk.key = kv.K.UserKey
	}
	return tk.err(t.path)
}

// err returns the table iterator's error, if any.
func (t *tableKeys) err(p string) error {
	if t.it == nil {
		return nil
	}
	if err := t.it.Error(); err != nil {
		return fmt.Errorf("fsm: read table %s: %w", p, err)
	}
	return nil
}

func (d *delta) close() {
	for _, t := range d.tables {
		if t.it != nil {
			t.it.Close()
		}
		t.r.Close()
	}
}

// keyHeap orders the tables by their current key.
type keyHeap []*tableKeys

func (h keyHeap) Len() int           { return len(h) }
func (h keyHeap) Less(i, j int) bool { return bytes.Compare(h[i].key, h[j].key) < 0 }
func (h keyHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *keyHeap) Push(x any)        { *h = append(*h, x.(*tableKeys)) }
func (h *keyHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// compare walks the distinct keys of the changed tables and WALs, in
// order, outside the deleted ranges, and counts what each checkpoint
// holds of them; then it counts the deleted ranges in both.
func (d *delta) compare(ctx context.Context, oldDB, newDB *pebble.DB) (oldKeys, oldBytes, newKeys, newBytes uint64, err error) {
	// The ranges, merged.
	slices.SortFunc(d.spans, func(a, b span) int { return bytes.Compare(a.start, b.start) })
	var spans []span
	for _, s := range d.spans {
		if l := len(spans) - 1; l >= 0 && bytes.Compare(s.start, spans[l].end) <= 0 {
			if bytes.Compare(s.end, spans[l].end) > 0 {
				spans[l].end = s.end
			}
			continue
		}
		spans = append(spans, s)
	}
	d.spans = spans
	slices.SortFunc(d.walKeys, bytes.Compare)
	d.walKeys = slices.CompactFunc(d.walKeys, bytes.Equal)

	h := make(keyHeap, 0, len(d.tables))
	for _, t := range d.tables {
		if t.key != nil {
			h = append(h, t)
		}
	}
	heap.Init(&h)
	var last []byte
	haveLast := false
	walNext, spanNext := 0, 0
	visit := func(k []byte) error {
		if haveLast && bytes.Equal(k, last) {
			return nil
		}
		last, haveLast = append(last[:0], k...), true
		for spanNext < len(d.spans) && bytes.Compare(d.spans[spanNext].end, k) <= 0 {
			spanNext++
		}
		if spanNext < len(d.spans) && bytes.Compare(d.spans[spanNext].start, k) <= 0 {
			return nil // counted with its range
		}
		d.compared++
		if d.compared%4096 == 0 && ctx.Err() != nil {
			return context.Cause(ctx)
		}
		ok, size, err := getSize(oldDB, k)
		if err != nil {
			return err
		}
		if ok {
			oldKeys++
			oldBytes += size
		}
		if ok, size, err = getSize(newDB, k); err != nil {
			return err
		}
		if ok {
			newKeys++
			newBytes += size
		}
		return nil
	}
	for len(h) > 0 || walNext < len(d.walKeys) {
		var k []byte
		fromWAL := len(h) == 0 || (walNext < len(d.walKeys) && bytes.Compare(d.walKeys[walNext], h[0].key) <= 0)
		if fromWAL {
			k = d.walKeys[walNext]
			walNext++
		} else {
			k = h[0].key
		}
		if err := visit(k); err != nil {
			return 0, 0, 0, 0, err
		}
		if fromWAL {
			continue
		}
		t := h[0]
		if kv := t.it.Next(); kv != nil {
			t.key = kv.K.UserKey
			heap.Fix(&h, 0)
		} else {
			if err := t.it.Error(); err != nil {
				return 0, 0, 0, 0, fmt.Errorf("fsm: read a changed table: %w", err)
			}
			t.key = nil
			heap.Pop(&h)
		}
	}
	for _, s := range d.spans {
		k, b, err := countRange(ctx, oldDB, s.start, s.end)
		if err != nil {
			return 0, 0, 0, 0, err
		}
		oldKeys, oldBytes = oldKeys+k, oldBytes+b
		if k, b, err = countRange(ctx, newDB, s.start, s.end); err != nil {
			return 0, 0, 0, 0, err
		}
		newKeys, newBytes = newKeys+k, newBytes+b
	}
	return oldKeys, oldBytes, newKeys, newBytes, nil
}

// getSize reports whether db holds key k, and the entry's key and value
// bytes. A Get stops at the newest level that holds k, where a seek
// positions every level.
func getSize(db *pebble.DB, k []byte) (bool, uint64, error) {
	v, closer, err := db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, err
	}
	n := uint64(len(k) + len(v))
	return true, n, closer.Close()
}
