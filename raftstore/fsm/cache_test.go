package fsm

import (
	"bytes"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/statedhq/stated/raftstore/command"
)

// readThroughCache flushes f's memtable and reads a key from the tables,
// so that the read goes through the block cache, and returns the lookups
// (hits and misses) and size of f's own cache afterwards.
func readThroughCache(t *testing.T, f *FSM) (lookups, size int64) {
	t.Helper()
	if err := f.db.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := readAppliedIndex(f.db); err != nil {
		t.Fatal(err)
	}
	m := f.cache.Metrics()
	return m.Hits + m.Misses, m.Size
}

func TestStateReadsGoThroughTheConfiguredBlockCacheAlsoAfterRestore(t *testing.T) {
	const size = 3 << 20
	f, err := Open(filepath.Join(t.TempDir(), "state"), nil, WithCacheSize(size))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if got := f.CacheMaxSize(); got != size {
		t.Fatalf("CacheMaxSize = %d, want %d", got, size)
	}
	apply(t, f, 1, commitCmd(1, []command.Mutation{{Op: command.OpPut, Namespace: "ns", Key: []byte("k"), Value: []byte("v")}}, nil))
	lookups, cached := readThroughCache(t, f)
	if lookups == 0 || cached == 0 {
		t.Fatalf("a read of a flushed table left the configured cache with %d lookups and %d bytes: the database does not use it", lookups, cached)
	}

	// Restore swaps the database; the new one must use the same cache.
	src := openFSM(t)
	for i, cmd := range randomLog(1, 50) {
		apply(t, src, uint64(i+1), cmd)
	}
	if err := f.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, src)))); err != nil {
		t.Fatal(err)
	}
	m := f.cache.Metrics()
	before := m.Hits + m.Misses
	if after, _ := readThroughCache(t, f); after <= before {
		t.Fatalf("after Restore a read of a flushed table looked up the configured cache %d times (before: %d): the new database does not use it", after, before)
	}
}

func TestOpenRefusesABlockCacheBelowTheMinimum(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	_, err := Open(dir, nil, WithCacheSize(MinCacheSize-1))
	if err == nil || !strings.Contains(err.Error(), "block cache size") {
		t.Fatalf("Open with a cache below the minimum: %v, want a refusal naming the block cache size", err)
	}
}

func TestOpenWithoutACacheSizeUsesTheDefault(t *testing.T) {
	if got := openFSM(t).CacheMaxSize(); got != DefaultCacheSize {
		t.Fatalf("CacheMaxSize = %d, want DefaultCacheSize %d", got, DefaultCacheSize)
	}
}
