package raftstore

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// TestARollCrashAfterACompactionInTheTailKeepsTheLaterEntries: Raft compacted the head
// of the tail segment (MinIndex > BaseIndex), then the append that filled
// the segment crashed before the roll's metadata commit. The log reopens
// with the compacted entries hidden, every later one, and takes appends.
func TestARollCrashAfterACompactionInTheTailKeepsTheLaterEntries(t *testing.T) {
	hlog := hclogAdapter(slog.New(slog.DiscardHandler))
	dir := t.TempDir()
	m := &crashingMeta{BoltMetaDB: &metadb.BoltMetaDB{}}
	w, err := wal.Open(dir, wal.WithMetaStore(m), wal.WithSegmentSize(1<<20), wal.WithSegmentFiler(newReleasingFiler(dir)))
	if err != nil {
		t.Fatal(err)
	}
	var logs []*raft.Log
	for i := uint64(1); i <= 2; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: walEntry(i, 256<<10)})
	}
	if err := w.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := w.DeleteRange(1, 1); err != nil {
		t.Fatal(err)
	}
	m.crash = true
	last := appendBatches(t, w, 3, 1)
	w.Close()

	for round := range 2 {
		ls, err := openWAL(dir, hlog)
		if err != nil {
			t.Fatalf("reopen %d: %v", round, err)
		}
		first, _ := ls.FirstIndex()
		l, _ := ls.LastIndex()
		if first != 2 || l != last {
			ls.Close()
			t.Fatalf("reopen %d: first %d last %d, want 2 and %d", round, first, l, last)
		}
		var e raft.Log
		if err := ls.GetLog(1, &e); err == nil {
			ls.Close()
			t.Fatalf("reopen %d: compacted entry 1 reads back", round)
		}
		for i := uint64(2); i <= last; i++ {
			if err := ls.GetLog(i, &e); err != nil || e.Index != i || !bytes.Equal(e.Data, walEntry(i, 256<<10)) {
				ls.Close()
				t.Fatalf("reopen %d: GetLog(%d) = %d, %v", round, i, e.Index, err)
			}
		}
		last++
		err = ls.StoreLogs([]*raft.Log{{Index: last, Term: 1, Type: raft.LogCommand, Data: walEntry(last, 256<<10)}})
		ls.Close()
		if err != nil {
			t.Fatalf("reopen %d: append: %v", round, err)
		}
	}
}

// TestATornIndexFrameOfASealingAppendIsNotASeal: the append that fills a
// segment writes its entries, the index frame (4 bytes per entry: here
// over 4 KiB, so it spans pages) and the commit frame in one write, and
// the crash keeps the page holding the index frame's header but not the
// page after it (a write's pages reach the disk in any order until the
// fsync). The sealing append was never acknowledged; every entry before
// it was. The log reopens with them and takes appends again, which
// survive the next reopen; it used to refuse every append ("segment is
// sealed") at every restart.
func TestATornIndexFrameOfASealingAppendIsNotASeal(t *testing.T) {
	hlog := hclogAdapter(slog.New(slog.DiscardHandler))
	dir := t.TempDir()
	m := &crashingMeta{BoltMetaDB: &metadb.BoltMetaDB{}}
	w, err := wal.Open(dir, wal.WithMetaStore(m), wal.WithSegmentSize(1<<20), wal.WithSegmentFiler(newReleasingFiler(dir)))
	if err != nil {
		t.Fatal(err)
	}
	small := func(i uint64) *raft.Log {
		return &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: walEntry(i, 900)}
	}
	// Batches of 50 small entries until one seals the segment; the
	// roll's metadata commit is the crash.
	m.crash = true
	var acked uint64
	i := uint64(1)
	for {
		var logs []*raft.Log
		for range 50 {
			logs = append(logs, small(i))
			i++
		}
		if err := w.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
		segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
		b, _ := os.ReadFile(segs[0])
		if hasIndexFrame(b) {
			break
		}
		acked = i - 1
	}
	w.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	idx := indexFrameOffset(b)
	if idx < 0 {
		t.Fatal("no index frame")
	}
	// Keep the page with the index frame's header, lose every later page.
	lost := (idx/4096 + 1) * 4096
	for j := lost; j < len(b); j++ {
		b[j] = 0
	}
	if err := os.WriteFile(segs[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("acknowledged 1..%d; index frame at %d, lost from %d (file %d bytes)", acked, idx, lost, len(b))

	ls, err := openWAL(dir, hlog)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	last, _ := ls.LastIndex()
	if last < acked {
		t.Fatalf("LastIndex %d < acknowledged %d", last, acked)
	}
	for j := uint64(1); j <= acked; j++ {
		var l raft.Log
		if err := ls.GetLog(j, &l); err != nil || !bytes.Equal(l.Data, walEntry(j, 900)) {
			t.Fatalf("GetLog(%d): %v", j, err)
		}
	}
	if err := ls.StoreLogs([]*raft.Log{small(last + 1)}); err != nil {
		ls.Close()
		t.Fatalf("append after a crash that tore the sealing append's index frame: %v", err)
	}
	if err := ls.Close(); err != nil {
		t.Fatal(err)
	}
	ls, err = openWAL(dir, hlog)
	if err != nil {
		t.Fatalf("reopen after the append: %v", err)
	}
	defer ls.Close()
	var l raft.Log
	if err := ls.GetLog(last+1, &l); err != nil || !bytes.Equal(l.Data, walEntry(last+1, 900)) {
		t.Fatalf("the append after the torn seal, reopened: GetLog(%d) = %v", last+1, err)
	}
}

// frames walks a segment's frames: type and offset of each.
func frames(b []byte, fn func(typ byte, off int) bool) {
	off := 32
	for off+8 <= len(b) {
		typ := b[off]
		if typ == 0 {
			return
		}
		n := int(b[off+4]) | int(b[off+5])<<8 | int(b[off+6])<<16 | int(b[off+7])<<24
		if !fn(typ, off) {
			return
		}
		if typ == 3 {
			n = 0
		}
		off += 8 + (n+7)&^7
	}
}

func indexFrameOffset(b []byte) int {
	at := -1
	frames(b, func(typ byte, off int) bool {
		if typ == 2 {
			at = off
			return false
		}
		return true
	})
	return at
}

func hasIndexFrame(b []byte) bool { return indexFrameOffset(b) >= 0 }
