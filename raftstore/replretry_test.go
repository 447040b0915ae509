package raftstore_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/statedhq/stated/raftstore/raftstoretest"
)

// TestAFollowerBackFromALongAbsenceIsNotLeftToRaftsBackoff: while a
// follower is down, the leader keeps sending it its entries again instead
// of telling Raft of each failure, so that Raft's backoff (doubling up to
// 10.24 s between tries, with nothing to cut it short) never builds up,
// and the follower gets its entries as soon as it is back. Eight seconds
// down is eleven failures for Raft without that, each logged as "failed
// to appendEntries to".
func TestAFollowerBackFromALongAbsenceIsNotLeftToRaftsBackoff(t *testing.T) {
	t.Parallel()
	rec := &recorder{msgs: map[string][]logLine{}}
	c := raftstoretest.NewCluster(t, 3, raftstoretest.WithLogger(slog.New(recordHandler{r: rec})))
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	defer cancel()
	seq := uint64(0)
	commit := func() {
		t.Helper()
		seq++
		if _, err := c.Commit(ctx, increment("c", seq, "k", 1), time.Second); err != nil {
			t.Fatalf("commit %d: %v", seq, err)
		}
	}
	commit()
	c.Leader(t)
	f := c.Index(c.Followers()[0].NodeID())
	followerAddr := c.Node(f).RaftAddr()
	checkEveryNode(t, c, "k", 1)

	down := time.Now()
	c.Stop(f)
	for range 5 {
		commit()
	}
	time.Sleep(8 * time.Second)
	c.Restart(t, f)
	back := time.Now()
	for readCounter(t, c.Node(f), "k") != int64(seq) {
		if time.Since(back) > waitTimeout {
			t.Fatalf("%s did not get the commits made while it was down within %s of its restart", c.ID(f), waitTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%s held every commit %s after it was opened again", c.ID(f), time.Since(back).Round(time.Millisecond))

	// Counted on every node, in case leadership moved meanwhile (each
	// leader's Raft backs off from scratch, so that would add failures
	// without the resending, not hide them). The follower's shutdown may
	// end a call or two with an answer that is not a broken connection.
	failed := 0
	rec.mu.Lock()
	for _, msgs := range rec.msgs {
		for _, m := range msgs {
			if !m.at.Before(down) && strings.Contains(m.msg, "failed to appendEntries to") && strings.Contains(m.msg, followerAddr) {
				failed++
			}
		}
	}
	rec.mu.Unlock()
	if failed > 3 {
		t.Fatalf("Raft was told of %d failed replication calls to %s while it was down: it backed its replication off", failed, c.ID(f))
	}
}
