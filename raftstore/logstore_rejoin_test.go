package raftstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/raftstore/raftstoretest"
)

// TestALeaderThatRejoinedAsAFollowerRestarts: a leader cut off from the
// others appends an entry no one else has; when it rejoins as a follower
// of a later term, Raft deletes that entry and what follows from its log
// (a tail truncation) and writes the new leader's entries in their place.
// The node must then restart on that log, read all of it, and keep up.
// On raft-wal v0.4.0 the truncation left a segment marked sealed without
// its index block, and the restarted node could not read it ("sealed
// segment has no index block", raft-wal issue 31, the chaos test's
// failed restart).
func TestALeaderThatRejoinedAsAFollowerRestarts(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		c := raftstoretest.NewCluster(t, 3, raftstoretest.WithLogStore(logStore))
		ctx, cancel := context.WithTimeout(context.Background(), 6*waitTimeout)
		defer cancel()
		var acked int64
		commit := func(n int) {
			t.Helper()
			for range n {
				acked++
				if _, err := c.Commit(ctx, increment("t", uint64(acked), "c", 1), time.Second); err != nil {
					t.Fatal(err)
				}
			}
		}
		commit(20)

		// Cut the leader off and have it append an entry alone. It steps
		// down once its lease runs out (100 ms here), and an entry
		// proposed after that never reaches its log: then heal and try
		// again with whichever node leads.
		var old *raftstore.Store
		var oldTerm, ghostIndex uint64
		for attempt := 0; ghostIndex == 0; attempt++ {
			if attempt == 10 {
				t.Fatal("in 10 attempts no isolated leader appended an entry of its own")
			}
			old = c.Leader(t)
			oldTerm = old.Status().Term
			before := old.Status().LastLogIndex
			c.Network().Isolate(old.NodeID())
			gctx, gcancel := context.WithTimeout(ctx, 300*time.Millisecond)
			if _, _, err := old.Commit(gctx, increment("ghost", 0, "ghost", 1)); err == nil {
				t.Fatal("an isolated leader acknowledged a commit")
			}
			gcancel()
			if st := old.Status(); st.LastLogIndex > before && st.Term == oldTerm {
				ghostIndex = before + 1
				break
			}
			c.Network().Heal()
			commit(1)
		}

		// The majority moves on, then the old leader rejoins and its
		// ghost entry is replaced.
		deadline := time.Now().Add(waitTimeout)
		for l := c.CurrentLeader(); l == nil || l.NodeID() == old.NodeID(); l = c.CurrentLeader() {
			if time.Now().After(deadline) {
				t.Fatal("the majority elected no leader")
			}
			time.Sleep(10 * time.Millisecond)
		}
		commit(10)
		c.Network().Heal()
		commit(5)
		checkEveryNode(t, c, "c", acked)
		checkLog := func(when string) {
			t.Helper()
			entries, err := raftstore.ReadRaftLog(old)
			if err != nil {
				t.Fatalf("%s: the rejoined leader's log %s: %v", when, logStore, err)
			}
			if e, ok := entries[ghostIndex]; !ok || e.Term <= oldTerm {
				t.Fatalf("%s: entry %d of the rejoined leader's log has term %d (present %v), want the new leader's, after %d",
					when, ghostIndex, e.Term, ok, oldTerm)
			}
		}
		checkLog("before the restart")

		i := c.Index(old.NodeID())
		c.Stop(i)
		c.Restart(t, i)
		old = c.Node(i)
		checkLog("after the restart")
		commit(5)
		checkEveryNode(t, c, "c", acked)
		if got := readCounter(t, old, "ghost"); got != 0 {
			t.Errorf("the isolated leader's unacknowledged write is present: ghost = %d", got)
		}
	})
}
