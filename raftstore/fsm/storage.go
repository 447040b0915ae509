package fsm

import (
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// StorageLevels is the number of levels of Pebble's LSM tree.
const StorageLevels = 7

// StorageStats is what the state's Pebble database reports about itself:
// its memory and disk, the shape of its LSM tree, and the work its flushes
// and compactions did. The counters (…Total) count from the FSM's Open and
// carry over a Restore, which replaces the database; the gauges describe
// the database in use.
type StorageStats struct {
	// DiskBytes is what the state takes on disk: tables, WAL, and
	// obsolete files not yet deleted (DiskSize).
	DiskBytes uint64
	// BlockCacheBytes is the block cache's content, and
	// BlockCacheHitsTotal and BlockCacheMissesTotal its lookups (the
	// cache outlives a Restore, so these count from Open as they are).
	BlockCacheBytes                            int64
	BlockCacheHitsTotal, BlockCacheMissesTotal int64
	// MemtableBytes is the memtables' memory: the one being written,
	// those waiting to be flushed, and flushed ones still read by an
	// iterator or snapshot.
	MemtableBytes uint64
	// LevelTables and LevelBytes are each level's tables and their size.
	LevelTables [StorageLevels]int64
	LevelBytes  [StorageLevels]int64
	// L0Sublevels is how many overlapping sublevels L0 holds: a point
	// read may look in each, and writes stall at 24.
	L0Sublevels int
	// ReadAmplification is the tables a point read may have to look in:
	// L0's sublevels plus the other non-empty levels.
	ReadAmplification int
	// CompactionDebtBytes is Pebble's estimate of what compactions must
	// still rewrite to bring the tree back into shape.
	CompactionDebtBytes uint64
	// FlushesTotal and FlushedBytesTotal are the memtable flushes and the
	// table bytes they wrote.
	FlushesTotal      int64
	FlushedBytesTotal uint64
	// CompactionsTotal and CompactedBytesTotal are the compactions and
	// the table bytes they wrote.
	CompactionsTotal    int64
	CompactedBytesTotal uint64
	// WALBytesTotal is what the state's writes put into its WAL: with
	// FlushedBytesTotal and CompactedBytesTotal, the write amplification.
	WALBytesTotal uint64
	// WriteStallsTotal and WriteStallSeconds are the times Pebble held
	// writes back (too many memtables waiting to be flushed, or L0 too
	// deep for compactions to keep up) and how long they waited.
	WriteStallsTotal  int64
	WriteStallSeconds float64
	// WindowCacheEntries are the open windows whose aggregates the window
	// cache holds, and WindowCacheBytes about the memory it takes (its
	// slots and index, at most --window-cache-size);
	// WindowCacheHitsTotal and WindowCacheMissesTotal are the apply
	// loop's reads of window aggregates it answered and those read from
	// Pebble (a window written in the batch being built counts in
	// neither). They count from Open, across a Restore.
	WindowCacheEntries, WindowCacheBytes         int64
	WindowCacheHitsTotal, WindowCacheMissesTotal int64
}

// storageCounters are the counters of the databases a Restore replaced,
// and the write stalls of every database the FSM opened.
type storageCounters struct {
	mu                      sync.Mutex
	flushes, compacts       int64
	flushed, compacted, wal uint64
	stalls                  int64
	stalled                 time.Duration
	stallStart              time.Time
}

// retire adds the counters of db, about to be closed for good, to the
// running totals.
func (c *storageCounters) retire(db *pebble.DB) {
	m := db.Metrics()
	flushed, compacted := tableBytesWritten(m)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.flushes += m.Flush.Count
	c.compacts += m.Compact.Count
	c.flushed += flushed
	c.compacted += compacted
	c.wal += m.WAL.BytesIn
}

// tableBytesWritten is what m's flushes and compactions wrote into tables.
// (Metrics.Total's TableBytesFlushed adds the WAL's bytes in.)
func tableBytesWritten(m *pebble.Metrics) (flushed, compacted uint64) {
	for i := range m.Levels {
		flushed += m.Levels[i].TableBytesFlushed
		compacted += m.Levels[i].TableBytesCompacted
	}
	return flushed, compacted
}

// listener counts write stalls. Pebble calls WriteStallBegin and
// WriteStallEnd in pairs, from under its commit mutex.
func (c *storageCounters) listener() *pebble.EventListener {
	return &pebble.EventListener{
		WriteStallBegin: func(pebble.WriteStallBeginInfo) {
			c.mu.Lock()
			c.stalls++
			c.stallStart = time.Now()
			c.mu.Unlock()
		},
		WriteStallEnd: func() {
			c.mu.Lock()
			if !c.stallStart.IsZero() {
				c.stalled += time.Since(c.stallStart)
				c.stallStart = time.Time{}
			}
			c.mu.Unlock()
		},
	}
}

// StorageStats reports the state's Pebble database; the zero value once
// the FSM is closed.
func (f *FSM) StorageStats() StorageStats {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return StorageStats{}
	}
	m := f.db.Metrics()
	flushed, compacted := tableBytesWritten(m)
	s := StorageStats{
		BlockCacheHitsTotal:   m.BlockCache.Hits,
		BlockCacheMissesTotal: m.BlockCache.Misses,
		DiskBytes:             m.DiskSpaceUsage(),
		BlockCacheBytes:       m.BlockCache.Size,
		MemtableBytes:         m.MemTable.Size + m.MemTable.ZombieSize,
		L0Sublevels:           int(m.Levels[0].Sublevels),
		ReadAmplification:     m.ReadAmp(),
		CompactionDebtBytes:   m.Compact.EstimatedDebt,
	}
	for i := range StorageLevels {
		s.LevelTables[i] = m.Levels[i].TablesCount
		s.LevelBytes[i] = m.Levels[i].TablesSize
	}
	c := &f.storage
	c.mu.Lock()
	defer c.mu.Unlock()
	s.FlushesTotal = c.flushes + m.Flush.Count
	s.FlushedBytesTotal = c.flushed + flushed
	s.CompactionsTotal = c.compacts + m.Compact.Count
	s.CompactedBytesTotal = c.compacted + compacted
	s.WALBytesTotal = c.wal + m.WAL.BytesIn
	s.WriteStallsTotal = c.stalls
	stalled := c.stalled
	if !c.stallStart.IsZero() {
		stalled += time.Since(c.stallStart)
	}
	s.WriteStallSeconds = stalled.Seconds()
	w := &f.records.aggs.stats
	s.WindowCacheEntries, s.WindowCacheBytes = w.entries.Load(), w.memory()
	s.WindowCacheHitsTotal, s.WindowCacheMissesTotal = w.hits.Load(), w.misses.Load()
	return s
}
