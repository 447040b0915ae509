package fsm

import (
	"bytes"
	"hash/maphash"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// aggCache keeps the aggregates of windows (tumbling windows and hopping
// windows' slices) in memory for the apply loop, which reads a window's
// aggregate for every record added to it and writes it back. Read through
// Pebble, that read searched every memtable and level above the one
// holding the window: more than a third of an add's time in the state
// machine at 10⁵ open windows, half at 10⁶ (BENCHMARKS.md). It is what Kafka
// Streams' record cache is to its RocksDB stores, bounded by the
// operator's --window-cache-size.
//
// It holds committed values only: what the database holds for each key
// it knows. The writes of the batch being built are kept apart, in
// dirty, and a read of a key written in the batch is answered from
// dirty, the value the batch holds; one deleted in the batch, or read
// after a cut, goes through the batch, as it did without the cache.
// Once the batch is committed, its writes replace what the cache knew of
// their keys (commit); when a rejected entry's writes were cut from the
// batch, its keys are forgotten instead, which is always safe; a batch
// that is not committed leaves the cache as it was. A range deletion of
// window data (a dropped segment) empties the cache at the commit and
// sends every read of the batch after it through the batch.
//
// Every write of a window's data in the apply loop goes through set or
// forget (windows_apply.go), and a database replaced under the state
// machine resets it, through the record cache that holds it.
//
// Entries live in fixed slots that hold no pointers, so that a cache of
// 10⁶ windows costs the garbage collector nothing to scan; a key and
// value too long for a slot are not cached. Once full, slots are reused
// in turn (FIFO). The index maps a key's hash to its slot; a hit compares
// the whole key, so a hash collision is a miss, never a wrong value.
type aggCache struct {
	// size is the memory it was given, and maxSlots the slots that fit
	// in it (0: the cache is off).
	size     int64
	maxSlots int
	chunks   [][]aggSlot
	used     int // slots handed out, at most maxSlots
	hand     int // the next slot to reuse once used == maxSlots
	index    map[uint64]int32
	seed     maphash.Seed

	// dirty holds this batch's writes of window data: the value written
	// last, or nil for a deletion or a write the cache must forget.
	dirty map[string][]byte
	// cut is set when a rejected entry's writes were cut from the batch:
	// dirty may then hold values the batch no longer has.
	cut bool
	// dropped is set when the batch deleted a range of window data.
	dropped bool

	// stats are read by metrics scrapes, outside the apply loop.
	stats aggCacheStats
}

// aggCacheStats count the cache's reads and size for StorageStats. The
// apply loop writes them; a scrape reads them.
type aggCacheStats struct {
	// hits are reads the cache answered, misses those read from Pebble
	// (every read, with the cache off); a read of a key the batch
	// being built wrote counts in neither.
	hits, misses atomic.Int64
	// entries are the windows it holds; slots those allocated.
	entries, slots atomic.Int64
}

// aggSlotPayload is the most key and value bytes together a slot holds.
// A tumbling window of a 13-byte key in a 6-byte namespace has a 40-byte
// key, and an int sum's aggregate takes 13–30 bytes.
const aggSlotPayload = 78

type aggSlot struct {
	klen, vlen uint8
	b          [aggSlotPayload]byte
}

// aggSlotBytes is a slot's size (unsafe.Sizeof(aggSlot{})), and
// aggIndexBytes what its index entry takes at most (16 bytes and a
// control byte in Go's map, which holds between 7/16 and 7/8 of its slots
// once grown).
const (
	aggSlotBytes  = 2 + aggSlotPayload
	aggIndexBytes = 32
)

// aggSlotCost is what an entry costs at most.
const aggSlotCost = aggSlotBytes + aggIndexBytes

// aggChunkSlots is how many slots are allocated at a time, so that the
// cache grows with the windows it holds, and never copies what it has.
const aggChunkSlots = 1024

// DefaultWindowCacheSize is the memory the window cache may take unless
// WithWindowCacheSize says otherwise: about 1.2 million windows.
const DefaultWindowCacheSize = 128 << 20

func newAggCache(bytes int64) *aggCache {
	return &aggCache{size: bytes, maxSlots: int(bytes / aggSlotCost), index: map[uint64]int32{},
		seed: maphash.MakeSeed(), dirty: map[string][]byte{}}
}

func (c *aggCache) slot(i int32) *aggSlot { return &c.chunks[i/aggChunkSlots][i%aggChunkSlots] }

// lookup returns the slot holding key, if any, with key's hash.
func (c *aggCache) lookup(key []byte) (int32, uint64, bool) {
	h := maphash.Bytes(c.seed, key)
	i, ok := c.index[h]
	if !ok {
		return 0, h, false
	}
	s := c.slot(i)
	return i, h, bytes.Equal(s.b[:s.klen], key)
}

// lookupString is lookup of a key held as a string (dirty's). Bytes and
// String hash the same bytes alike.
func (c *aggCache) lookupString(key string) (int32, uint64, bool) {
	h := maphash.String(c.seed, key)
	i, ok := c.index[h]
	if !ok {
		return 0, h, false
	}
	s := c.slot(i)
	return i, h, string(s.b[:s.klen]) == key
}

// get returns a copy of key's aggregate as the batch being built sees it,
// reading it through r (the batch or the database) when the cache does
// not know it.
func (c *aggCache) get(r pebble.Reader, key []byte) ([]byte, bool, error) {
	if c.maxSlots > 0 && !c.dropped {
		if v, written := c.dirty[string(key)]; written {
			if v != nil && !c.cut {
				// The batch's own write, still in it: the batch
				// would answer the same, through its index.
				return append([]byte(nil), v...), true, nil
			}
			return getRecord(r, key)
		}
		if i, _, ok := c.lookup(key); ok {
			c.stats.hits.Add(1)
			s := c.slot(i)
			return append([]byte(nil), s.b[s.klen:int(s.klen)+int(s.vlen)]...), true, nil
		}
	}
	// The cache is off, the batch deleted a range of windows, or neither
	// the batch nor the cache knows key: what the reader has is what the
	// database has. It is not stored here: the add that reads it writes
	// it, and commit stores that.
	c.stats.misses.Add(1)
	return getRecord(r, key)
}

// set records the batch's write of val (copied) under key.
func (c *aggCache) set(key, val []byte) {
	if c.maxSlots > 0 {
		c.dirty[string(key)] = append([]byte(nil), val...)
	}
}

// forget records a write of key the cache must not keep: a deletion, or
// a value no read goes through the cache for (a session's).
func (c *aggCache) forget(key []byte) {
	if c.maxSlots > 0 {
		c.dirty[string(key)] = nil
	}
}

// dropRange records the batch's deletion of a range of window data.
func (c *aggCache) dropRange() { c.dropped = true }

// cutWrites records that writes were cut from the batch.
func (c *aggCache) cutWrites() { c.cut = true }

// commit applies the batch's writes once the batch is committed.
func (c *aggCache) commit() {
	switch {
	case c.dropped:
		c.clear()
	case c.cut:
		c.forgetDirty()
	default:
		for k, v := range c.dirty {
			if v == nil {
				c.remove(k)
			} else {
				c.store(k, v)
			}
		}
	}
	c.endBatch()
}

// abort drops the batch's writes: its batch was not committed, so what
// the cache holds is still what the database holds.
func (c *aggCache) abort() { c.endBatch() }

func (c *aggCache) forgetDirty() {
	for k := range c.dirty {
		c.remove(k)
	}
}

func (c *aggCache) endBatch() {
	clear(c.dirty)
	c.cut, c.dropped = false, false
}

// reset forgets everything: the database was replaced.
func (c *aggCache) reset() {
	c.endBatch()
	c.clear()
}

func (c *aggCache) clear() {
	clear(c.index)
	c.chunks, c.used, c.hand = nil, 0, 0
	c.stats.entries.Store(0)
	c.stats.slots.Store(0)
}

// store puts key's committed value in the cache, or forgets key when the
// pair does not fit a slot.
func (c *aggCache) store(key string, val []byte) {
	if len(key)+len(val) > aggSlotPayload {
		c.remove(key)
		return
	}
	i, h, ok := c.lookupString(key)
	if !ok {
		if _, taken := c.index[h]; !taken {
			i = c.newSlot()
			c.stats.entries.Add(1)
		}
		// else: another key with the same hash; it gives its slot up.
		c.index[h] = i
	}
	s := c.slot(i)
	s.klen, s.vlen = uint8(len(key)), uint8(len(val))
	copy(s.b[copy(s.b[:], key):], val)
}

// newSlot hands out a free slot, or reuses the oldest once all are used.
func (c *aggCache) newSlot() int32 {
	if c.used < c.maxSlots {
		if c.used%aggChunkSlots == 0 {
			n := min(aggChunkSlots, c.maxSlots-c.used) // the last one only to maxSlots
			c.chunks = append(c.chunks, make([]aggSlot, n))
			c.stats.slots.Add(int64(n))
		}
		c.used++
		return int32(c.used - 1)
	}
	i := int32(c.hand)
	c.hand = (c.hand + 1) % c.maxSlots
	s := c.slot(i)
	if s.klen > 0 {
		h := maphash.Bytes(c.seed, s.b[:s.klen])
		if j, ok := c.index[h]; ok && j == i {
			delete(c.index, h)
			c.stats.entries.Add(-1)
		}
	}
	s.klen, s.vlen = 0, 0
	return i
}

// remove forgets key.
func (c *aggCache) remove(key string) {
	i, h, ok := c.lookupString(key)
	if !ok {
		return
	}
	delete(c.index, h)
	c.stats.entries.Add(-1)
	s := c.slot(i)
	s.klen, s.vlen = 0, 0
}

// memory is what the cache's slots and index take, about.
func (s *aggCacheStats) memory() int64 {
	return s.slots.Load()*aggSlotBytes + s.entries.Load()*aggIndexBytes
}
