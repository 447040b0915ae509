package raftstore

import (
	"bytes"
	"fmt"
	"io"

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
// received from a leader is a stream already and is opened as stored.
type snapshotStore struct {
	*raft.FileSnapshotStore
	fsm *fsm.FSM
}

// Open opens snapshot id as a stream of the state.
func (s snapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
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
