package recovery_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/recovery"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore/fsm"
)

// TestNodesThatJoinARestoredClusterReceiveItsState: the restored state is
// in the first node's Pebble, not in the new cluster's Raft log. Nodes that
// join must get it (a Raft snapshot), not replay the new log onto an empty
// state; and once they hold it, losing the restored node loses nothing.
// Before the fix the joiners held only what was committed after the
// restore, at the same applied index as the leader.
func TestNodesThatJoinARestoredClusterReceiveItsState(t *testing.T) {
	ctx := testCtx(t)
	bucket, _ := fileBucket(t)
	old := start(t, bucket)
	for i := int64(1); i <= 10; i++ {
		old.commit(ctx, t, 1, i)
	}
	e := old.checkpoint(ctx, t)
	if err := old.d.Close(); err != nil {
		t.Fatal(err)
	}
	first, _ := restoreAndStart(ctx, t, bucket, recovery.RestoreOptions{Select: recovery.Selector{Epoch: e}})
	first.commit(ctx, t, 5, 11) // after the restore, in the new log
	var joiners []*node
	for i := range 2 {
		joiners = append(joiners, start(t, bucket, func(c *daemon.Config) {
			c.NodeID = fmt.Sprint("joiner", i)
			c.Join = []string{first.d.TCPAddr()}
		}))
	}
	want := first.d.Store().AppliedIndex()
	for _, j := range joiners {
		local := func() int64 {
			t.Helper()
			e, _, err := j.d.Store().Get("ns", []byte("n"), fsm.KindCounter, nil)
			if err != nil {
				t.Fatal(err)
			}
			return e.Counter
		}
		deadline := time.Now().Add(30 * time.Second)
		for j.d.Store().AppliedIndex() < want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got := local(); got != 15 {
			t.Fatalf("%s holds counter %d at applied index %d, want 15: the restored state did not reach it", j.d.Store().NodeID(), got, j.d.Store().AppliedIndex())
		}
	}
	// The restored node goes; the joiners elect a leader holding it all.
	if err := first.d.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := joiners[0].state.Get(ctx, &statedv1.GetRequest{Namespace: "ns", Key: []byte("n"), Kind: statedv1.Kind_KIND_COUNTER,
			Read: &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_LINEARIZABLE}})
		if err == nil {
			if got := resp.GetCounter(); got != 15 {
				t.Fatalf("counter after the restored node left = %d, want 15", got)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no linearizable read after the restored node left: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // a new leader is being elected
	}
}
