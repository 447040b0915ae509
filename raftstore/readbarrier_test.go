package raftstore

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A linearizable read with a min_index beyond everything the cluster has
// waits for it, also on a leader whose whole log is compacted into a
// snapshot (as snapshotRestoredState leaves a restored cluster's first
// node): an empty log is not "every entry is in the snapshot".
func TestLinearizableReadWaitsForAFutureIndexWhenTheLogIsEmpty(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		s := openStore(t, storeConfig(logStore, t.TempDir()))
		defer s.Close()
		for range 3 {
			addOne(t, s)
		}
		orig := s.raft.ReloadableConfig()
		compact := orig
		compact.TrailingLogs = 0
		if err := s.raft.ReloadConfig(compact); err != nil {
			t.Fatal(err)
		}
		if err := s.raft.Snapshot().Error(); err != nil {
			t.Fatal(err)
		}
		if err := s.raft.ReloadConfig(orig); err != nil {
			t.Fatal(err)
		}
		if first, err := s.log.FirstIndex(); err != nil || first != 0 {
			t.Fatalf("log's first index after compacting it all = %d, %v; want an empty log", first, err)
		}
		applied := s.AppliedIndex()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if got, err := s.ReadBarrier(ctx, Linearizable, applied); err != nil || got < applied {
			t.Fatalf("linearizable read at the applied index %d: %d, %v", applied, got, err)
		}
		future := applied + 100
		ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		got, err := s.ReadBarrier(ctx, Linearizable, future)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("linearizable read with min index %d (applied %d, last index %d): %d, %v; want it to wait until its deadline",
				future, applied, s.raft.LastIndex(), got, err)
		}
	})
}
