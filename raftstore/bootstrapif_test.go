package raftstore

import (
	"context"
	"sync/atomic"
	"testing"
)

// TestBootstrapIfIsAskedOnlyWithoutRaftState: Config.BootstrapIf (the
// daemon's question to the other members, which can wait seconds on
// members that start too) decides whether an empty data dir starts a new
// cluster, and is never asked on a restart: a node with Raft state is a
// member whatever the answer would be.
func TestBootstrapIfIsAskedOnlyWithoutRaftState(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		dir := t.TempDir()
		var asked atomic.Int32
		cfg := storeConfig(logStore, dir)
		cfg.Bootstrap = false
		cfg.BootstrapIf = func(context.Context) bool { asked.Add(1); return true }
		s := openStore(t, cfg)
		addOne(t, s)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if n := asked.Load(); n != 1 {
			t.Fatalf("an empty data dir asked BootstrapIf %d times, want once", n)
		}

		// On a restart a "no" would make the node wait for a join: it
		// must not be asked.
		cfg.BootstrapIf = func(context.Context) bool { asked.Add(1); return false }
		s = openStore(t, cfg)
		defer s.Close()
		if n := asked.Load(); n != 1 {
			t.Fatalf("a restart with Raft state asked BootstrapIf (%d calls in all)", n)
		}
		if got := counter(t, s); got != 1 {
			t.Fatalf("counter = %d after the restart, want 1", got)
		}

		// An empty data dir told no waits for a join.
		other := storeConfig(logStore, t.TempDir())
		other.Bootstrap = true // BootstrapIf is asked instead
		other.BootstrapIf = func(context.Context) bool { asked.Add(1); return false }
		o, err := Open(context.Background(), other)
		if err != nil {
			t.Fatal(err)
		}
		defer o.Close()
		if n := asked.Load(); n != 2 {
			t.Fatalf("a second empty data dir: BootstrapIf asked %d times in all, want 2", n)
		}
		if !o.NeedsJoin() {
			t.Fatal("an empty data dir whose BootstrapIf said no does not need a join")
		}
	})
}
