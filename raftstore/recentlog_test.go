package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// readCounter is a real log store that counts the GetLog calls that reach
// it.
type readCounter struct {
	logStore
	reads atomic.Int64
}

func (c *readCounter) GetLog(index uint64, l *raft.Log) error {
	c.reads.Add(1)
	return c.logStore.GetLog(index, l)
}

func openRecentWAL(t *testing.T) (*recentLog, *readCounter) {
	t.Helper()
	w, err := openWAL(filepath.Join(t.TempDir(), "wal"), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	c := &readCounter{logStore: w}
	return newRecentLog(c), c
}

func entry(index uint64, data string) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: []byte(data)}
}

func entries(from, to uint64, size int, tag string) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		d := fmt.Sprintf("%s-%d-", tag, i)
		out = append(out, entry(i, d+string(bytes.Repeat([]byte{'x'}, max(size-len(d), 0)))))
	}
	return out
}

// wantLog reads index through r and checks its data, and whether the read
// reached the store.
func wantLog(t *testing.T, r *recentLog, c *readCounter, index uint64, data string, fromStore bool) {
	t.Helper()
	before := c.reads.Load()
	var l raft.Log
	if err := r.GetLog(index, &l); err != nil {
		t.Fatalf("GetLog(%d): %v", index, err)
	}
	if string(l.Data) != data || l.Index != index {
		t.Fatalf("GetLog(%d) = index %d, %.20q, want %.20q", index, l.Index, l.Data, data)
	}
	if got := c.reads.Load() > before; got != fromStore {
		t.Fatalf("GetLog(%d) read the store: %v, want %v", index, got, fromStore)
	}
}

func TestRecentLogAnswersTheNewestEntriesFromMemory(t *testing.T) {
	r, c := openRecentWAL(t)
	logs := entries(1, 100, 100, "a")
	if err := r.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 100; i++ {
		wantLog(t, r, c, i, string(logs[i-1].Data), false)
	}
	if err := r.StoreLog(entry(101, "b")); err != nil {
		t.Fatal(err)
	}
	wantLog(t, r, c, 101, "b", false)
	// Beyond what it holds: the store answers, as without it.
	var l raft.Log
	if err := r.GetLog(102, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(102) past the last entry: %v, want ErrLogNotFound", err)
	}
}

func TestRecentLogKeepsOnlyTheNewestWithinItsBounds(t *testing.T) {
	r, c := openRecentWAL(t)
	// 100 KiB entries: 8 MiB holds 81 of them with their overhead.
	logs := entries(1, 200, 100<<10, "a")
	for _, l := range logs {
		if err := r.StoreLogs([]*raft.Log{l}); err != nil {
			t.Fatal(err)
		}
	}
	if r.bytes > recentLogBytes {
		t.Fatalf("holds %d bytes, bound %d", r.bytes, recentLogBytes)
	}
	held := r.hi - r.lo + 1
	if r.hi != 200 || held < 70 || held > 81 {
		t.Fatalf("holds [%d, %d], want the newest 70-81 ending at 200", r.lo, r.hi)
	}
	wantLog(t, r, c, 200, string(logs[199].Data), false)
	wantLog(t, r, c, r.lo, string(logs[r.lo-1].Data), false)
	wantLog(t, r, c, r.lo-1, string(logs[r.lo-2].Data), true)
	wantLog(t, r, c, 1, string(logs[0].Data), true)

	// More entries than slots, each small: the newest recentLogEntries.
	small := entries(201, 201+2*recentLogEntries, 10, "s")
	if err := r.StoreLogs(small); err != nil {
		t.Fatal(err)
	}
	last := uint64(201 + 2*recentLogEntries)
	if r.hi != last || r.hi-r.lo+1 != recentLogEntries {
		t.Fatalf("holds [%d, %d], want the newest %d ending at %d", r.lo, r.hi, recentLogEntries, last)
	}
	wantLog(t, r, c, r.lo, string(small[r.lo-201].Data), false)
	wantLog(t, r, c, r.lo-1, string(small[r.lo-202].Data), true)

	// An entry larger than the bound is not held, and nothing before it
	// is answered from memory as if it were contiguous.
	big := entry(last+1, string(bytes.Repeat([]byte{'b'}, recentLogBytes)))
	if err := r.StoreLog(big); err != nil {
		t.Fatal(err)
	}
	if r.hi >= r.lo || r.bytes != 0 {
		t.Fatalf("after an entry past the bound: holds [%d, %d], %d bytes; want nothing", r.lo, r.hi, r.bytes)
	}
	wantLog(t, r, c, last+1, string(big.Data), true)
	if err := r.StoreLog(entry(last+2, "after")); err != nil {
		t.Fatal(err)
	}
	wantLog(t, r, c, last+2, "after", false)
	wantLog(t, r, c, last, string(small[len(small)-1].Data), true)
}

