package fsm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/statedhq/stated/raftstore/command"
)

func TestCheckpointIsAConsistentCutOfStateAndOffsets(t *testing.T) {
	f := openFSM(t)
	f.SetCheckpointDir(filepath.Join(t.TempDir(), "cps"))
	idx := uint64(0)
	commit := func(n int64) {
		idx++
		res := apply(t, f, idx, commitCmd(1, []command.Mutation{{Op: command.OpCounterAdd, Namespace: "n", Key: []byte("k"), Delta: 1}},
			[]command.Offset{{Group: "g", Topic: "t", Partition: 0, Offset: n}}))
		if res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	for i := int64(1); i <= 10; i++ {
		commit(i)
	}
	idx++
	res := apply(t, f, idx, &command.Command{Type: command.TypeCheckpoint, Now: 5})
	cp := res.Checkpoint
	if cp != nil {
		cp.Wait()
	}
	if res.Err != nil || cp == nil || cp.Err != nil || cp.Epoch != 1 || cp.Index != idx {
		t.Fatalf("checkpoint result = %+v, %+v", res, cp)
	}
	// Writes after the barrier are not in the checkpoint.
	for i := int64(11); i <= 15; i++ {
		commit(i)
	}
	before := dirListing(t, cp.Dir)
	info, err := ReadCheckpoint(cp.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if after := dirListing(t, cp.Dir); after != before {
		t.Fatalf("reading the checkpoint changed its files:\n%s\nwas\n%s", after, before)
	}
	if info.Epoch != 1 || info.AppliedIndex != cp.Index || len(info.Offsets) != 1 || info.Offsets[0].Offset != 10 || info.Keys != 1 {
		t.Fatalf("checkpoint info = %+v, want epoch 1 at index %d, offset 10, 1 key", info, cp.Index)
	}
	// A second barrier: a new epoch, and the first local copy goes.
	idx++
	res = apply(t, f, idx, &command.Command{Type: command.TypeCheckpoint, Now: 6})
	if res.Checkpoint != nil {
		res.Checkpoint.Wait()
	}
	if res.Checkpoint == nil || res.Checkpoint.Epoch != 2 {
		t.Fatalf("second checkpoint = %+v", res.Checkpoint)
	}
	if _, err := os.Stat(cp.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("epoch 1's local checkpoint is still there: %v", err)
	}
	info, err = ReadCheckpoint(res.Checkpoint.Dir)
	if err != nil || info.Offsets[0].Offset != 15 || info.Epoch != 2 {
		t.Fatalf("epoch 2 info = %+v, %v", info, err)
	}
	// Done for an epoch never started is refused; done for 2 removes it.
	idx++
	if r := apply(t, f, idx, &command.Command{Type: command.TypeCheckpointDone, Epoch: 3, Now: 7}); !errors.Is(r.Err, ErrRejected) {
		t.Fatalf("done for epoch 3: %v, want a rejection", r.Err)
	}
	idx++
	if r := apply(t, f, idx, &command.Command{Type: command.TypeCheckpointDone, Epoch: 2, Now: 8}); r.Err != nil {
		t.Fatal(r.Err)
	}
	f.removals.wait() // the removal runs off the apply loop
	if _, err := os.Stat(res.Checkpoint.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("epoch 2's local checkpoint survived its completion: %v", err)
	}
	st, err := f.CheckpointState()
	if err != nil || st != (CheckpointState{LastEpoch: 2, Completed: 2, CompletedAt: 8}) {
		t.Fatalf("checkpoint state = %+v, %v", st, err)
	}
	// A late done for an older epoch does not move Completed back.
	idx++
	apply(t, f, idx, &command.Command{Type: command.TypeCheckpointDone, Epoch: 1, Now: 9})
	if st, _ := f.CheckpointState(); st.Completed != 2 {
		t.Fatalf("completed moved back to %d", st.Completed)
	}
}

func dirListing(t *testing.T, dir string) string {
	t.Helper()
	var out string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out += fmt.Sprintf("%s %d\n", p[len(dir):], fi.Size())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
