package fsm

import (
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// BenchmarkSnapshotInstall sends the state as Raft sends it to a follower
// that lost its disk or fell behind the log: the leader opens the snapshot
// stream (OpenSnapshotStream, which sizes it first), and a new state
// machine restores it (Restore) as it arrives through a pipe. The state is
// STATED_BENCH_SNAPSHOT_MB (default 1024) MB of 1 KiB random values under
// distinct keys, with 1% overwritten, and flushed. size-s is the time OpenSnapshotStream took to size the
// stream, before Raft can send its first byte; install-s the whole
// transfer, sizing included; cpu-s the process's CPU time for it.
//
//	go test ./raftstore/fsm -run '^$' -bench SnapshotInstall -benchtime 3x -timeout 30m
func BenchmarkSnapshotInstall(b *testing.B) {
	mb := int64(1024)
	if v := os.Getenv("STATED_BENCH_SNAPSHOT_MB"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			b.Fatalf("STATED_BENCH_SNAPSHOT_MB=%q: want a positive number of MB", v)
		}
		mb = n
	}
	src, err := Open(filepath.Join(b.TempDir(), "leader"), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { src.Close() })
	fill, pick := rand.NewChaCha8([32]byte{1}), rand.New(rand.NewPCG(1, 2))
	keys := int(mb << 10)
	benchPuts(b, src, fill, keys, func(i int) int { return i })
	benchPuts(b, src, fill, keys/100, func(int) int { return pick.IntN(keys) })
	if err := src.Flush(); err != nil {
		b.Fatal(err)
	}
	applied := src.AppliedIndex()
	wantKeys := benchKeyCount(b, src)
	b.ResetTimer()
	var sized, total, cpu time.Duration
	var bytes int64
	for i := range b.N {
		dst, err := Open(filepath.Join(b.TempDir(), "follower"+strconv.Itoa(i)), nil)
		if err != nil {
			b.Fatal(err)
		}
		startCPU, start := cpuTime(), time.Now()
		size, rc, err := src.OpenSnapshotStream(applied)
		if err != nil {
			b.Fatal(err)
		}
		sized += time.Since(start)
		pr, pw := io.Pipe()
		sent := make(chan error, 1)
		go func() {
			n, err := io.Copy(pw, rc)
			rc.Close()
			if err == nil && n != size {
				err = io.ErrUnexpectedEOF
			}
			pw.CloseWithError(err)
			sent <- err
		}()
		if err := dst.Restore(pr); err != nil {
			b.Fatal(err)
		}
		if err := <-sent; err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		cpu += cpuTime() - startCPU
		bytes += size
		b.StopTimer()
		if got := dst.AppliedIndex(); got != applied {
			b.Fatalf("the follower's applied index is %d after the install, want %d", got, applied)
		}
		if got := benchKeyCount(b, dst); got != wantKeys {
			b.Fatalf("the follower holds %d keys after the install, the leader %d", got, wantKeys)
		}
		dst.Close()
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(sized.Seconds()/n, "size-s")
	b.ReportMetric(total.Seconds()/n, "install-s")
	b.ReportMetric(cpu.Seconds()/n, "cpu-s")
	b.ReportMetric(float64(bytes)/1e6/total.Seconds(), "MB/s")
}

// benchKeyCount counts the keys of f's state.
func benchKeyCount(b *testing.B, f *FSM) int {
	it, err := f.db.NewIter(nil)
	if err != nil {
		b.Fatal(err)
	}
	defer it.Close()
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	if err := it.Error(); err != nil {
		b.Fatal(err)
	}
	return n
}
