package raftstore

import (
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/types"
)

// heldDeletes is raft-wal's file system, except that Delete names the
// file on entered, then waits until release is closed.
type heldDeletes struct {
	types.VFS
	entered chan string
	release chan struct{}
	once    sync.Once
}

// free lets every removal, held or to come, go on.
func (v *heldDeletes) free() { v.once.Do(func() { close(v.release) }) }

func newHeldDeletes() *heldDeletes {
	return &heldDeletes{VFS: fs.New(), entered: make(chan string, 64), release: make(chan struct{})}
}

func (v *heldDeletes) Delete(dir, name string) error {
	v.entered <- name
	<-v.release
	return v.VFS.Delete(dir, name)
}

// openHeldWAL opens a raft-wal log in dir with 1 MiB segments through the
// releasing filer on v, and appends 24 entries of 256 KiB (about six
// segments).
func openHeldWAL(t *testing.T, dir string, v *heldDeletes) (*wal.WAL, *releasingFiler) {
	t.Helper()
	filer := newReleasingFilerOn(dir, v)
	w, err := wal.Open(dir, wal.WithMetaStore(&metadb.BoltMetaDB{}), wal.WithSegmentSize(1<<20), wal.WithSegmentFiler(filer))
	if err != nil {
		t.Fatal(err)
	}
	appendBatches(t, w, 1, 6)
	return w, filer
}

// dropHead runs Raft's log compaction of entries 1-12 and fails the test
// if it waits for the removal of a dropped segment's file. It returns
// the name of the first file whose removal started.
func dropHead(t *testing.T, w *wal.WAL, v *heldDeletes) string {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- w.DeleteRange(1, 12) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		v.free()
		t.Fatal("the log's compaction still waits after 30s for the removal of a dropped segment's file")
	}
	select {
	case name := <-v.entered:
		return name
	case <-time.After(30 * time.Second):
		t.Fatal("no dropped segment's file was being removed 30s after the compaction")
		return ""
	}
}

// TestDroppedSegmentsAreRemovedOffTheLogsWriteLock: raft-wal removes a
// dropped segment's file under its write lock, and a compaction drops
// several at once. With the releasing filer the compaction returns, and
// appends go on, while a removal is held; once it is let go, wait
// returns after every dropped file is gone, and the log reads exactly
// the entries it kept.
func TestDroppedSegmentsAreRemovedOffTheLogsWriteLock(t *testing.T) {
	dir := t.TempDir()
	v := newHeldDeletes()
	w, filer := openHeldWAL(t, dir, v)
	defer w.Close()
	first := dropHead(t, w, v)

	appended := make(chan uint64, 1)
	go func() {
		var logs []*raft.Log
		for i := uint64(25); i <= 28; i++ {
			logs = append(logs, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: walEntry(i, 256<<10)})
		}
		if err := w.StoreLogs(logs); err != nil {
			t.Error(err)
		}
		appended <- 28
	}()
	var last uint64
	select {
	case last = <-appended:
	case <-time.After(30 * time.Second):
		v.free()
		t.Fatal("an append still waits after 30s for the removal of a dropped segment's file")
	}
	if _, err := os.Stat(filepath.Join(dir, first)); err != nil {
		t.Fatalf("the held removal's file: %v; want it still there", err)
	}

	v.free()
	filer.wait()
	removed := []string{first}
	for len(v.entered) > 0 {
		removed = append(removed, <-v.entered)
	}
	for _, name := range removed {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("dropped segment %s after wait: %v; want it removed", name, err)
		}
	}
	if first, _ := w.FirstIndex(); first != 13 {
		t.Fatalf("FirstIndex = %d, want 13", first)
	}
	checkEntries(t, w, 13, last)
}

// TestASegmentLeftByAStopBeforeItsRemovalGoesAtTheNextOpen: the process
// stops while a dropped segment's file waits for its removal (here the
// log is closed without waiting; a SIGKILL leaves the same files). The
// next open removes it, as raft-wal removes every segment file its
// metadata does not name, and walStore.Close returns once it is gone;
// the log reads the entries it kept and takes appends.
func TestASegmentLeftByAStopBeforeItsRemovalGoesAtTheNextOpen(t *testing.T) {
	dir := t.TempDir()
	v := newHeldDeletes()
	defer v.free() // the held removal then finds its file gone
	w, _ := openHeldWAL(t, dir, v)
	left := dropHead(t, w, v)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, left)); err != nil {
		t.Fatalf("the held removal's file: %v; want it still there", err)
	}

	ls, err := openWAL(dir, hclogAdapter(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if first, _ := ls.FirstIndex(); first != 13 {
		t.Errorf("FirstIndex after reopening = %d, want 13", first)
	}
	checkEntries(t, ls.WAL, 13, 24)
	if err := ls.StoreLogs([]*raft.Log{{Index: 25, Term: 1, Type: raft.LogCommand, Data: walEntry(25, 256<<10)}}); err != nil {
		t.Fatal(err)
	}
	if err := ls.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, left)); !os.IsNotExist(err) {
		t.Fatalf("the file left by the stop after the next open's Close: %v; want it removed", err)
	}
}
