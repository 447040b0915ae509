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
//
// Two more rows time the sync the Raft log does: 4 KiB written into a
// file whose blocks are already written and synced, then fdatasync(2) (on
// Linux; fsync elsewhere), as raft-wal's segments are synced once zeroed
// ahead (raftstore/walzero.go). in-place does it back to back, as the
// fsync row does; in-place-after-idle sleeps 300 µs before each write
// (outside the timing), as a server answering one client's commits one at
// a time does: its CPUs go idle while the answer travels and the next
// commit comes, and waking from that costs the sync after it.
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
	b.Run("fdatasync-4KiB-in-place", func(b *testing.B) { benchSyncInPlace(b, 0) })
	b.Run("fdatasync-4KiB-in-place-after-idle", func(b *testing.B) { benchSyncInPlace(b, idleGap) })
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

// idleGap is the pause before each write of the after-idle sync row: about
// what one client's commit spends away from the disk (its gRPC round trip
// and the daemon's work besides the log's sync).
const idleGap = 300 * time.Microsecond

// inPlaceSize is the file the in-place rows write into, round and round:
// 64 MiB, a raft-wal segment.
const inPlaceSize = 64 << 20

// benchSyncInPlace writes 4 KiB at a time through a file of inPlaceSize
// whose blocks were all written and synced first, syncing each write's
// data with syncData, after a pause of gap (not timed) when gap > 0.
func benchSyncInPlace(b *testing.B, gap time.Duration) {
	f, err := os.Create(filepath.Join(b.TempDir(), "f"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	zeros := make([]byte, 1<<20)
	for range inPlaceSize / len(zeros) {
		if _, err := f.Write(zeros); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	var lat latencies
	d := make([]time.Duration, 0, min(b.N, 1<<20))
	var off int64
	b.ResetTimer()
	for range b.N {
		if gap > 0 {
			b.StopTimer()
			time.Sleep(gap)
			b.StartTimer()
		}
		start := time.Now()
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
		if err := syncData(f); err != nil {
			b.Fatal(err)
		}
		d = append(d, time.Since(start))
		off = (off + int64(len(buf))) % inPlaceSize
	}
	b.StopTimer()
	lat.add(d)
	lat.report(b, false)
}
