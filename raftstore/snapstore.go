package raftstore

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	fsm    *fsm.FSM
	dir    string // the FileSnapshotStore's base: snapshots are in dir/snapshots/<id>
	logger *slog.Logger
}

// Create creates a snapshot in the file store. A snapshot stream written
// to it (one a leader sends this node) is also staged as it arrives: the
// state machine builds the state it holds beside the current one, so that
// the Restore Raft runs once the stream is stored swaps that state in
// instead of reading the stream back into tables (fsm.StageSnapshot). A
// reference, what this node's own snapshots write, is only stored.
func (s snapshotStore) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.FileSnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil || s.fsm == nil {
		return sink, err
	}
	logger := s.logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &stagingSink{SnapshotSink: sink, fsm: s.fsm, logger: logger}, nil
}

// stagingSink writes a snapshot to the file store's sink and, if it is a
// stream, to the state machine's StageSnapshot through a pipe. The file
// is what Raft keeps and may send on; staging is an optimisation only: if
// it fails, the stream is stored all the same and Restore builds the
// state from it.
type stagingSink struct {
	raft.SnapshotSink
	fsm    *fsm.FSM
	logger *slog.Logger

	head    []byte // the first bytes, until they tell a stream from a reference
	decided bool
	pw      *io.PipeWriter // nil when not staging, or once staging stopped
	done    chan error     // StageSnapshot's result, once staging started
}

func (s *stagingSink) Write(p []byte) (int, error) {
	n, err := s.SnapshotSink.Write(p)
	s.stage(p[:n])
	return n, err
}

// stage passes p, written to the file, on to the stager.
func (s *stagingSink) stage(p []byte) {
	if !s.decided {
		take := min(fsm.SnapshotStreamMagicSize-len(s.head), len(p))
		s.head = append(s.head, p[:take]...)
		p = p[take:]
		if len(s.head) < fsm.SnapshotStreamMagicSize {
			return
		}
		s.decided = true
		if !fsm.IsSnapshotStream(s.head) {
			return
		}
		pr, pw := io.Pipe()
		s.pw, s.done = pw, make(chan error, 1)
		go func() {
			err := s.fsm.StageSnapshot(pr)
			if err == nil {
				err = errStagingEnded
			}
			pr.CloseWithError(err) // a later Write returns at once
			if err == errStagingEnded {
				err = nil
			}
			s.done <- err
		}()
		s.feed(s.head)
	}
	if len(p) > 0 {
		s.feed(p)
	}
}

var errStagingEnded = errors.New("raftstore: staging ended")

func (s *stagingSink) feed(p []byte) {
	if s.pw == nil {
		return
	}
	if _, err := s.pw.Write(p); err != nil {
		s.pw = nil // the stager stopped; finish says why
	}
}

// finish ends the stream to the stager, or cancels it with cause, and
// returns whether a state was staged.
func (s *stagingSink) finish(cause error) bool {
	if s.done == nil {
		return false
	}
	if s.pw != nil {
		s.pw.CloseWithError(cause) // nil: the end of the stream
		s.pw = nil
	}
	err := <-s.done
	s.done = nil
	if err != nil && cause == nil {
		s.logger.Warn("raftstore: could not build the snapshot's state as it was received; restoring it from the stored stream", "snapshot", s.ID(), "error", err)
	}
	return err == nil && cause == nil
}

// Close stores the snapshot; the state staged from it stays staged for
// Restore.
func (s *stagingSink) Close() error {
	staged := s.finish(nil)
	if err := s.SnapshotSink.Close(); err != nil {
		if staged {
			s.fsm.DropStaged()
		}
		return err
	}
	return nil
}

// Cancel throws the snapshot away, and what was staged of it.
func (s *stagingSink) Cancel() error {
	s.finish(errSnapshotCanceled)
	return s.SnapshotSink.Cancel()
}

var errSnapshotCanceled = errors.New("raftstore: snapshot canceled")

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
