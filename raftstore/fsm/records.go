package fsm

import (
	"bytes"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

// recordCache keeps the session and lane records (session.go) in memory
// for the apply loop. Every commit in a session reads both before it
// applies, and the point reads through Pebble (the batch, the memtables,
// the tables' index and data blocks) were half the cost of applying a
// one-write commit (BenchmarkApplySessionCommitBatch); the records are
// few, one per client id and one per lane in flight, so memory serves
// them. It keeps the window namespaces' specs and bookkeeping
// (windowMeta) too, which every commit with window parts reads: a spec is
// written once, when the namespace is defined, and a read of it through
// Pebble searched every level above the one holding it, more of them as
// the windows' state grew (BENCHMARKS.md).
//
// It is a write-through cache of what Pebble holds, in two parts:
//   - committed: records as they are in the database, as read or as
//     written by committed batches; a key maps to its value, or to nil
//     when the database has no such record;
//   - pending: the writes of the batch being built, in order. A read
//     sees them first, as a read through the indexed batch would. They
//     move into committed when the batch is committed, and are dropped
//     with a rejected entry's writes (cut). Sessions' and lanes' records
//     enter the batch itself only then (deferred, flush).
//
// The apply loop is its only user (Raft applies one batch at a time), so
// it has no lock. It must see every write of these records: the apply
// path writes them only through applier.setRecord (a nil value deletes)
// and applier.dropLanes, and a database replaced under the state machine
// (a Raft snapshot installed, reopen) resets it.
type recordCache struct {
	committed map[string][]byte
	// lanes lists the lane keys in committed by their client's prefix,
	// so that dropping a client's lanes does not scan committed.
	lanes   map[string][]string
	pending []recordWrite
	// max bounds committed (maxCachedRecords).
	max int
	// last is the position in pending of each key's latest write, and
	// dropped that of the latest drop of a client's lanes, by the lanes'
	// key prefix.
	last, dropped map[string]int
	// flushing is flush's scratch list of the pending writes it makes,
	// and kbuf its key buffer.
	flushing []int
	kbuf     []byte
	// aggs is the window aggregates' cache (windows_cache.go), which
	// follows the batch as the records do.
	aggs *aggCache
	// expiry bounds the expiry index from below, for Expire and
	// ExpiryDue, and endedExpiry the ended sessions' index, for their
	// sweep and EndedSessionsDue; they follow the batch as the records
	// do. A cut entry's writes leave them where they put them: lower than
	// need be, never above a record.
	expiry, endedExpiry expiryFloor
}

// recordWrite is one write of a record: a value, a deletion (val nil),
// or, with drop, the deletion of every lane whose key starts with key.
type recordWrite struct {
	key  string
	val  []byte
	drop bool
}

// maxCachedRecords bounds committed. Past it the cache starts empty again
// (rare: it takes that many client ids and lanes in use).
const maxCachedRecords = 1 << 16

func newRecordCache() *recordCache { return newRecordCacheSized(DefaultWindowCacheSize) }

// newRecordCacheSized is newRecordCache with a window cache of
// windowCacheBytes (0: none).
func newRecordCacheSized(windowCacheBytes int64) *recordCache {
	return &recordCache{committed: map[string][]byte{}, lanes: map[string][]string{},
		max: maxCachedRecords, last: map[string]int{}, dropped: map[string]int{},
		aggs: newAggCache(windowCacheBytes)}
}

// get returns key's record as the batch being built sees it, reading it
// from r (the batch or the database) when the cache does not know it.
// The value must not be modified.
func (c *recordCache) get(r pebble.Reader, key []byte) ([]byte, bool, error) {
	if len(c.pending) > 0 {
		at, written := c.last[string(key)]
		if !written {
			at = -1
		}
		if key[0] == prefixLane {
			if d, ok := c.dropped[string(key[:len(key)-4])]; ok && d > at {
				return nil, false, nil
			}
		}
		if at >= 0 {
			v := c.pending[at].val
			return v, v != nil, nil
		}
	}
	if v, ok := c.committed[string(key)]; ok {
		return v, v != nil, nil
	}
	// Neither this batch nor a committed one wrote it since the cache
	// was last reset: what the reader has is what the database has.
	v, ok, err := getRecord(r, key)
	if err != nil {
		return nil, false, err
	}
	if len(c.committed) >= c.max {
		c.clearCommitted()
	}
	c.store(string(key), v) // nil when absent
	return v, ok, nil
}

// store puts key's committed value (nil: absent) in committed.
func (c *recordCache) store(key string, v []byte) {
	if _, known := c.committed[key]; !known && key[0] == prefixLane {
		p := key[:len(key)-4]
		c.lanes[p] = append(c.lanes[p], key)
	}
	c.committed[key] = v
}

func (c *recordCache) clearCommitted() {
	clear(c.committed)
	clear(c.lanes)
}

// set records a write of key: val, or a deletion when val is nil. It
// copies val.
func (c *recordCache) set(key, val []byte) {
	if val != nil {
		val = bytes.Clone(val)
	}
	k := string(key) // one copy for both
	c.last[k] = len(c.pending)
	c.pending = append(c.pending, recordWrite{key: k, val: val})
}

// dropLanes records the deletion of every lane under prefix.
func (c *recordCache) dropLanes(prefix []byte) {
	p := string(prefix)
	c.dropped[p] = len(c.pending)
	c.pending = append(c.pending, recordWrite{key: p, drop: true})
}

// deferred reports whether writes of records with this key prefix wait in
// pending until the batch is committed (flush) instead of going into it
// as they are made: a session's record and its lanes' records. Nothing
// reads them through Pebble while a batch is built (the cache answers
// every read of them, and a drop of a client's lanes deletes what Pebble
// holds while flush leaves out the pending writes the drop overtook), so
// they can wait.
//
// Why: Pebble inserts a batch's keys into the memtable's skiplist in the
// batch's order, and starts each search from where the last insert
// left off only when the new key falls right after it. A CommitBatch
// entry wrote each commit's state key and then its lane's record, so
// that every insert jumped between the two key ranges and searched from
// the top of the skiplist, through nodes out of the CPU's cache. Written
// after the state keys, in key order, the lanes of one client are found
// along nearly the same path one after another, and the state keys, no
// longer interleaved, follow one another when the commits' keys do: the
// skiplist's search went from 14.6% to 7.3% of the daemon's CPU under 64
// clients of single commits (BENCHMARKS.md).
func deferred(prefix byte) bool {
	return prefix == prefixLane || prefix == prefixSession
}

// flush writes the pending writes of deferred records into b, in key
// order: the latest write of each key that no later drop of its
// client's lanes overtook. It changes nothing in the cache; commit
// follows once b is committed.
func (c *recordCache) flush(b *pebble.Batch) error {
	c.flushing = c.flushing[:0]
	for i, w := range c.pending {
		if w.drop || !deferred(w.key[0]) || c.last[w.key] != i {
			continue
		}
		if w.key[0] == prefixLane {
			if d, ok := c.dropped[w.key[:len(w.key)-4]]; ok && d > i {
				continue
			}
		}
		c.flushing = append(c.flushing, i)
	}
	slices.SortFunc(c.flushing, func(i, j int) int { return strings.Compare(c.pending[i].key, c.pending[j].key) })
	for _, i := range c.flushing {
		w := &c.pending[i]
		c.kbuf = append(c.kbuf[:0], w.key...)
		var err error
		if w.val == nil {
			err = b.Delete(c.kbuf, nil)
		} else {
			err = b.Set(c.kbuf, w.val, nil)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// mark is how many writes the batch holds.
func (c *recordCache) mark() int {
	return len(c.pending)
}

// cut drops the writes after mark m, as group.cut drops the batch's.
func (c *recordCache) cut(m int) {
	c.aggs.cutWrites()
	if len(c.pending) == m {
		return
	}
	clear(c.pending[m:])
	c.pending = c.pending[:m]
	clear(c.last)
	clear(c.dropped)
	for i, w := range c.pending {
		if w.drop {
			c.dropped[w.key] = i
		} else {
			c.last[w.key] = i
		}
	}
}

// commit moves the pending writes into committed once the batch that
// holds them is committed.
func (c *recordCache) commit() {
	c.aggs.commit()
	c.expiry.commit()
	c.endedExpiry.commit()
	if len(c.pending) == 0 {
		return
	}
	for _, w := range c.pending {
		if !w.drop {
			c.store(w.key, w.val)
			continue
		}
		for _, k := range c.lanes[w.key] {
			delete(c.committed, k)
		}
		delete(c.lanes, w.key)
	}
	if len(c.committed) > c.max {
		c.clearCommitted()
	}
	c.abort()
}

// abort drops the pending writes: their batch was not committed.
func (c *recordCache) abort() {
	c.aggs.abort()
	c.expiry.abort()
	c.endedExpiry.abort()
	clear(c.pending)
	c.pending = c.pending[:0]
	clear(c.last)
	clear(c.dropped)
}

// reset forgets everything: the database was replaced.
func (c *recordCache) reset() {
	c.abort()
	c.aggs.reset()
	c.clearCommitted()
	c.expiry.reset()
	c.endedExpiry.reset()
}
