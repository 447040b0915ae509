package raftstore

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft-wal/fs"

	"github.com/statedhq/stated/internal/testenv"
)

// pattern is the byte the zeroing tests write at off: never zero.
func pattern(off int64) byte { return byte(off*31+7) | 1 }

// createZeroing creates name in dir as raft-wal creates a segment of
// size bytes, as a zeroingFile.
func createZeroing(t *testing.T, dir, name string, size int64) *zeroingFile {
	t.Helper()
	f, err := zeroingVFS{fs.New()}.Create(dir, name, uint64(size))
	if err != nil {
		t.Fatal(err)
	}
	z, ok := f.(*zeroingFile)
	if !ok {
		t.Fatalf("Create returned a %T, not a *zeroingFile", f)
	}
	return z
}

// closeAndRead closes z, made in dir as seg.wal, and returns what the
// file holds.
func closeAndRead(t *testing.T, z *zeroingFile, dir string) []byte {
	t.Helper()
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "seg.wal"))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// waitZeroed waits until the zeroer has reached want.
func waitZeroed(t *testing.T, z *zeroingFile, want int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		z.mu.Lock()
		got, busy := z.zeroed, z.reserved >= 0
		z.mu.Unlock()
		if got >= want && !busy {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the zeroer reached %d in 10 s, not %d", got, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// The zeroer writes zeros ahead of the writer and never over what the
// writer wrote: a writer racing it with writes of every size, some
// leaving gaps, some reaching into the range being zeroed, finds every
// byte it wrote, and zeros everywhere else.
func TestZeroingFileKeepsEveryWrite(t *testing.T) {
	seeds := uint64(6)
	if testenv.Race {
		seeds = 2 // each fills 24 MiB byte by byte: 5 s under the race detector
	}
	for seed := range seeds {
		rng := rand.New(rand.NewPCG(seed, 15))
		dir := t.TempDir()
		const size = 24 << 20
		z := createZeroing(t, dir, "seg.wal", size)
		want := make([]byte, size)
		var off int64
		for off < size {
			n := int64(1 + rng.IntN(64<<10))
			switch rng.IntN(10) {
			case 0:
				n = int64(256<<10 + rng.IntN(1<<20)) // into or past the range being zeroed
			case 1:
				off += int64(rng.IntN(2 << 20)) // a gap the writer never writes
			case 2:
				time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond) // let the zeroer get ahead
			}
			n = min(n, size-off)
			if n <= 0 {
				break
			}
			p := make([]byte, n)
			for i := range p {
				p[i] = pattern(off + int64(i))
			}
			if _, err := z.WriteAt(p, off); err != nil {
				t.Fatal(err)
			}
			copy(want[off:], p)
			if rng.IntN(4) == 0 {
				if err := z.Sync(); err != nil {
					t.Fatal(err)
				}
			}
			off += n
		}
		if err := z.Sync(); err != nil {
			t.Fatal(err)
		}
		got := closeAndRead(t, z, dir)
		if len(got) != size {
			t.Fatalf("seed %d: the file has %d bytes, want its preallocated %d", seed, len(got), size)
		}
		if !bytes.Equal(got, want) {
			i := 0
			for got[i] == want[i] {
				i++
			}
			t.Fatalf("seed %d: byte %d is %#x, want %#x", seed, i, got[i], want[i])
		}
	}
}

// The zeroer keeps zeroLead bytes ahead of the furthest write, no more,
// and stops at the file's end.
func TestZeroingFileZeroesAheadOfTheWriter(t *testing.T) {
	const size = 16 << 20
	z := createZeroing(t, t.TempDir(), "seg.wal", size)
	defer z.Close()
	if _, err := z.WriteAt(bytes.Repeat([]byte{1}, 100), 0); err != nil {
		t.Fatal(err)
	}
	waitZeroed(t, z, 100+zeroLead)
	time.Sleep(20 * time.Millisecond)
	z.mu.Lock()
	if z.zeroed != 100+zeroLead {
		t.Errorf("zeroed up to %d after a write of 100 bytes, want %d", z.zeroed, 100+zeroLead)
	}
	z.mu.Unlock()

	if _, err := z.WriteAt(bytes.Repeat([]byte{2}, 100), size-200); err != nil {
		t.Fatal(err)
	}
	waitZeroed(t, z, size)
	z.mu.Lock()
	if z.zeroed != size {
		t.Errorf("zeroed up to %d after a write near the end, want the file's size %d", z.zeroed, size)
	}
	z.mu.Unlock()
}

// Large appends are left to raft-wal: once the writer's appends average
// more than zeroMaxAppend, the zeroer stops going ahead of them.
func TestZeroingFileLeavesLargeAppendsUnzeroed(t *testing.T) {
	const size = 64 << 20
	z := createZeroing(t, t.TempDir(), "seg.wal", size)
	defer z.Close()
	waitZeroed(t, z, zeroLead) // from the start, before any write
	p := make([]byte, 256<<10)
	var off int64
	for off < 16<<20 {
		if _, err := z.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		off += int64(len(p))
		waitZeroed(t, z, 0) // whatever it started, done
	}
	z.mu.Lock()
	zeroed := z.zeroed
	z.mu.Unlock()
	// The first few appends, before the mean passed zeroMaxAppend, may
	// have moved it on by a few chunks; 16 MiB of appends did not.
	if zeroed > zeroLead+4*256<<10+zeroChunk {
		t.Fatalf("zeroed up to %d MiB behind appends of 256 KiB up to %d MiB", zeroed>>20, off>>20)
	}

	// Small appends again: the zeroer goes ahead of them.
	small := make([]byte, 5000)
	for range 64 {
		if _, err := z.WriteAt(small, off); err != nil {
			t.Fatal(err)
		}
		off += int64(len(small))
	}
	waitZeroed(t, z, off+zeroLead)
}

// Close stops the zeroer, even in the middle of its work, and a write
// before Close is in the file after it.
func TestZeroingFileCloseStopsTheZeroer(t *testing.T) {
	dir := t.TempDir()
	z := createZeroing(t, dir, "seg.wal", 64<<20)
	if _, err := z.WriteAt([]byte("first"), 0); err != nil {
		t.Fatal(err)
	}
	if err := z.Sync(); err != nil {
		t.Fatal(err)
	}
	got := closeAndRead(t, z, dir)
	z.mu.Lock()
	running := z.running
	z.mu.Unlock()
	if running {
		t.Fatal("the zeroer still runs after Close")
	}
	if string(got[:5]) != "first" {
		t.Fatalf("read %q after Close; want \"first\"", got[:5])
	}
}

// A write into the range the zeroer has reserved waits until the zeroer
// has written it, and so is never overwritten with zeros. The hook holds
// the zeroer between its reservation and its write while the writer
// writes into the range.
func TestZeroingFileWriteIntoTheRangeBeingZeroed(t *testing.T) {
	reserved := make(chan [2]int64, 1)
	proceed := make(chan struct{})
	testHookZeroerReserved = func(start, end int64) {
		reserved <- [2]int64{start, end}
		<-proceed
		testHookZeroerReserved = func(int64, int64) {}
	}
	defer func() { testHookZeroerReserved = func(int64, int64) {} }()
	dir := t.TempDir()
	z := createZeroing(t, dir, "seg.wal", 8<<20)
	r := <-reserved
	if r != [2]int64{0, zeroChunk} {
		t.Fatalf("the zeroer reserved %v first, want [0 %d]", r, zeroChunk)
	}
	at := int64(zeroChunk / 2)
	p := bytes.Repeat([]byte{0xAB}, 4096)
	wrote := make(chan error, 1)
	go func() {
		_, err := z.WriteAt(p, at)
		wrote <- err
	}()
	select {
	case err := <-wrote:
		t.Fatalf("a write into the range being zeroed returned (%v) before the zeroer wrote it", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(proceed)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	got := closeAndRead(t, z, dir)
	if !bytes.Equal(got[at:at+4096], p) {
		t.Fatalf("the write at %d was zeroed over", at)
	}
}
