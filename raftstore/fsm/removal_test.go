package fsm

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/statedhq/stated/raftstore/command"
)

// barrier applies a checkpoint barrier at index and waits for its local
// checkpoint.
func barrier(t *testing.T, f *FSM, index uint64) *CheckpointResult {
	t.Helper()
	res := apply(t, f, index, &command.Command{Type: command.TypeCheckpoint, Now: int64(index)})
	if res.Err != nil || res.Checkpoint == nil {
		t.Fatalf("barrier at %d: %s", index, fmtResult(res))
	}
	if err := res.Checkpoint.Wait(); err != nil {
		t.Fatal(err)
	}
	return res.Checkpoint
}

func TestCompletionEntryRemovesTheLocalCheckpointOffTheApplyLoop(t *testing.T) {
	f := openFSM(t)
	cp := barrier(t, f, 1)
	held, release := make(chan uint64, 1), make(chan struct{})
	f.removals.hook = func(epoch uint64) bool {
		held <- epoch
		<-release
		return true
	}
	if r := apply(t, f, 2, &command.Command{Type: command.TypeCheckpointDone, Epoch: 1, Now: 2}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if epoch := <-held; epoch != 1 {
		t.Fatalf("removal of epoch %d, want 1", epoch)
	}
	// The removal is held: commits still apply and are read.
	for i := uint64(3); i <= 10; i++ {
		r := apply(t, f, i, commitCmd(int64(i), []command.Mutation{{Op: command.OpCounterAdd, Namespace: "n", Key: []byte("c"), Delta: 1}}, nil))
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if f.AppliedIndex() != 10 || counterValue(t, f, "n", "c", 10) != 8 {
		t.Fatalf("applied index %d, counter %d; want 10 and 8 while the removal is held", f.AppliedIndex(), counterValue(t, f, "n", "c", 10))
	}
	if st, err := f.CheckpointState(); err != nil || st.Completed != 1 {
		t.Fatalf("checkpoint state %+v, %v: the completion is recorded before its removal", st, err)
	}
	if _, err := os.Stat(cp.Dir); err != nil {
		t.Fatalf("the held removal already removed %s: %v", cp.Dir, err)
	}
	// Close waits for the removal it let go.
	close(release)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cp.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Close returned before the removal of %s ended: %v", cp.Dir, err)
	}
}

func TestRemovalsOfLocalCheckpointsRunInOrder(t *testing.T) {
	f := openFSM(t)
	var order []uint64 // appended by the removals, which run one at a time
	f.removals.hook = func(epoch uint64) bool {
		order = append(order, epoch)
		return true
	}
	idx := uint64(0)
	for epoch := uint64(1); epoch <= 5; epoch++ {
		idx++
		barrier(t, f, idx)
		idx++
		if r := apply(t, f, idx, &command.Command{Type: command.TypeCheckpointDone, Epoch: epoch, Now: int64(idx)}); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	f.removals.wait()
	if len(order) != 5 {
		t.Fatalf("removals of epochs %v, want 1 to 5", order)
	}
	for i, e := range order {
		if e != uint64(i+1) {
			t.Fatalf("removals ran in the order %v, want 1 to 5", order)
		}
	}
	for e := uint64(1); e <= 5; e++ {
		if _, err := os.Stat(f.CheckpointDir(e)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("epoch %d's local checkpoint survived: %v", e, err)
		}
	}
}

func TestRestartCleansALocalCheckpointWhoseRemovalACrashCutShort(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	f, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	cp := barrier(t, f, 1)
	// The "crash": the removal deletes part of the directory and stops.
	f.removals.hook = func(uint64) bool {
		entries, err := os.ReadDir(cp.Dir)
		if err != nil || len(entries) < 2 {
			t.Errorf("local checkpoint %s: %d files, %v", cp.Dir, len(entries), err)
			return false
		}
		for _, e := range entries[:len(entries)/2] {
			if err := os.Remove(filepath.Join(cp.Dir, e.Name())); err != nil {
				t.Error(err)
			}
		}
		return false
	}
	if r := apply(t, f, 2, &command.Command{Type: command.TypeCheckpointDone, Epoch: 1, Now: 2}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cp.Dir); err != nil {
		t.Fatalf("the cut-short removal left nothing to clean: %v", err)
	}

	f, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	// Raft replays the completion entry, which is already applied and
	// does nothing; the next barrier removes every older epoch.
	if r := apply(t, f, 2, &command.Command{Type: command.TypeCheckpointDone, Epoch: 1, Now: 2}); r.Err != nil || r.Index != 2 {
		t.Fatalf("replayed completion: %s", fmtResult(r))
	}
	next := barrier(t, f, 3)
	if _, err := os.Stat(cp.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the half-removed %s survived the next barrier: %v", cp.Dir, err)
	}
	info, err := ReadCheckpoint(next.Dir)
	if err != nil || info.Epoch != 2 || info.AppliedIndex != 3 {
		t.Fatalf("the next checkpoint: %+v, %v; want epoch 2 at index 3", info, err)
	}
}
