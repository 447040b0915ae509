package bench

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// syncData writes f's data out with fdatasync(2), as the Raft log's
// zeroed segments are synced.
func syncData(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

// processCPU returns the CPU time, user and system, that the process pid
// has used, all its threads together: utime and stime of /proc/PID/stat,
// in clock ticks of 10 ms (USER_HZ is 100 on Linux).
func processCPU(pid int) (time.Duration, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// The command, field 2, is in parentheses and may hold spaces: the
	// fields after its closing one start at field 3.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	var utime, stime int64
	if len(f) < 13 {
		return 0, false
	}
	if _, err := fmt.Sscan(f[11], &utime); err != nil {
		return 0, false
	}
	if _, err := fmt.Sscan(f[12], &stime); err != nil {
		return 0, false
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, true
}

// BenchmarkPageFirstTouch times what the kernel charges a process for the
// first write to each 4 KiB page of fresh anonymous memory (a minor page
// fault: the page is found, zeroed and mapped), against a write to a page
// already mapped, which costs a store. Every fresh memtable Pebble
// allocates, and every page the Go heap takes back after returning it to
// the OS, pays the first. Not part of run.sh.
func BenchmarkPageFirstTouch(b *testing.B) {
	const size = 64 << 20 // a memtable
	touch := func(m []byte) {
		for i := 0; i < len(m); i += 4096 {
			m[i]++
		}
	}
	mmap := func() []byte {
		m, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	b.Run("touch=first", func(b *testing.B) {
		pages := 0
		for b.Loop() {
			b.StopTimer()
			m := mmap()
			b.StartTimer()
			touch(m)
			pages += size / 4096
			b.StopTimer()
			if err := unix.Munmap(m); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(pages), "ns/page")
	})
	b.Run("touch=again", func(b *testing.B) {
		m := mmap()
		defer unix.Munmap(m)
		touch(m)
		pages := 0
		for b.Loop() {
			touch(m)
			pages += size / 4096
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(pages), "ns/page")
	})
}
