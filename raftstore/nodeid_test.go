package raftstore

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestANodeRestartsAfterAPowerLossEmptiedItsNodeIDRecord: raft/node-id
// was written on a fresh data dir's first start with os.WriteFile, neither
// it nor its directory synced. A power loss soon after the first start
// (ext4's delayed allocation) can leave it empty while the Raft log,
// synced, holds every acknowledged commit. The node restarts with them;
// it used to refuse to start ("belongs to node \"\"").
func TestANodeRestartsAfterAPowerLossEmptiedItsNodeIDRecord(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		cfg := storeConfig(logStore, t.TempDir())
		s := openStore(t, cfg)
		for range 5 {
			addOne(t, s)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		// What a power loss leaves of a new file whose data was never synced.
		if err := os.Truncate(filepath.Join(cfg.Dir, raftDirName, "node-id"), 0); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := Open(ctx, cfg)
		if err != nil {
			t.Fatalf("restart after a power loss that emptied the unsynced raft/node-id: %v", err)
		}
		defer s.Close()
		if err := s.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		if got := counter(t, s); got != 5 {
			t.Fatalf("counter = %d, want 5", got)
		}
	})
}