// Raft deletes a head after a snapshot and a tail when a follower's log
// conflicts with the leader's; neither may be answered from memory after.
func TestRecentLogForgetsWhatTheStoreDeletes(t *testing.T) {
	r, c := openRecentWAL(t)
	if err := r.StoreLogs(entries(1, 50, 100, "a")); err != nil {
		t.Fatal(err)
	}
	// The head: Raft's log compaction.
	if err := r.DeleteRange(1, 20); err != nil {
		t.Fatal(err)
	}
	for _, i := range []uint64{1, 20} {
		var l raft.Log
		if err := r.GetLog(i, &l); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("GetLog(%d) after the head up to 20 was deleted: %v, want ErrLogNotFound", i, err)
		}
	}
	wantLog(t, r, c, 21, string(entries(21, 21, 100, "a")[0].Data), false)

	// The tail: a follower's conflicting entries, stored again with the
	// leader's.
	if err := r.DeleteRange(41, 50); err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	if err := r.GetLog(45, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(45) after the tail from 41 was deleted: %v, want ErrLogNotFound", err)
	}
	wantLog(t, r, c, 40, string(entries(40, 40, 100, "a")[0].Data), false)
	again := entries(41, 60, 100, "leader")
	if err := r.StoreLogs(again); err != nil {
		t.Fatal(err)
	}
	for i := uint64(41); i <= 60; i++ {
		wantLog(t, r, c, i, string(again[i-41].Data), false)
	}

	// Everything (a snapshot installed): nothing is left to answer.
	if err := r.DeleteRange(21, 60); err != nil {
		t.Fatal(err)
	}
	if r.hi >= r.lo || r.bytes != 0 {
		t.Fatalf("after deleting every entry: holds [%d, %d], %d bytes", r.lo, r.hi, r.bytes)
	}
	if err := r.GetLog(60, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(60) after the whole log was deleted: %v, want ErrLogNotFound", err)
	}
	// A log that starts again after the snapshot's index.
	if err := r.StoreLogs(entries(101, 110, 100, "n")); err != nil {
		t.Fatal(err)
	}
	wantLog(t, r, c, 101, string(entries(101, 101, 100, "n")[0].Data), false)
}

// A store that refuses the entries: none of them is answered from memory.
func TestRecentLogHoldsNothingTheStoreRefused(t *testing.T) {
	r, c := openRecentWAL(t)
	if err := r.StoreLogs(entries(1, 5, 10, "a")); err != nil {
		t.Fatal(err)
	}
	// raft-wal refuses an entry that is not the next one.
	if err := r.StoreLogs(entries(7, 8, 10, "gap")); err == nil {
		t.Fatal("StoreLogs with a gap: no error")
	}
	var l raft.Log
	if err := r.GetLog(7, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(7) of a refused entry: %v, want ErrLogNotFound", err)
	}
	wantLog(t, r, c, 5, string(entries(5, 5, 10, "a")[0].Data), false)
}

func TestRecentLogSaysWhetherItsStoreIsMonotonic(t *testing.T) {
	w, err := openWAL(filepath.Join(t.TempDir(), "wal"), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// Raft deletes the whole log when it installs a snapshot only into a
	// monotonic store.
	if !newRecentLog(w).IsMonotonic() {
		t.Fatal("over raft-wal: not monotonic")
	}
	b, err := raftboltdb.NewBoltStore(filepath.Join(t.TempDir(), "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if newRecentLog(b).IsMonotonic() {
		t.Fatal("over bbolt: monotonic")
	}
}

// Raft stores from its main goroutine while replication reads and the
// snapshot's compaction deletes the head: every read sees the store's
// entry or ErrLogNotFound for a deleted one, never another entry.
func TestRecentLogUnderConcurrentStoresReadsAndCompactions(t *testing.T) {
	r, _ := openRecentWAL(t)
	const last = 3000
	var stored atomic.Uint64
	var finished atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	wg.Go(func() {
		defer finished.Store(true)
		for i := uint64(1); i <= last; i += 10 {
			if err := r.StoreLogs(entries(i, i+9, 200, "c")); err != nil {
				errs <- err
				return
			}
			stored.Store(i + 9)
		}
	})
	wg.Go(func() { // the snapshot's compaction
		var done uint64
		for done < last-500 && !finished.Load() {
			if s := stored.Load(); s > done+300 {
				if err := r.DeleteRange(done+1, s-200); err != nil {
					errs <- err
					return
				}
				done = s - 200
			}
		}
	})
	wg.Go(func() { // replication
		for n := 0; !finished.Load(); n++ {
			i := stored.Load() - uint64(n%400)
			if i == 0 || i > last {
				continue
			}
			var l raft.Log
			err := r.GetLog(i, &l)
			if errors.Is(err, raft.ErrLogNotFound) {
				continue
			}
			want := string(entries(i, i, 200, "c")[0].Data)
			if err != nil || l.Index != i || string(l.Data) != want {
				errs <- fmt.Errorf("GetLog(%d) = index %d, %.12q, %v", i, l.Index, l.Data, err)
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
