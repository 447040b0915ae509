package raftstore

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/fsm"
)

// snapshotStore is the snapshot store Raft is given: a FileSnapshotStore
// whose Open turns the snapshots this node took into the state they refer
// to.
//
// A snapshot this node takes holds only a reference to its state
// (fsm.Snapshot): the state is durably in Pebble, so compacting the log
// costs a few bytes whatever the state's size, where a copy of the whole
// state would double the bytes written under heavy commits. A snapshot
// Raft opens is either sent to a follower or restored into a state machine
// that is behind it; for a reference, Open reads the current state as a
// snapshot stream, the format a follower restores, with its exact size in
// the metadata (a follower refuses a snapshot of another size). A snapshot
// received from a leader is a stream already and is opened as stored,
// without the file snapshot store's CRC-64 pass (see openStream).
type snapshotStore struct {
	*raft.FileSnapshotStore
	fsm *fsm.FSM
	dir string // the FileSnapshotStore's base: snapshots are in dir/snapshots/<id>
}

// Open opens snapshot id as a stream of the state.
func (s snapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	if meta, rc := s.openStream(id); rc != nil {
		return meta, rc, nil
	}
	meta, rc, err := s.FileSnapshotStore.Open(id)
	if err != nil {
		return nil, nil, err
	}
	if meta.Size != int64(fsm.SnapshotRefSize) {
		return meta, rc, nil
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("raftstore: read snapshot %s: %w", id, err)
	}
	applied, isRef, err := fsm.DecodeSnapshotRef(b)
	if err != nil {
		return nil, nil, fmt.Errorf("raftstore: snapshot %s: %w", id, err)
	}
	if !isRef { // a stream that happens to be a reference's size
		return meta, io.NopCloser(bytes.NewReader(b)), nil
	}
	size, stream, err := s.fsm.OpenSnapshotStream(applied)
	if err != nil {
		return nil, nil, fmt.Errorf("raftstore: snapshot %s: %w", id, err)
	}
	m := *meta
	m.Size = size
	return &m, stream, nil
}

// openStream opens snapshot id, if it is a stream received from a leader,
// straight from its file, or returns a nil reader.
//
// FileSnapshotStore.Open reads the whole file to check its CRC-64 before
// it returns it, and the reader then reads it again: for a stream of the
// state, a second pass over the state's size (about 1 s for 1 GB here,
// BENCHMARKS.md). A stream carries its own CRC-32C, which Restore checks
// before it swaps anything in, and which a follower this node sends the
// stream to checks too, so the CRC-64 adds nothing to it. The file is
// opened the way FileSnapshotStore lays it out (state.bin in the
// snapshot's directory); a snapshot not listed, a reference, or a file
// of another size than its metadata says goes through
// FileSnapshotStore.Open, checks and all.
func (s snapshotStore) openStream(id string) (*raft.SnapshotMeta, io.ReadCloser) {
	if s.dir == "" {
		return nil, nil
	}
	metas, err := s.FileSnapshotStore.List()
	if err != nil {
		return nil, nil
	}
	var meta *raft.SnapshotMeta
	for _, m := range metas {
		if m.ID == id {
			meta = m
		}
	}
	if meta == nil || meta.Size == int64(fsm.SnapshotRefSize) {
		return nil, nil
	}
	f, err := os.Open(filepath.Join(s.dir, "snapshots", id, "state.bin"))
	if err != nil {
		return nil, nil
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != meta.Size {
		f.Close()
		return nil, nil
	}
	return meta, bufferedFile{bufio.NewReaderSize(f, 1<<20), f}
}

// bufferedFile reads a file through a buffer and closes the file.
type bufferedFile struct {
	*bufio.Reader
	f *os.File
}

func (b bufferedFile) Close() error { return b.f.Close() }
