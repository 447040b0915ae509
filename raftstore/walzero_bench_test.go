package raftstore

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
)

// BenchmarkWALAppend appends one entry per StoreLogs (one sync each) to
// raft-wal, in raft-wal's own preallocated files and in zeroingFiles, for
// an entry of a single commit (200 bytes), of a coalesced call or a
// Kafka poll's commit (5 KB, 20 KB) and of a 1000-put commit (130 KB).
// It reports the append's latency quantiles.
//
//	go test ./raftstore -run '^$' -bench BenchmarkWALAppend -benchtime 3000x -count 3
func BenchmarkWALAppend(b *testing.B) {
	for _, size := range []int{200, 5000, 20000, 130000} {
		for _, zeroed := range []bool{false, true} {
			b.Run(fmt.Sprintf("entry=%d/zeroed=%v", size, zeroed), func(b *testing.B) {
				dir := b.TempDir()
				var vfs types.VFS = fs.New()
				if zeroed {
					vfs = zeroingVFS{vfs}
				}
				w, err := wal.Open(dir, wal.WithMetaStore(&metadb.BoltMetaDB{}), wal.WithSegmentFiler(segment.NewFiler(dir, vfs)))
				if err != nil {
					b.Fatal(err)
				}
				defer w.Close()
				data := make([]byte, size)
				// One entry first, and a pause as between commits, so that
				// the zeroer has started.
				if err := w.StoreLogs([]*raft.Log{{Index: 1, Term: 1, Type: raft.LogCommand, Data: data}}); err != nil {
					b.Fatal(err)
				}
				time.Sleep(100 * time.Millisecond)
				d := make([]time.Duration, 0, b.N)
				b.SetBytes(int64(size))
				b.ResetTimer()
				for i := range b.N {
					start := time.Now()
					if err := w.StoreLogs([]*raft.Log{{Index: uint64(i) + 2, Term: 1, Type: raft.LogCommand, Data: data}}); err != nil {
						b.Fatal(err)
					}
					d = append(d, time.Since(start))
				}
				b.StopTimer()
				slices.Sort(d)
				b.ReportMetric(float64(d[len(d)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(d[len(d)*99/100].Microseconds()), "p99-µs")
			})
		}
	}
}
