package raftstore

import (
	"errors"
	"testing"
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
