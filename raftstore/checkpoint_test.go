package raftstore_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/fsm"
	"github.com/statedhq/stated/raftstore/raftstoretest"
)

// TestCheckpointBarrierCutsTheSameStateOnEveryReplica: at the barrier
// entry every replica makes a local checkpoint, and each holds the same
// index, epoch and offsets; completing the epoch removes them everywhere.
func TestCheckpointBarrierCutsTheSameStateOnEveryReplica(t *testing.T) {
	c := raftstoretest.NewCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	leader := c.Leader(t)
	for i := range 20 {
		if _, err := c.Commit(ctx, increment("w", uint64(i+1), "k", 1), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	cp, err := leader.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Epoch != 1 || cp.Term != leader.Term() {
		t.Fatalf("checkpoint = %+v, want epoch 1 in term %d", cp, leader.Term())
	}
	for i := range c.Len() {
		s := c.Node(i)
		if _, err := s.ReadBarrier(ctx, raftstore.Session, cp.Index); err != nil {
			t.Fatal(err)
		}
		dir := c.Dir(i) + "/local-checkpoints/00000000000000000001"
		// Replicas make their local checkpoint in the background.
		var info fsm.CheckpointInfo
		var err error
		for deadline := time.Now().Add(waitTimeout); ; time.Sleep(10 * time.Millisecond) {
			if info, err = fsm.ReadCheckpoint(dir); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatalf("%s: %v", s.NodeID(), err)
		}
		if info.Epoch != 1 || info.AppliedIndex != cp.Index || info.Keys != 1 {
			t.Fatalf("%s: checkpoint info %+v, want epoch 1 at index %d", s.NodeID(), info, cp.Index)
		}
	}
	// Complete the epoch as the coordinator would: through whichever node
	// leads, again when leadership moved under load (completion is
	// idempotent, so a retry of one that applied changes nothing).
	done := []command.Offset{{Group: "g", Topic: "t", Partition: 0, Offset: 20}}
	for attempt := 1; ; attempt++ {
		err := c.Leader(t).CompleteCheckpoint(ctx, cp.Epoch, done)
		if err == nil {
			break
		}
		if !errors.Is(err, raftstore.ErrNotLeader) || attempt == 10 {
			t.Fatal(err)
		}
		t.Logf("completing epoch %d, attempt %d: %v; trying the leader again", cp.Epoch, attempt, err)
	}
	for i := range c.Len() {
		dir := c.Dir(i) + "/local-checkpoints/00000000000000000001"
		deadline := time.Now().Add(waitTimeout)
		for {
			st, err := c.Node(i).CheckpointState()
			if err != nil {
				t.Fatal(err)
			}
			if _, statErr := os.Stat(dir); st.Completed == 1 && errors.Is(statErr, os.ErrNotExist) {
				offs, err := c.Node(i).CheckpointedOffsets("g")
				if err != nil || len(offs) != 1 || offs[0].Offset != 20 {
					t.Fatalf("node %d: checkpointed offsets %+v, %v; want t/0 at 20", i, offs, err)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d: state %+v, local checkpoint still at %s", i, st, dir)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
