package fsm

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// BenchmarkCountCheckpoint counts the state of one local checkpoint in
// one range (what CountCheckpoint does, countInParallel off) and split
// into 2 and 4 ranges counted at once, alternately on the same files. The
// state is STATED_BENCH_COUNT_MB (default 1024) MB of 1 KiB random
// values under distinct keys, with 1% overwritten, settled, as
// test.BenchmarkCheckpointUpload builds it. cpu-ms is the process's CPU
// time per count, which a busy machine disturbs less than the wall time.
//
//	go test ./raftstore/fsm -run '^$' -bench CountCheckpoint -benchtime 3x -timeout 30m
func BenchmarkCountCheckpoint(b *testing.B) {
	size := countBenchMB(b)
	_, dir := countBenchState(b, size<<20)
	want, wantBytes, err := countCheckpoint(context.Background(), dir, 1)
	if err != nil {
		b.Fatal(err)
	}
	for _, parts := range []int{1, 2, 4, 1, 2, 4, 1, 2, 4} {
		b.Run(fmt.Sprintf("parts=%d", parts), func(b *testing.B) {
			var cpu time.Duration
			for range b.N {
				before := cpuTime()
				keys, bytes, err := countCheckpoint(context.Background(), dir, parts)
				cpu += cpuTime() - before
				if err != nil {
					b.Fatal(err)
				}
				if keys != want || bytes != wantBytes {
					b.Fatalf("counted %d keys, %d bytes; the plain iteration counted %d, %d", keys, bytes, want, wantBytes)
				}
			}
			b.ReportMetric(float64(wantBytes)/1e6/b.Elapsed().Seconds()*float64(b.N), "MB/s")
			b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
		})
	}
}

// countBenchMB is the state's size in MB: STATED_BENCH_COUNT_MB, 1024 by
// default.
func countBenchMB(b *testing.B) int64 {
	v := os.Getenv("STATED_BENCH_COUNT_MB")
	if v == "" {
		return 1024
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		b.Fatalf("STATED_BENCH_COUNT_MB=%q: want a positive number of MB", v)
	}
	return n
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// countBenchState builds a state of size bytes of 1 KiB values, lets its
// compactions settle, and makes a local checkpoint of it.
func countBenchState(b *testing.B, size int64) (*FSM, string) {
	f, err := Open(filepath.Join(b.TempDir(), "state"), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	fill, pick := rand.NewChaCha8([32]byte{1}), rand.New(rand.NewPCG(1, 2))
	keys := int(size >> 10)
	benchPuts(b, f, fill, keys, func(i int) int { return i })
	benchPuts(b, f, fill, keys/100, func(int) int { return pick.IntN(keys) })
	if err := f.Flush(); err != nil {
		b.Fatal(err)
	}
	// Settled: no compaction running or owed for 3 s.
	quiet := time.Now()
	for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline) && time.Since(quiet) < 3*time.Second; time.Sleep(250 * time.Millisecond) {
		if m := f.db.Metrics(); m.Compact.NumInProgress > 0 || m.Compact.EstimatedDebt > 0 {
			quiet = time.Now()
		}
	}
	return f, benchCheckpoint(b, f)
}

// benchPuts applies n puts of 1 KiB random values to f, under the keys
// key(0..n-1), in commits of up to 1000.
func benchPuts(b *testing.B, f *FSM, fill *rand.ChaCha8, n int, key func(i int) int) {
	value := make([]byte, 1000<<10)
	for first := 0; first < n; first += 1000 {
		m := min(1000, n-first)
		fill.Read(value[:m<<10])
		muts := make([]command.Mutation, m)
		for i := range muts {
			muts[i] = command.Mutation{Op: command.OpPut, Namespace: "bench",
				Key: binary.BigEndian.AppendUint64([]byte("key/"), uint64(key(first+i))), Value: value[i<<10 : (i+1)<<10]}
		}
		res := f.Apply(&raft.Log{Index: f.applied.Load() + 1, Type: raft.LogCommand, Data: command.Encode(nil, &command.Command{Type: command.TypeCommit, Now: 1, Commit: &command.Commit{Mutations: muts}})}).(*Result)
		if res.Err != nil {
			b.Fatal(res.Err)
		}
	}
}

// benchCheckpoint makes a local checkpoint of f and returns its directory.
func benchCheckpoint(b *testing.B, f *FSM) string {
	res := f.Apply(&raft.Log{Index: f.applied.Load() + 1, Type: raft.LogCommand, Data: command.Encode(nil, &command.Command{Type: command.TypeCheckpoint, Now: 1})}).(*Result)
	if res.Err != nil || res.Checkpoint == nil || res.Checkpoint.Wait() != nil {
		b.Fatalf("checkpoint: %+v", res)
	}
	return res.Checkpoint.Dir
}

// BenchmarkCountCheckpointFromBase counts a checkpoint taken after 1% of
// the keys of the state BenchmarkCountCheckpoint builds were overwritten,
// from the checkpoint before it (CheckpointCounter), and whole, alternately.
//
//	go test ./raftstore/fsm -run '^$' -bench CountCheckpointFromBase -benchtime 3x -timeout 30m
func BenchmarkCountCheckpointFromBase(b *testing.B) {
	size := countBenchMB(b)
	f, base := countBenchState(b, size<<20)
	c := NewCheckpointCounter(filepath.Join(b.TempDir(), "base"))
	n, err := c.Count(context.Background(), base)
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Keep(base, 1, n); err != nil {
		b.Fatal(err)
	}
	// 1% of the keys overwritten, flushed, and a new checkpoint.
	fill, pick := rand.NewChaCha8([32]byte{3}), rand.New(rand.NewPCG(3, 4))
	keys := int(size << 10) // of 1 KiB
	benchPuts(b, f, fill, keys/100, func(int) int { return pick.IntN(keys) })
	if err := f.Flush(); err != nil {
		b.Fatal(err)
	}
	dir := benchCheckpoint(b, f)
	if n, err := c.Count(context.Background(), dir); err == nil {
		b.Logf("from the base: %+v", n)
	}
	want, wantBytes, err := countCheckpoint(context.Background(), dir, 1)
	if err != nil {
		b.Fatal(err)
	}
	for _, how := range []string{"from-base", "whole", "from-base", "whole", "from-base", "whole"} {
		b.Run(how, func(b *testing.B) {
			var cpu time.Duration
			var read uint64
			for range b.N {
				before := cpuTime()
				var keys, bytes uint64
				var err error
				if how == "whole" {
					keys, bytes, err = countCheckpoint(context.Background(), dir, 1)
				} else {
					var n CheckpointCount
					n, err = c.Count(context.Background(), dir)
					if err == nil && n.Whole != "" {
						b.Fatalf("counted whole: %s", n.Whole)
					}
					keys, bytes, read = n.Keys, n.Bytes, n.TableBytesRead
				}
				cpu += cpuTime() - before
				if err != nil {
					b.Fatal(err)
				}
				if keys != want || bytes != wantBytes {
					b.Fatalf("counted %d keys, %d bytes; a whole count %d, %d", keys, bytes, want, wantBytes)
				}
			}
			b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
			b.ReportMetric(float64(read)/1e6, "tables-read-MB")
		})
	}
}
