package raftstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fiemapUnwritten reports, for each 1 MiB of f's first n bytes, whether
// its blocks are in an unwritten extent (FIEMAP_EXTENT_UNWRITTEN), from
// the FS_IOC_FIEMAP ioctl. ok is false where the filesystem cannot say.
func fiemapUnwritten(t *testing.T, fd uintptr, n int64) (unwritten []bool, ok bool) {
	t.Helper()
	const (
		fsIocFiemap       = 0xC020660B
		fiemapFlagSync    = 0x1
		extentUnwritten   = 0x800
		maxExtents        = 512
		headerSize        = 32
		extentSize        = 56
		extentFlagsOffset = 40
	)
	buf := make([]byte, headerSize+maxExtents*extentSize)
	le := func(b []byte) *uint64 { return (*uint64)(unsafe.Pointer(&b[0])) }
	le32 := func(b []byte) *uint32 { return (*uint32)(unsafe.Pointer(&b[0])) }
	*le(buf[0:]) = 0                     // fm_start
	*le(buf[8:]) = uint64(n)             // fm_length
	*le32(buf[16:]) = fiemapFlagSync     // fm_flags
	*le32(buf[24:]) = uint32(maxExtents) // fm_extent_count
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, fsIocFiemap, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		if errors.Is(errno, unix.ENOTTY) || errors.Is(errno, unix.EOPNOTSUPP) {
			return nil, false
		}
		t.Fatalf("FS_IOC_FIEMAP: %v", errno)
	}
	unwritten = make([]bool, n>>20)
	mapped := int(*le32(buf[20:]))
	for i := range mapped {
		e := buf[headerSize+i*extentSize:]
		logical, length, flags := *le(e[0:]), *le(e[16:]), *le32(e[extentFlagsOffset:])
		for mb := logical >> 20; mb < (logical+length)>>20 && mb < uint64(len(unwritten)); mb++ {
			unwritten[mb] = flags&extentUnwritten != 0
		}
	}
	return unwritten, true
}

// What the zeroer is for: on a filesystem that preallocates into
// unwritten extents (ext4, XFS), the space ahead of the writer is written
// by the time the writer gets there, while the rest of the segment is
// still unwritten.
func TestZeroingFileTurnsTheSpaceAheadIntoWrittenExtents(t *testing.T) {
	const size = 64 << 20
	z := createZeroing(t, t.TempDir(), "seg.wal", size)
	defer z.Close()
	if _, err := z.WriteAt([]byte("frame"), 0); err != nil {
		t.Fatal(err)
	}
	if err := z.Sync(); err != nil {
		t.Fatal(err)
	}
	waitZeroed(t, z, 5+zeroLead)
	unwritten, ok := fiemapUnwritten(t, z.inner.Fd(), size)
	if !ok {
		t.Skip("this filesystem does not report extents (FS_IOC_FIEMAP)")
	}
	if !unwritten[len(unwritten)-1] {
		t.Skip("this filesystem did not preallocate into unwritten extents: nothing to zero ahead")
	}
	for mb := range zeroLead >> 20 {
		if unwritten[mb] {
			t.Errorf("MiB %d, within %d MiB of the write, is still unwritten", mb, zeroLead>>20)
		}
	}
	for mb := zeroLead>>20 + 1; mb < len(unwritten); mb++ {
		if !unwritten[mb] {
			t.Errorf("MiB %d, past the zeroer's lead, is written", mb)
		}
	}
}

// Sync after the first (fdatasync, not raft-wal's fsync) writes the data
// out: the write's page is dirty in the page cache before it and clean
// after it (cachestat(2)). The kernel's own writeback of a dirty page
// waits seconds.
func TestZeroingFileSyncWritesTheDataOut(t *testing.T) {
	z := createZeroing(t, t.TempDir(), "seg.wal", 16<<20)
	defer z.Close()
	if err := z.Sync(); err != nil { // raft-wal's first: fsync and the directory
		t.Fatal(err)
	}
	waitZeroed(t, z, zeroLead)
	// A write at 0 moves the zeroer's target by less than a chunk, so the
	// zeroer's own syncs do not write it out.
	if _, err := z.WriteAt(bytes.Repeat([]byte{0x5A}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	dirty := func() uint64 {
		var st unix.Cachestat_t
		err := unix.Cachestat(uint(z.inner.Fd()), &unix.CachestatRange{Off: 0, Len: 4096}, &st, 0)
		if errors.Is(err, unix.ENOSYS) {
			t.Skip("this kernel has no cachestat(2)")
		}
		if err != nil {
			t.Fatal(err)
		}
		return st.Dirty
	}
	if dirty() == 0 {
		t.Skip("the written page was not dirty before Sync: nothing to check")
	}
	if err := z.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := dirty(); n != 0 {
		t.Fatalf("%d dirty pages left at the write after Sync", n)
	}
}

// openDescriptions returns how many of this process's file descriptors
// are open on path (/proc/self/fd).
func openDescriptions(t *testing.T, path string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && target == path {
			n++
		}
	}
	return n
}

// The zeroer writes and syncs through its own open file description, not
// the writer's. Linux reports a writeback error (EIO) to one fsync of
// each open file description, whichever syncs first (errseq_t, since
// 4.13): had the zeroer's fdatasync met an error on pages of an append
// not yet synced (fdatasync writes out the whole file), the writer's own
// fdatasync would then return success, and raft-wal would acknowledge an
// entry that never reached the disk. With a description of its own, the
// writer's sync reports the error too. The zeroer's description is closed
// once it has zeroed the whole file, and by Close.
func TestZeroingFileZeroesThroughItsOwnFileDescription(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "seg.wal")
	reserved := make(chan struct{}, 1)
	proceed := make(chan struct{})
	testHookZeroerReserved = func(start, end int64) {
		reserved <- struct{}{}
		<-proceed
		testHookZeroerReserved = func(int64, int64) {}
	}
	defer func() { testHookZeroerReserved = func(int64, int64) {} }()
	z := createZeroing(t, dir, "seg.wal", 2*zeroChunk)
	<-reserved // the zeroer is at work
	n := openDescriptions(t, path)
	close(proceed)
	if n != 2 {
		t.Errorf("%d descriptors open on the segment while the zeroer works, want 2: the writer's and the zeroer's own", n)
	}
	waitZeroed(t, z, 2*zeroChunk)
	deadline := time.Now().Add(10 * time.Second)
	for openDescriptions(t, path) != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := openDescriptions(t, path); n != 1 {
		t.Errorf("%d descriptors open on the segment once the zeroer zeroed all of it, want the writer's alone", n)
	}
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	if n := openDescriptions(t, path); n != 0 {
		t.Errorf("%d descriptors open on the segment after Close", n)
	}
}
