package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/statedhq/stated/raftstore/fsm"
)

// Storage is what the storage collector reads; *raftstore.Store
// satisfies it.
type Storage interface {
	// StorageStats reports the state's Pebble database; cheap.
	StorageStats() fsm.StorageStats
}

// StorageCollector reports the state's Pebble database, read at scrape
// time: its memory and disk, the shape of its LSM tree, and what its
// flushes and compactions wrote.
type StorageCollector struct {
	s Storage

	disk, cacheBytes, cacheHits, cacheMisses, memtables *prometheus.Desc
	levelTables, levelBytes, sublevels, readAmp, debt   *prometheus.Desc
	flushes, flushed, compactions, compacted, wal       *prometheus.Desc
	stalls, stalled                                     *prometheus.Desc
	winEntries, winBytes, winHits, winMisses            *prometheus.Desc
}

// NewStorageCollector returns a collector over s.
func NewStorageCollector(s Storage) *StorageCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &StorageCollector{s: s,
		disk:        d("stated_pebble_disk_bytes", "Bytes the state's Pebble database takes on disk: tables, WAL, and obsolete files not yet deleted."),
		cacheBytes:  d("stated_pebble_block_cache_bytes", "Bytes held in the block cache: at most --cache-size less the memtables, which Pebble reserves in the same budget."),
		cacheHits:   d("stated_pebble_block_cache_hits_total", "Block cache lookups that found the block."),
		cacheMisses: d("stated_pebble_block_cache_misses_total", "Block cache lookups that read the block from disk."),
		memtables:   d("stated_pebble_memtable_bytes", "Memory of the memtables: the one being written, those waiting to be flushed, flushed ones still read, and one flushed memtable kept to reuse its memory."),
		levelTables: d("stated_pebble_level_tables", "Tables in a level of the LSM tree.", "level"),
		levelBytes:  d("stated_pebble_level_bytes", "Bytes of the tables in a level of the LSM tree.", "level"),
		sublevels:   d("stated_pebble_l0_sublevels", "Overlapping sublevels in L0; writes stall at 24."),
		readAmp:     d("stated_pebble_read_amplification", "Tables a point read may look in: L0's sublevels plus the other non-empty levels."),
		debt:        d("stated_pebble_compaction_debt_bytes", "Pebble's estimate of the bytes compactions must still rewrite to bring the LSM tree into shape."),
		flushes:     d("stated_pebble_flushes_total", "Memtable flushes."),
		flushed:     d("stated_pebble_flushed_bytes_total", "Table bytes written by memtable flushes."),
		compactions: d("stated_pebble_compactions_total", "Compactions."),
		compacted:   d("stated_pebble_compacted_bytes_total", "Table bytes written by compactions."),
		wal:         d("stated_pebble_wal_bytes_total", "Bytes the state's writes put into Pebble's WAL."),
		stalls:      d("stated_pebble_write_stalls_total", "Times Pebble held the state's writes back: too many memtables waiting to be flushed, or L0 too deep for compactions to keep up."),
		stalled:     d("stated_pebble_write_stall_seconds_total", "Time the state's writes were held back by write stalls."),
		winEntries:  d("stated_window_cache_entries", "Open windows whose aggregates the window cache holds."),
		winBytes:    d("stated_window_cache_bytes", "Memory the window cache takes, about: its slots and index, at most --window-cache-size."),
		winHits:     d("stated_window_cache_hits_total", "Reads of a window's aggregate, as a record is added to it, that the window cache answered."),
		winMisses:   d("stated_window_cache_misses_total", "Reads of a window's aggregate that the window cache did not hold, read from the state's Pebble."),
	}
}

// Describe implements prometheus.Collector.
func (c *StorageCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.disk, c.cacheBytes, c.cacheHits, c.cacheMisses, c.memtables,
		c.levelTables, c.levelBytes, c.sublevels, c.readAmp, c.debt,
		c.flushes, c.flushed, c.compactions, c.compacted, c.wal, c.stalls, c.stalled,
		c.winEntries, c.winBytes, c.winHits, c.winMisses} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *StorageCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s.StorageStats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(c.disk, float64(s.DiskBytes))
	gauge(c.cacheBytes, float64(s.BlockCacheBytes))
	counter(c.cacheHits, float64(s.BlockCacheHitsTotal))
	counter(c.cacheMisses, float64(s.BlockCacheMissesTotal))
	gauge(c.memtables, float64(s.MemtableBytes))
	for i := range fsm.StorageLevels {
		l := strconv.Itoa(i)
		gauge(c.levelTables, float64(s.LevelTables[i]), l)
		gauge(c.levelBytes, float64(s.LevelBytes[i]), l)
	}
	gauge(c.sublevels, float64(s.L0Sublevels))
	gauge(c.readAmp, float64(s.ReadAmplification))
	gauge(c.debt, float64(s.CompactionDebtBytes))
	counter(c.flushes, float64(s.FlushesTotal))
	counter(c.flushed, float64(s.FlushedBytesTotal))
	counter(c.compactions, float64(s.CompactionsTotal))
	counter(c.compacted, float64(s.CompactedBytesTotal))
	counter(c.wal, float64(s.WALBytesTotal))
	counter(c.stalls, float64(s.WriteStallsTotal))
	counter(c.stalled, s.WriteStallSeconds)
	gauge(c.winEntries, float64(s.WindowCacheEntries))
	gauge(c.winBytes, float64(s.WindowCacheBytes))
	counter(c.winHits, float64(s.WindowCacheHitsTotal))
	counter(c.winMisses, float64(s.WindowCacheMissesTotal))
}
