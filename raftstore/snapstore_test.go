package raftstore

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/fsm"
)

// filledFSM opens a state machine with 50 entries of 4 KiB applied.
func filledFSM(t *testing.T) *fsm.FSM {
	t.Helper()
	f, err := fsm.Open(filepath.Join(t.TempDir(), "state"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	for i := uint64(1); i <= 50; i++ {
		data := command.Encode(nil, &command.Command{Type: command.TypeCommit, Now: 1, Commit: &command.Commit{Mutations: []command.Mutation{
			{Op: command.OpPut, Namespace: "ns", Key: []byte{byte(i)}, Value: bytes.Repeat([]byte{byte(i)}, 4<<10)}}}})
		if res := f.Apply(&raft.Log{Index: i, Type: raft.LogCommand, Data: data}).(*fsm.Result); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	return f
}

// TestAReceivedStreamIsOpenedAsStoredAndItsOwnChecksumGuardsIt: a snapshot
// received from a leader (a stream of the state) is opened straight from
// its file, byte for byte what was stored, without the file store's CRC-64
// pass. A stream whose bytes changed on disk still cannot be restored: its
// own CRC-32C refuses it. A file of another size than its metadata says is
// opened by the file store, whose check refuses it.
func TestAReceivedStreamIsOpenedAsStoredAndItsOwnChecksumGuardsIt(t *testing.T) {
	src := filledFSM(t)
	size, rc, err := src.OpenSnapshotStream(50)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || int64(len(stream)) != size {
		t.Fatalf("read %d bytes of a %d-byte stream: %v", len(stream), size, err)
	}

	dir := t.TempDir()
	files, err := raft.NewFileSnapshotStore(dir, 2, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	store := snapshotStore{FileSnapshotStore: files, fsm: src, dir: dir}
	sink, err := files.Create(raft.SnapshotVersionMax, 50, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write(stream); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	open := func() ([]byte, error) {
		meta, rc, err := store.Open(sink.ID())
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err == nil && int64(len(b)) != meta.Size {
			t.Fatalf("read %d bytes of a snapshot whose metadata says %d", len(b), meta.Size)
		}
		return b, err
	}
	got, err := open()
	if err != nil || !bytes.Equal(got, stream) {
		t.Fatalf("opened %d bytes (%v), stored %d", len(got), err, len(stream))
	}

	file := filepath.Join(dir, "snapshots", sink.ID(), "state.bin")
	flipped := bytes.Clone(stream)
	flipped[len(flipped)/2] ^= 0x01
	if err := os.WriteFile(file, flipped, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = open()
	if err != nil {
		t.Fatal(err)
	}
	dst, err := fsm.Open(filepath.Join(t.TempDir(), "state"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := dst.Restore(io.NopCloser(bytes.NewReader(got))); !errors.Is(err, fsm.ErrCorrupt) {
		t.Fatalf("restoring a stream changed on disk: %v, want fsm.ErrCorrupt", err)
	}
	if dst.AppliedIndex() != 0 {
		t.Fatalf("a refused restore left applied index %d", dst.AppliedIndex())
	}

	if err := os.WriteFile(file, stream[:len(stream)-1], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := open(); err == nil {
		t.Fatal("a truncated snapshot file opened without an error")
	}
}

// TestAReceivedStreamIsStagedAsItArrivesAndRestoredWithoutBeingBuiltAgain:
// a stream written to the snapshot store (as Raft writes the one a leader
// sends) is built into a state as it arrives, and the Restore Raft runs
// afterwards swaps that state in; a stream canceled half way stages
// nothing; a reference (this node's own snapshots) is only stored; and a
// stored stream that changed on disk before the restore is refused.
func TestAReceivedStreamIsStagedAsItArrivesAndRestoredWithoutBeingBuiltAgain(t *testing.T) {
	src := filledFSM(t)
	streamOf := func(f *fsm.FSM) []byte {
		t.Helper()
		size, rc, err := f.OpenSnapshotStream(f.AppliedIndex())
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil || int64(len(b)) != size {
			t.Fatalf("read %d bytes of a %d-byte stream: %v", len(b), size, err)
		}
		return b
	}
	stream := streamOf(src)

	dir, stateDir := t.TempDir(), filepath.Join(t.TempDir(), "state")
	dst, err := fsm.Open(stateDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	files, err := raft.NewFileSnapshotStore(dir, 5, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	store := snapshotStore{FileSnapshotStore: files, fsm: dst, dir: dir}
	nothingStaged := func(when string) {
		t.Helper()
		if _, err := os.Stat(stateDir + ".restore"); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s: a state is staged (%v)", when, err)
		}
	}
	// write writes b to a new snapshot in pieces, the first shorter than
	// the stream's magic.
	write := func(b []byte) raft.SnapshotSink {
		t.Helper()
		sink, err := store.Create(raft.SnapshotVersionMax, 50, 1, raft.Configuration{}, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		for len(b) > 0 {
			n := min(len(b), 1000)
			if len(b) == len(stream) {
				n = 5
			}
			if _, err := sink.Write(b[:n]); err != nil {
				t.Fatal(err)
			}
			b = b[n:]
		}
		return sink
	}
	restore := func(id string) error {
		t.Helper()
		_, rc, err := store.Open(id)
		if err != nil {
			t.Fatal(err)
		}
		return dst.Restore(rc)
	}

	// Canceled half way: nothing staged.
	if err := write(stream[:len(stream)/2]).Cancel(); err != nil {
		t.Fatal(err)
	}
	nothingStaged("after a canceled snapshot")

	// This node's own snapshot: a reference, stored only.
	snap, err := dst.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink, err := store.Create(raft.SnapshotVersionMax, 0, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	nothingStaged("after a reference was persisted")

	// Received whole: staged, then swapped in by the restore.
	sink = write(stream)
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	if err := restore(sink.ID()); err != nil {
		t.Fatal(err)
	}
	if c := dst.SnapshotCounts(); c.Restored != 1 || c.Staged != 1 {
		t.Fatalf("after the restore of a received stream: %+v; want Restored 1, Staged 1", c)
	}
	if got := streamOf(dst); !bytes.Equal(got, stream) || dst.AppliedIndex() != 50 {
		t.Fatalf("the restored state's stream is %d bytes at index %d; the sender's %d bytes at 50", len(got), dst.AppliedIndex(), len(stream))
	}
	nothingStaged("after the restore")

	// Received whole, then changed on disk before the restore: refused.
	src.Apply(&raft.Log{Index: 51, Type: raft.LogCommand, Data: command.Encode(nil, &command.Command{Type: command.TypeCommit, Now: 1, Commit: &command.Commit{Mutations: []command.Mutation{
		{Op: command.OpPut, Namespace: "ns", Key: []byte("new"), Value: []byte("v")}}}})})
	stream = streamOf(src)
	sink = write(stream)
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(stream)
	flipped[len(flipped)/2] ^= 0x01
	if err := os.WriteFile(filepath.Join(dir, "snapshots", sink.ID(), "state.bin"), flipped, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := restore(sink.ID()); !errors.Is(err, fsm.ErrCorrupt) {
		t.Fatalf("restoring a staged stream changed on disk: %v, want fsm.ErrCorrupt", err)
	}
	if dst.AppliedIndex() != 50 {
		t.Fatalf("a refused restore moved the state to index %d", dst.AppliedIndex())
	}
	nothingStaged("after a refused restore")
}

// TestADamagedStreamIsNotStoredAndTheNodeStillRestarts: a stream received
// from a leader whose bytes were damaged on the way is refused when Raft
// finalizes it (the sink's Close): staging has read it whole and found its
// checksum wrong, or its first bytes are neither a stream's nor a
// reference's magic. It is not kept as this node's newest snapshot, and
// the leader sends it again. Kept, its Restore would fail, and so would
// every restart after (catchUpFromSnapshot restores the newest snapshot
// the state is behind), until the data dir is wiped.
func TestADamagedStreamIsNotStoredAndTheNodeStillRestarts(t *testing.T) {
	src := filledFSM(t)
	size, rc, err := src.OpenSnapshotStream(src.AppliedIndex())
	if err != nil {
		t.Fatal(err)
	}
	stream, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || int64(len(stream)) != size {
		t.Fatalf("read %d bytes of a %d-byte stream: %v", len(stream), size, err)
	}
	for name, at := range map[string]int{"in its records": len(stream) / 2, "in its magic": 3} {
		t.Run(name, func(t *testing.T) {
			damaged := bytes.Clone(stream)
			damaged[at] ^= 0x01
			damagedStreamIsNotStored(t, damaged)
		})
	}
}

func damagedStreamIsNotStored(t *testing.T, damaged []byte) {
	cfg := testConfig(t.TempDir())
	s := openStore(t, cfg)
	addOne(t, s)
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		t.Fatal(err)
	}
	before, err := s.snaps.List()
	if err != nil {
		t.Fatal(err)
	}
	// As Raft's installSnapshot receives it: Create, the bytes, Close.
	sink, err := s.snaps.Create(raft.SnapshotVersionMax, 1000, 1, cf.Configuration(), 1, s.transport)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write(damaged); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); !errors.Is(err, fsm.ErrCorrupt) {
		t.Errorf("finalizing a damaged stream = %v, want fsm.ErrCorrupt", err)
		// What Raft then does with a stored snapshot: restore it.
		if _, rc, err := s.snaps.Open(sink.ID()); err == nil {
			if err := s.fsm.Restore(rc); !errors.Is(err, fsm.ErrCorrupt) {
				t.Fatalf("restore of the damaged stream = %v, want fsm.ErrCorrupt", err)
			}
		}
	}
	if after, err := s.snaps.List(); err != nil || len(after) != len(before) {
		t.Errorf("%d snapshots stored after the damaged one was refused (%v); %d before", len(after), err, len(before))
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, stateDirName+".restore")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a state is left staged from the damaged stream (%v)", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, cfg)
	defer s.Close()
	if got := counter(t, s); got != 1 {
		t.Fatalf("counter after the restart = %d, want 1", got)
	}
}
