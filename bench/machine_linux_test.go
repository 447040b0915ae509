package bench

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// syncData writes f's data out with fdatasync(2), as the Raft log's
// zeroed segments are synced.
func syncData(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

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
