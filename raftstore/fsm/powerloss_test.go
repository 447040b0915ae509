package fsm

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/statedhq/stated/raftstore/command"
)

// TestAPowerLossAfterASnapshotLeavesTheStateAtOrPastIt is the guarantee a
// snapshot reference rests on. Raft compacts its log up to a snapshot's
// index once the snapshot is persisted, and the reference holds no state:
// so the state must be durable up to that index before Persist. Entries
// are applied without a sync (the Raft log is synced instead); Snapshot
// syncs Pebble's WAL. A power loss is a crash clone of Pebble's file
// system that keeps only what was synced.
func TestAPowerLossAfterASnapshotLeavesTheStateAtOrPastIt(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	open := func(fs vfs.FS) *FSM {
		t.Helper()
		f, err := Open(dir, nil, func(o *openOptions) { o.tune = func(po *pebble.Options) { po.FS = fs } })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	commit := func(i int) *command.Command {
		return commitCmd(1, []command.Mutation{
			{Op: command.OpPut, Namespace: "p", Key: fmt.Appendf(nil, "k%03d", i), Value: []byte("v")},
			{Op: command.OpCounterAdd, Namespace: "p", Key: []byte("count"), Delta: 1},
		}, nil)
	}
	mem := vfs.NewCrashableMem()
	f := open(mem)
	const before, after = 50, 20
	for i := 1; i <= before; i++ {
		if r := apply(t, f, uint64(i), commit(i)); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	// Without a snapshot, a power loss now loses the unsynced entries:
	// otherwise this test could not tell a synced state from a lucky one.
	if lost := open(mem.CrashClone(vfs.CrashCloneCfg{})); lost.AppliedIndex() >= before {
		t.Fatalf("a power loss before any sync kept applied index %d: the crash clone keeps unsynced writes", lost.AppliedIndex())
	}

	ref := persistRef(t, f)
	at, ok, err := DecodeSnapshotRef(ref)
	if err != nil || !ok || at != before {
		t.Fatalf("the snapshot refers to index %d (%v, %v), want %d", at, ok, err, before)
	}
	for i := before + 1; i <= before+after; i++ {
		apply(t, f, uint64(i), commit(i))
	}

	g := open(mem.CrashClone(vfs.CrashCloneCfg{}))
	got := g.AppliedIndex()
	if got < at {
		t.Fatalf("after a power loss the state is at index %d, behind the persisted snapshot's %d", got, at)
	}
	if _, rc, err := g.OpenSnapshotStream(at); err != nil {
		t.Fatalf("the snapshot reference no longer opens: %v", err)
	} else {
		rc.Close()
	}
	if _, _, err := g.OpenSnapshotStream(got + 1); !errors.Is(err, ErrStateBehindSnapshot) {
		t.Fatalf("a reference past the state opened: %v", err)
	}
	// What survived is exactly the first got entries, none torn.
	want := open(vfs.NewMem())
	for i := 1; i <= int(got); i++ {
		apply(t, want, uint64(i), commit(i))
	}
	sameContents(t, g, want)
}
