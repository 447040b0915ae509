package bench

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/statedhq/stated/raftstore/fsm"
)

// BenchmarkRawPebble is Pebble alone with the state store's options
// (fsm.PebbleOptions), committing batches of 1, 100 and 1000 puts of
// 100-byte values under new keys with pebble.Sync, from 1 and 64 writers
// at once (Pebble groups concurrent synced commits into one WAL fsync).
// It is what stated's commits cost without Raft, gRPC and the SDK.
func BenchmarkRawPebble(b *testing.B) {
	for _, batch := range []int{1, 100, 1000} {
		for _, writers := range []int{1, 64} {
			b.Run(fmt.Sprintf("batch=%d/writers=%d", batch, writers), func(b *testing.B) {
				db, err := pebble.Open(filepath.Join(b.TempDir(), "p"), fsm.PebbleOptions())
				if err != nil {
					b.Fatal(err)
				}
				defer db.Close()
				value := make([]byte, 100)
				var key atomic.Uint64
				parallel(b, writers, batch, "mutations/s", false, func(_, _ int) error {
					first := key.Add(uint64(batch)) - uint64(batch)
					bt := db.NewBatch()
					defer bt.Close()
					for j := range uint64(batch) {
						bt.Set(binary.BigEndian.AppendUint64([]byte("key/"), first+j), value, nil)
					}
					return bt.Commit(pebble.Sync)
				})
			})
		}
	}
}

// BenchmarkRawPebbleCompaction shows what a replicated state machine's
// bookkeeping costs Pebble when the keys written are new and ascending,
// as in BenchmarkRawPebble and the stated rows: b.N batches of 1000 puts
// of 100-byte values under new keys, committed without sync. With
// keys=new, each flush's tables hold key ranges no other table overlaps,
// so nothing is ever compacted. With keys=new+applied-index, each batch
// also sets one key at the start of the key space, as stated's state
// machine records its applied index in every Pebble batch (and one at the
// end, as it records each client session's highest sequence). The state
// store's options end a table at each key's first byte, so those keys
// go into small tables of their own and the puts' tables are rewritten
// about once; without that, every flush's tables spanned the whole key
// space, overlapped each other and the level below, and compactions
// rewrote them all. It reports mutations/s and the bytes flushed and
// compacted per MB of puts.
func BenchmarkRawPebbleCompaction(b *testing.B) {
	for _, bookkeeping := range []bool{false, true} {
		name := "keys=new"
		if bookkeeping {
			name = "keys=new+applied-index"
		}
		b.Run(name, func(b *testing.B) {
			db, err := pebble.Open(filepath.Join(b.TempDir(), "p"), fsm.PebbleOptions())
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			const batch = 1000
			value := make([]byte, 100)
			var bytes int64
			b.ResetTimer()
			for i := range uint64(b.N) {
				bt := db.NewBatch()
				for j := range uint64(batch) {
					k := binary.BigEndian.AppendUint64([]byte("key/"), i*batch+j)
					bt.Set(k, value, nil)
					bytes += int64(len(k) + len(value))
				}
				if bookkeeping {
					bt.Set([]byte{0x00, 'a'}, binary.BigEndian.AppendUint64(nil, i), nil)
					bt.Set([]byte{0xff, 's', byte(i % 4)}, binary.BigEndian.AppendUint64(nil, i), nil)
				}
				if err := bt.Commit(pebble.NoSync); err != nil {
					b.Fatal(err)
				}
				bt.Close()
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "mutations/s")
			m := db.Metrics()
			var flushed, compacted uint64
			for i := range m.Levels {
				flushed += m.Levels[i].TableBytesFlushed
				compacted += m.Levels[i].TableBytesCompacted
			}
			mb := float64(bytes) / 1e6
			b.ReportMetric(float64(flushed)/1e6/mb, "flushed-MB/MB")
			b.ReportMetric(float64(compacted)/1e6/mb, "compacted-MB/MB")
		})
	}
}
