package fsm

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/statedhq/stated/raftstore/command"
)

// TestStorageStatsFollowPebbleAcrossARestore writes enough through tiny
// memtables, with writes stopped at the first L0 sublevel, that Pebble
// flushes, compacts and stalls writes; StorageStats must count all three,
// describe the tree, and keep its counters from going back when a Restore
// replaces the database.
func TestStorageStatsFollowPebbleAcrossARestore(t *testing.T) {
	f, err := Open(filepath.Join(t.TempDir(), "state"), nil, func(o *openOptions) {
		o.tune = func(po *pebble.Options) {
			po.MemTableSize = 256 << 10
			po.MemTableStopWritesThreshold = 2
			po.L0CompactionThreshold = 1
			po.L0StopWritesThreshold = 1 // every flush stalls writes until L0 is compacted
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if s := f.StorageStats(); s.FlushesTotal != 0 || s.WriteStallsTotal != 0 || s.DiskBytes == 0 {
		t.Fatalf("a new state: %+v, want no flushes or stalls and some bytes on disk", s)
	}

	value := bytes.Repeat([]byte("v"), 1000)
	const commits, perCommit = 40, 100 // 4 MB: 16 memtables' worth
	var written uint64
	for i := range commits {
		muts := make([]command.Mutation, perCommit)
		for j := range muts {
			muts[j] = command.Mutation{Op: command.OpPut, Namespace: "s", Key: fmt.Appendf(nil, "k%03d-%03d", i, j), Value: value}
			written += uint64(len(value))
		}
		if r := apply(t, f, uint64(i+1), commitCmd(1, muts, nil)); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	s := f.StorageStats()
	if s.WALBytesTotal < written {
		t.Errorf("WAL bytes %d, below the %d value bytes written", s.WALBytesTotal, written)
	}
	if s.FlushesTotal < 2 || s.FlushedBytesTotal == 0 {
		t.Errorf("%d flushes wrote %d bytes; want at least 2 of 16 memtables' worth", s.FlushesTotal, s.FlushedBytesTotal)
	}
	if s.CompactionsTotal == 0 || s.CompactedBytesTotal == 0 {
		t.Errorf("%d compactions wrote %d bytes; L0 compacts at its first table", s.CompactionsTotal, s.CompactedBytesTotal)
	}
	if s.WriteStallsTotal == 0 || s.WriteStallSeconds <= 0 {
		t.Errorf("%d write stalls for %gs; writes stop at the first L0 sublevel", s.WriteStallsTotal, s.WriteStallSeconds)
	}
	var tables, tableBytes int64
	for i := range StorageLevels {
		tables += s.LevelTables[i]
		tableBytes += s.LevelBytes[i]
	}
	if tables == 0 || tableBytes == 0 || s.DiskBytes < uint64(tableBytes) {
		t.Errorf("%d tables of %d bytes, %d bytes on disk", tables, tableBytes, s.DiskBytes)
	}
	if s.ReadAmplification < s.L0Sublevels || s.ReadAmplification == 0 {
		t.Errorf("read amplification %d with %d L0 sublevels", s.ReadAmplification, s.L0Sublevels)
	}
	if s.MemtableBytes == 0 {
		t.Error("no memtable memory reported")
	}

	// A Restore replaces the database: the counters carry on from where
	// they were, the gauges describe the new one.
	g := openFSM(t)
	apply(t, g, 1, commitCmd(1, []command.Mutation{{Op: command.OpPut, Namespace: "s", Key: []byte("only"), Value: value}}, nil))
	if err := f.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, g)))); err != nil {
		t.Fatal(err)
	}
	r := f.StorageStats()
	if r.FlushesTotal < s.FlushesTotal || r.FlushedBytesTotal < s.FlushedBytesTotal ||
		r.CompactionsTotal < s.CompactionsTotal || r.CompactedBytesTotal < s.CompactedBytesTotal ||
		r.WALBytesTotal < s.WALBytesTotal || r.WriteStallsTotal < s.WriteStallsTotal ||
		r.BlockCacheHitsTotal < s.BlockCacheHitsTotal || r.BlockCacheMissesTotal < s.BlockCacheMissesTotal {
		t.Errorf("counters went back across the restore:\nbefore %+v\nafter  %+v", s, r)
	}
	if r.DiskBytes >= s.DiskBytes {
		t.Errorf("disk bytes %d after restoring one entry, %d before: the gauge describes the replaced database", r.DiskBytes, s.DiskBytes)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if z := f.StorageStats(); z != (StorageStats{}) {
		t.Errorf("after Close: %+v, want zero", z)
	}
}

// TestStateTablesAreWrittenIn32KiBBlocks: the state's tables are written
// in blocks of about 32 KiB (PebbleOptions), so that the scans of a
// checkpoint's key count read them in few, large reads.
func TestStateTablesAreWrittenIn32KiBBlocks(t *testing.T) {
	f := openFSM(t)
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range 20 {
		muts := make([]command.Mutation, 1000)
		for j := range muts {
			v := make([]byte, 100) // random: the blocks' size on disk is their size
			for k := range v {
				v[k] = byte(rnd.Uint32())
			}
			muts[j] = command.Mutation{Op: command.OpPut, Namespace: "ns", Key: fmt.Appendf(nil, "k%06d", i*1000+j), Value: v}
		}
		if res := apply(t, f, uint64(i+1), commitCmd(1, muts, nil)); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	if err := f.db.Flush(); err != nil {
		t.Fatal(err)
	}
	levels, err := f.db.SSTables(pebble.WithProperties())
	if err != nil {
		t.Fatal(err)
	}
	var blocks, size uint64
	for _, l := range levels {
		for _, tbl := range l {
			blocks += tbl.Properties.NumDataBlocks
			size += tbl.Properties.DataSize
		}
	}
	if blocks == 0 {
		t.Fatal("no data blocks in the flushed tables")
	}
	// A block ends once past 90% of its target: a table's last block
	// may be smaller, so the mean is taken over more than 8 blocks.
	if mean := size / blocks; blocks < 8 || mean < 24<<10 || mean > 40<<10 {
		t.Fatalf("%d data blocks of %d bytes on average, want about 32 KiB over more than 8", blocks, mean)
	}
}

// TestAFlushedMemtableKeepsItsShareOfTheCache pins what docs/OPERATIONS.md
// ("Memory") and docs/METRICS.md say of the block cache's budget. Pebble
// reserves every memtable in it (each 64 MiB once Pebble has grown them
// from 256 KiB), and keeps a flushed memtable to reuse its memory,
// reservation included. So with the default 256 MiB cache, 128 MiB is
// left for blocks, not 192 MiB, and the memtables' gauge counts both.
func TestAFlushedMemtableKeepsItsShareOfTheCache(t *testing.T) {
	if testing.Short() || modelRace {
		// Under the race detector it takes 47 s and checks Pebble's
		// accounting from one goroutine: nothing for the detector.
		t.Skip("writes and reads 200 MB")
	}
	f := openFSM(t)
	const memtable = 64 << 20
	value := bytes.Repeat([]byte("v"), 1000)
	const commits, perCommit = 200, 1000
	for i := range commits {
		muts := make([]command.Mutation, perCommit)
		for j := range muts {
			muts[j] = command.Mutation{Op: command.OpPut, Namespace: "s", Key: fmt.Appendf(nil, "k%03d-%03d", i, j), Value: value}
		}
		if r := apply(t, f, uint64(i+1), commitCmd(1, muts, nil)); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	if s := f.StorageStats(); s.MemtableBytes != 2*memtable {
		t.Fatalf("memtables after 200 MB and a flush: %d bytes, want %d: the one written and the flushed one kept for reuse", s.MemtableBytes, 2*memtable)
	}
	// Reads of every key fill the cache up to what the two reservations
	// leave (the cache's shards may overshoot it by a little).
	for i := range commits {
		for j := range perCommit {
			if _, ok, err := f.Get("s", fmt.Appendf(nil, "k%03d-%03d", i, j), KindValue, nil, 0); err != nil || !ok {
				t.Fatalf("get k%03d-%03d: %v, %v", i, j, ok, err)
			}
		}
	}
	s := f.StorageStats()
	if free := DefaultCacheSize - int64(s.MemtableBytes); int64(s.BlockCacheBytes) > free*21/20 || int64(s.BlockCacheBytes) < free*19/20 {
		t.Fatalf("the block cache holds %d bytes after reading 200 MB, want close to the %d that the memtables' %d leave of %d", s.BlockCacheBytes, free, s.MemtableBytes, DefaultCacheSize)
	}
}
