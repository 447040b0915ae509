// Package smalldisk gives tests a disk that fills: a small tmpfs mounted
// for the test, and a filler file that takes its free space.
package smalldisk

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// Mount mounts a tmpfs of sizeMB MiB and unmounts it (lazily: a database
// a start gave up on may still hold files) when the test ends. It skips
// the test where mounting is not allowed (not root, or no tmpfs).
func Mount(t testing.TB, sizeMB int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: mounting a small tmpfs to fill needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm", sizeMB), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("skipped: cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// WaitSettled waits until the free space of the disk at dir stops
// changing (a Raft log's segment takes and gives back space for a moment
// after a start), for up to 10 s.
func WaitSettled(t testing.TB, dir string) {
	t.Helper()
	for prev, deadline := Free(t, dir), time.Now().Add(10*time.Second); ; prev = Free(t, dir) {
		time.Sleep(500 * time.Millisecond)
		if Free(t, dir) == prev {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the disk's free space still changing after 10 s")
		}
	}
}

// Free is the free space of the disk at dir, in bytes.
func Free(t testing.TB, dir string) uint64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Bavail * uint64(st.Bsize)
}

// Fill writes the file filler until its disk is full, then gives slack
// bytes back; it returns the bytes the filler kept.
func Fill(t testing.TB, filler string, slack int64) int64 {
	t.Helper()
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		w, err := f.Write(buf)
		n += int64(w)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if slack > 0 {
		n = max(n-slack, 0)
		if err := f.Truncate(n); err != nil {
			t.Fatal(err)
		}
	}
	return n
}
