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
// stream, to the state machine's StageSnapshot through a chunkQueue. The
// file is what Raft keeps and may send on; staging is an optimisation
// only: if it fails, the stream is stored all the same and Restore builds
// the state from it. Except if it failed because the stream is damaged
// (fsm.ErrCorrupt: its checksum or records, which Restore reads with the
// same code): then Close refuses it (see Close).
type stagingSink struct {
	raft.SnapshotSink
	fsm    *fsm.FSM
	logger *slog.Logger

	head    []byte // the first bytes, until they tell a stream from a reference
	decided bool
	q       *chunkQueue // nil when not staging
	done    chan error  // StageSnapshot's result, once staging started
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
		s.q, s.done = newChunkQueue(), make(chan error, 1)
		go func(q *chunkQueue, done chan<- error) {
			err := s.fsm.StageSnapshot(q)
			q.stop()
			done <- err
		}(s.q, s.done)
		s.q.write(s.head)
	}
	if s.q != nil && len(p) > 0 {
		s.q.write(p)
	}
}

// finish ends the stream to the stager, or cancels it with cause, and
// returns whether a state was staged, and the stager's error if not.
func (s *stagingSink) finish(cause error) (bool, error) {
	if s.done == nil {
		return false, nil
	}
	s.q.close(cause)
	err := <-s.done
	s.done = nil
	return err == nil && cause == nil, err
}

// Close stores the snapshot; the state staged from it stays staged for
// Restore.
//
// A stream that staging found damaged, or bytes that begin neither a
// stream nor a reference, are not stored: the sink is canceled and Close
// fails, so Raft fails the install and the leader sends the stream again.
// Stored, it would be the newest snapshot, whose Restore fails the same
// way, and every start after it too (catchUpFromSnapshot restores the
// newest snapshot the state is behind) until the data dir is wiped.
func (s *stagingSink) Close() error {
	staged, err := s.finish(nil)
	if !fsm.IsSnapshotHead(s.head) {
		err = fmt.Errorf("%w: it begins with neither a snapshot stream's nor a snapshot reference's magic", fsm.ErrCorrupt)
	}
	switch {
	case errors.Is(err, fsm.ErrCorrupt):
		s.SnapshotSink.Cancel()
		return fmt.Errorf("raftstore: snapshot %s was received damaged and is not stored: %w", s.ID(), err)
	case err != nil:
		s.logger.Warn("raftstore: could not build the snapshot's state as it was received; restoring it from the stored stream", "snapshot", s.ID(), "error", err)
	}
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

// chunkQueue carries the bytes a sink is written from its writer (Raft
// reading the leader's connection) to a reader (the stager) in chunks of
// chunkSize, up to queueChunks of them in flight, so that neither waits
// for the other chunk by chunk: an io.Pipe hands every 32 KiB write over
// and waits until it is read, which made receiving and staging take turns
// (BENCHMARKS.md). Once the reader stopped, writes are dropped.
type chunkQueue struct {
	full    chan []byte   // chunks written, in order; closed by close
	free    chan []byte   // chunks read, to be written again
	stopped chan struct{} // closed when the reader stops reading
	made    int           // chunks allocated so far
	cur     []byte        // the chunk being written
	cause   error         // what the reader gets after the last chunk; set before full is closed

	chunk, next []byte // the reader's chunk, and what is left of it to read
}

const (
	chunkSize   = 1 << 20
	queueChunks = 32
)

func newChunkQueue() *chunkQueue {
	return &chunkQueue{
		full:    make(chan []byte, queueChunks),
		free:    make(chan []byte, queueChunks),
		stopped: make(chan struct{}),
	}
}

// write copies p into the queue; it waits only while queueChunks chunks
// are unread.
func (q *chunkQueue) write(p []byte) {
	for len(p) > 0 {
		if q.cur == nil {
			select {
			case q.cur = <-q.free:
			default:
				if q.made < queueChunks {
					q.made++
					q.cur = make([]byte, 0, chunkSize)
				} else {
					select {
					case q.cur = <-q.free:
					case <-q.stopped:
						return
					}
				}
			}
			q.cur = q.cur[:0]
		}
		n := min(len(p), chunkSize-len(q.cur))
		q.cur = append(q.cur, p[:n]...)
		p = p[n:]
		if len(q.cur) == chunkSize && !q.send() {
			return
		}
	}
}

// send queues the chunk being written; false if the reader stopped.
func (q *chunkQueue) send() bool {
	select {
	case q.full <- q.cur:
		q.cur = nil
		return true
	case <-q.stopped:
		q.cur = nil
		return false
	}
}

// close queues what is written and ends the stream: the reader reads io.EOF
// after it if cause is nil, cause if not. Called once (stagingSink.finish).
func (q *chunkQueue) close(cause error) {
	if len(q.cur) > 0 && cause == nil {
		q.send()
	}
	q.cause = cause
	close(q.full)
}

// Read reads the chunks in order.
func (q *chunkQueue) Read(p []byte) (int, error) {
	for len(q.next) == 0 {
		c, ok := <-q.full
		if !ok {
			if q.cause != nil {
				return 0, q.cause
			}
			return 0, io.EOF
		}
		q.chunk, q.next = c, c
	}
	n := copy(p, q.next)
	q.next = q.next[n:]
	if len(q.next) == 0 {
		q.free <- q.chunk // never blocks: free has room for every chunk
		q.chunk = nil
	}
	return n, nil
}

// stop tells the writer that the reader reads no more.
func (q *chunkQueue) stop() { close(q.stopped) }

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
