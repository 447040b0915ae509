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
