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

// TestAReceivedStreamIsOpenedAsStoredAndItsOwnChecksumGuardsIt: a snapshot
// received from a leader (a stream of the state) is opened straight from
// its file, byte for byte what was stored, without the file store's CRC-64
// pass. A stream whose bytes changed on disk still cannot be restored: its
// own CRC-32C refuses it. A file of another size than its metadata says is
// opened by the file store, whose check refuses it.
func TestAReceivedStreamIsOpenedAsStoredAndItsOwnChecksumGuardsIt(t *testing.T) {
	src, err := fsm.Open(filepath.Join(t.TempDir(), "state"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for i := uint64(1); i <= 50; i++ {
		data := command.Encode(nil, &command.Command{Type: command.TypeCommit, Now: 1, Commit: &command.Commit{Mutations: []command.Mutation{
			{Op: command.OpPut, Namespace: "ns", Key: []byte{byte(i)}, Value: bytes.Repeat([]byte{byte(i)}, 4<<10)}}}})
		if res := src.Apply(&raft.Log{Index: i, Type: raft.LogCommand, Data: data}).(*fsm.Result); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
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
