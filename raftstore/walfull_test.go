package raftstore

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/types"
)

// fullDisk is raft-wal's file system on a disk with no room to preallocate
// a segment while full is set: Create fails as raft-wal's does when
// fallocate(2) fails, leaving the file it created, empty.
type fullDisk struct {
	types.VFS
	full  atomic.Bool
	tried atomic.Int32
}

func (v *fullDisk) Create(dir, name string, size uint64) (types.WritableFile, error) {
	if !v.full.Load() || size == 0 {
		return v.VFS.Create(dir, name, size)
	}
	defer v.tried.Add(1)
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	f.Close()
	return nil, syscall.ENOSPC
}

// A segment roll on a disk too full to preallocate the next segment still
// rolls: the appends after it are stored once the disk has room, without
// a restart. raft-wal alone gives the roll up, and every append after it
// failed with "segment is sealed" until the node restarted.
func TestTheWALTakesAppendsAgainOnceADiskFullAtARollHasRoom(t *testing.T) {
	dir := t.TempDir()
	disk := &fullDisk{VFS: fs.New()}
	w, err := wal.Open(dir, wal.WithMetaStore(&metadb.BoltMetaDB{}), wal.WithSegmentSize(1<<20), wal.WithSegmentFiler(newReleasingFilerOn(dir, disk)))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	disk.full.Store(true)
	last := appendBatches(t, w, 1, 1) // fills and seals the segment: a roll
	waitFor(t, "the roll's attempt to create the next segment", func() bool { return disk.tried.Load() > 0 })
	disk.full.Store(false)
	for i := last + 1; i <= last+3; i++ {
		if err := w.StoreLogs([]*raft.Log{{Index: i, Term: 1, Type: raft.LogCommand, Data: walEntry(i, 100)}}); err != nil {
			t.Fatalf("append %d once the disk has room again: %v", i, err)
		}
	}
	checkEntries(t, w, 1, last)
}

// The segment created unpreallocated is not zeroed ahead: the zeroer
// would write past the file's end, into a disk that was full.
func TestASegmentCreatedUnpreallocatedIsNotZeroed(t *testing.T) {
	dir := t.TempDir()
	disk := &fullDisk{VFS: fs.New()}
	disk.full.Store(true)
	filer := newReleasingFilerOn(dir, disk)
	f, err := filer.files.Create(dir, "seg.wal", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, ok := f.(*zeroingFile); ok {
		t.Fatal("a segment created unpreallocated is a zeroingFile")
	}
	if fi, err := os.Stat(filepath.Join(dir, "seg.wal")); err != nil || fi.Size() != 0 {
		t.Fatalf("stat: %v, %v; want an empty file", fi, err)
	}
}
