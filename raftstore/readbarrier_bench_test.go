package raftstore_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/raftstore/raftstoretest"
)

// BenchmarkLinearizableReadBarrier times a leader's wait before a
// linearizable read, on one node and on three in this process
// (loopback): an entry of its term committed (done once), its leadership
// confirmed by a quorum's answers to heartbeats, its commit index
// applied. The read itself, from Pebble, is not in it.
//
//	go test ./raftstore -run '^$' -bench LinearizableReadBarrier -count 6
func BenchmarkLinearizableReadBarrier(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			c := raftstoretest.NewCluster(b, n)
			l := c.Leader(b)
			ctx := context.Background()
			if _, err := l.ReadBarrier(ctx, raftstore.Linearizable, 0); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				if _, err := l.ReadBarrier(ctx, raftstore.Linearizable, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
