package uploader_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// The checkpoint benchmarks upload a directory shaped like a Pebble
// checkpoint of 100 MB (64 tables of random data, 1.56 MB each) to a
// file:// bucket on the same disk, and copy the same files as `cp` would,
// with and without fsync, as the disk's limit. Run them together:
//
//	go test ./uploader -run '^$' -bench . -benchtime 10x -count 5
const (
	benchTables    = 64
	benchTableSize = 100 << 20 / benchTables
)

// benchDir writes the tables into a new directory.
func benchDir(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	r := rand.New(rand.NewPCG(1, 2))
	files := map[string][]byte{"MANIFEST-000001": randomBytes(r, 4096), "OPTIONS-000003": []byte("[Version]\n")}
	for i := range benchTables {
		files[fmt.Sprintf("%06d.sst", 10+i)] = randomBytes(r, benchTableSize)
	}
	writeFiles(b, dir, files)
	return dir
}

func reportMBps(b *testing.B, bytes int64, elapsed time.Duration) {
	b.ReportMetric(float64(bytes)/1e6/elapsed.Seconds(), "MB/s")
}

// cpuTime is the user and system CPU time the process has used: on a
// shared machine it varies less than the wall time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter measures the CPU time of the timed parts of a benchmark.
type cpuMeter struct {
	b     *testing.B
	start time.Duration
	total time.Duration
}

func (m *cpuMeter) begin() { m.start = cpuTime(m.b) }
func (m *cpuMeter) end()   { m.total += cpuTime(m.b) - m.start }
func (m *cpuMeter) report() {
	m.b.ReportMetric(float64(m.total.Milliseconds())/float64(m.b.N), "cpu-ms/op")
}

// BenchmarkUploadFull: a first checkpoint, every file hashed and sent,
// by a new Uploader into an empty bucket each time.
func BenchmarkUploadFull(b *testing.B) { benchUploadFull(b, 0) }

// BenchmarkUploadFullUnderGC is BenchmarkUploadFull while the garbage
// collector runs every 30 ms, about as often as it does in a daemon under
// 1000-mutation commits from 4 clients (26-30 collections a second), which
// empties the sync.Pool of whole-read buffers between some of their uses.
// Both report the bytes the upload allocated.
func BenchmarkUploadFullUnderGC(b *testing.B) { benchUploadFull(b, 30*time.Millisecond) }

func benchUploadFull(b *testing.B, gcEvery time.Duration) {
	if gcEvery > 0 {
		collectEvery(b, gcEvery)
	}
	b.ReportAllocs()
	dir := benchDir(b)
	var total int64
	var elapsed time.Duration
	cpu := cpuMeter{b: b}
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		bucket := open(b, fileURL(filepath.Join(b.TempDir(), "bucket")))
		u := newUploader(b, bucket)
		b.StartTimer()
		start := time.Now()
		cpu.begin()
		_, st, err := u.Upload(b.Context(), dir, meta(1), nil)
		if err != nil {
			b.Fatal(err)
		}
		cpu.end()
		elapsed += time.Since(start)
		total += st.BytesUploaded
	}
	reportMBps(b, total, elapsed)
	cpu.report()
}

// collectEvery runs the garbage collector every d until b ends.
func collectEvery(b *testing.B, d time.Duration) {
	stop, done := make(chan struct{}), make(chan struct{})
	b.Cleanup(func() { close(stop); <-done })
	go func() {
		defer close(done)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				runtime.GC()
			}
		}
	}()
}

// BenchmarkUploadIncremental: the next checkpoint after a flush and a
// compaction: two new tables (3 MB), one table gone, a new MANIFEST; the
// other 62 tables are unchanged and neither hashed nor sent.
func BenchmarkUploadIncremental(b *testing.B) { benchUploadIncremental(b, false) }

// BenchmarkUploadIncrementalAfterRestart is BenchmarkUploadIncremental
// by a new Uploader each time, as after the daemon started again or
// another node became leader: it fsyncs the 62 blobs it reuses once
// (they may be an earlier process's, never synced), which the
// Uploader that wrote them skips.
func BenchmarkUploadIncrementalAfterRestart(b *testing.B) { benchUploadIncremental(b, true) }

func benchUploadIncremental(b *testing.B, restart bool) {
	dir := benchDir(b)
	bucket := open(b, fileURL(filepath.Join(b.TempDir(), "bucket")))
	u := newUploader(b, bucket)
	if _, _, err := u.Upload(b.Context(), dir, meta(1), nil); err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	var sent, state int64
	var elapsed time.Duration
	cpu := cpuMeter{b: b}
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		epoch := uint64(i + 2)
		if err := os.Remove(filepath.Join(dir, fmt.Sprintf("%06d.sst", 10+i))); err != nil {
			b.Fatal(err)
		}
		writeFiles(b, dir, map[string][]byte{
			fmt.Sprintf("%06d.sst", 1000+2*i):   randomBytes(r, benchTableSize),
			fmt.Sprintf("%06d.sst", 1000+2*i+1): randomBytes(r, benchTableSize),
			"MANIFEST-000001":                   randomBytes(r, 4096),
		})
		if restart {
			u = newUploader(b, bucket)
		}
		b.StartTimer()
		start := time.Now()
		cpu.begin()
		_, st, err := u.Upload(b.Context(), dir, meta(epoch), nil)
		if err != nil {
			b.Fatal(err)
		}
		cpu.end()
		elapsed += time.Since(start)
		sent += st.BytesUploaded
		state = st.Bytes
	}
	cpu.report()
	b.ReportMetric(float64(sent)/float64(b.N)/1e6, "MB-sent/op")
	b.ReportMetric(float64(state)/1e6/(elapsed.Seconds()/float64(b.N)), "state-MB/s")
}

// BenchmarkCopy copies the files like cp: io.Copy file to file, no fsync.
func BenchmarkCopy(b *testing.B) { benchCopy(b, false) }

// BenchmarkCopyFsync copies the files and fsyncs each, as the upload to
// a file:// bucket does.
func BenchmarkCopyFsync(b *testing.B) { benchCopy(b, true) }

func benchCopy(b *testing.B, fsync bool) {
	dir := benchDir(b)
	entries, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	var total int64
	var elapsed time.Duration
	cpu := cpuMeter{b: b}
	for b.Loop() {
		b.StopTimer()
		dst := b.TempDir()
		b.StartTimer()
		start := time.Now()
		cpu.begin()
		var n int64
		for _, e := range entries {
			n += copyFile(b, filepath.Join(dir, e.Name()), filepath.Join(dst, e.Name()), fsync)
		}
		if fsync {
			d, err := os.Open(dst)
			if err != nil {
				b.Fatal(err)
			}
			if err := d.Sync(); err != nil {
				b.Fatal(err)
			}
			d.Close()
		}
		cpu.end()
		elapsed += time.Since(start)
		total += n
	}
	reportMBps(b, total, elapsed)
	cpu.report()
}

func copyFile(b *testing.B, src, dst string, fsync bool) int64 {
	in, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(out, in)
	if err != nil {
		b.Fatal(err)
	}
	if fsync {
		if err := out.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	if err := out.Close(); err != nil {
		b.Fatal(err)
	}
	return n
}
