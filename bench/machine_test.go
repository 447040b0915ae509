package bench

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkMachine measures the limits of the disk that holds the data
// dir (TMPDIR under run.sh): the latency of a 4 KiB write and fsync of one
// file (what a synced commit cannot beat), and the sequential bandwidth of
// 256 MB written in 1 MiB chunks and fsynced (what a checkpoint upload to
// file:// or a restore cannot beat).
func BenchmarkMachine(b *testing.B) {
	b.Run("fsync-4KiB", func(b *testing.B) {
		f, err := os.Create(filepath.Join(b.TempDir(), "f"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, 4096)
		var lat latencies
		d := make([]time.Duration, 0, min(b.N, 1<<20))
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			if _, err := f.Write(buf); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			d = append(d, time.Since(start))
		}
		b.StopTimer()
		lat.add(d)
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		lat.report(b, false)
	})
	b.Run("seqwrite-256MB", func(b *testing.B) {
		const size, chunk = 256 << 20, 1 << 20
		buf := make([]byte, chunk)
		for i := range buf {
			buf[i] = byte(i * 7) // not all zeros, in case the filesystem compresses
		}
		dir := b.TempDir()
		b.SetBytes(size)
		b.ResetTimer()
		for i := range b.N {
			name := filepath.Join(dir, "seq")
			f, err := os.Create(name)
			if err != nil {
				b.Fatal(err)
			}
			for range size / chunk {
				if _, err := f.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			if err := f.Close(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := os.Remove(name); err != nil {
				b.Fatal(err)
			}
			if i < b.N-1 {
				b.StartTimer()
			}
		}
	})
}
