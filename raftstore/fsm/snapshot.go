package fsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// A snapshot stream is the magic, then (key, value) records with uvarint
// lengths, then a zero key length and the CRC-32C of everything before it.
// Keys are never empty, so a zero length ends the records.
const snapshotMagic = "stated-fsm-snapshot-v1\n"

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Snapshot captures the state for Raft. It first syncs Pebble's WAL so that
// the state on disk is at least as new as the snapshot: Raft may compact its
// log up to the snapshot, and restart replays only the entries after it.
// Persist streams from a Pebble snapshot while Apply goes on.
//
// Raft persists a snapshot on a goroutine of its own, and does not order
// it with Restore or with the state machine's Close: both wait for a
// Persist that is running, and detach the snapshots not yet persisted
// (their Persist then fails), before they close the database.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, ErrClosed
	}
	if err := f.db.LogData([]byte("snapshot"), pebble.Sync); err != nil {
		return nil, fmt.Errorf("fsm: sync before snapshot: %w", err)
	}
	s := &snapshot{live: &f.snaps, snap: f.db.NewSnapshot(), counts: &f.logBytes}
	s.from = f.logBytes.markSnapshot()
	f.snaps.add(s)
	return s, nil
}

// errSnapshotDetached is returned by Persist when the state the snapshot
// was taken of has been replaced by Restore or closed.
var errSnapshotDetached = errors.New("fsm: the state was replaced by a restore or closed before the snapshot was persisted")

// liveSnapshots are the snapshots handed to Raft that still hold a Pebble
// snapshot of the current database.
type liveSnapshots struct {
	mu         sync.Mutex
	cond       sync.Cond // signalled when a Persist ends
	set        map[*snapshot]struct{}
	persisting int

	// persisted and restored count snapshots since Open; see
	// SnapshotCounts.
	persisted, restored atomic.Uint64
}

// SnapshotCounts are the snapshots of the state since the FSM was opened.
type SnapshotCounts struct {
	// Persisted counts snapshots Raft took that were written and closed.
	Persisted uint64
	// Restored counts snapshots that replaced the state: sent by the
	// leader (InstallSnapshot), or restored when the node started behind
	// its newest local snapshot.
	Restored uint64
}

// SnapshotCounts returns the snapshot counts; cheap.
func (f *FSM) SnapshotCounts() SnapshotCounts {
	return SnapshotCounts{Persisted: f.snaps.persisted.Load(), Restored: f.snaps.restored.Load()}
}

func (l *liveSnapshots) init() {
	l.cond.L = &l.mu
	l.set = map[*snapshot]struct{}{}
}

func (l *liveSnapshots) add(s *snapshot) {
	l.mu.Lock()
	l.set[s] = struct{}{}
	l.mu.Unlock()
}

// beginPersist marks s as being persisted, or fails if it was detached.
func (l *liveSnapshots) beginPersist(s *snapshot) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s.snap == nil || s.persisting {
		return errSnapshotDetached
	}
	s.persisting = true
	l.persisting++
	return nil
}

// endPersist frees s's Pebble snapshot: once written, it is not read again.
func (l *liveSnapshots) endPersist(s *snapshot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s.snap.Close()
	s.snap = nil
	delete(l.set, s)
	l.persisting--
	l.cond.Broadcast()
}

func (l *liveSnapshots) release(s *snapshot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s.snap != nil && !s.persisting {
		s.snap.Close()
		s.snap = nil
		delete(l.set, s)
	}
}

// detachAll waits for every running Persist to end and frees the Pebble
// snapshots of the others, whose Persist will fail. After it, no snapshot
// reads the database, which may then be closed.
func (l *liveSnapshots) detachAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.persisting > 0 {
		l.cond.Wait()
	}
	for s := range l.set {
		s.snap.Close()
		s.snap = nil
	}
	clear(l.set)
}

type snapshot struct {
	live *liveSnapshots
	// snap is nil once the snapshot is persisted, released or detached;
	// persisting is set while Persist writes. Both are guarded by live.mu.
	snap       *pebble.Snapshot
	persisting bool

	// counts is the state machine's log byte count, whose mark Snapshot
	// moved from; Release moves it back unless Persist succeeded.
	counts    *logBytes
	from      markFrom
	persisted bool
}

// Persist writes the snapshot to sink and closes it, or cancels it on error.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.live.beginPersist(s); err != nil {
		sink.Cancel()
		return err
	}
	cw := &countingWriter{w: sink}
	err := s.write(cw)
	s.live.endPersist(s)
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("fsm: persist snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return err
	}
	s.live.persisted.Add(1)
	s.persisted = true
	s.counts.state.Store(cw.n)
	return nil
}

func (s *snapshot) write(w io.Writer) error {
	crc := crc32.New(crcTable)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 1<<20)
	if _, err := bw.WriteString(snapshotMagic); err != nil {
		return err
	}
	it, err := s.snap.NewIter(nil)
	if err != nil {
		return err
	}
	var lenBuf [binary.MaxVarintLen64]byte
	for ok := it.First(); ok; ok = it.Next() {
		for _, b := range [][]byte{it.Key(), it.Value()} {
			n := binary.PutUvarint(lenBuf[:], uint64(len(b)))
			if _, err := bw.Write(lenBuf[:n]); err != nil {
				it.Close()
				return err
			}
			if _, err := bw.Write(b); err != nil {
				it.Close()
				return err
			}
		}
	}
	if err := it.Close(); err != nil {
		return err
	}
	if err := bw.WriteByte(0); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err = w.Write(binary.BigEndian.AppendUint32(nil, crc.Sum32()))
	return err
}

// Release frees the Pebble snapshot, if Persist has not. Raft calls it
// after Persist, on the same goroutine; a snapshot not persisted leaves
// the log uncompacted, so its mark of the log's bytes is undone.
func (s *snapshot) Release() {
	s.live.release(s)
	if !s.persisted {
		s.counts.unmark(s.from)
	}
}

// SnapshotAppliedIndex reads the applied index held by the state in a
// snapshot stream, without reading the rest of it: the applied index is
// among the first records. A state that never applied an entry has 0.
func SnapshotAppliedIndex(r io.Reader) (uint64, error) {
	cr := &crcReader{r: bufio.NewReader(r), h: crc32.New(crcTable)}
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(cr, magic); err != nil || string(magic) != snapshotMagic {
		return 0, fmt.Errorf("%w: not a stated snapshot", ErrCorrupt)
	}
	for {
		key, err := readRecord(cr)
		if err != nil || key == nil {
			return 0, err
		}
		val, err := readRecord(cr)
		if err != nil {
			return 0, err
		}
		switch c := bytes.Compare(key, keyAppliedIndex); {
		case c > 0:
			return 0, nil // records are in key order: there is none
		case c == 0:
			if len(val) != 8 {
				return 0, fmt.Errorf("%w: applied index of %d bytes", ErrCorrupt, len(val))
			}
			return binary.BigEndian.Uint64(val), nil
		}
	}
}

// Restore replaces the whole state with the snapshot in rc. The new state is
// built beside the current one, synced, and swapped in by renames, so a
// crash leaves either the old state or the new one (see
// recoverInterruptedRestore), never a mix.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	tmp := f.dir + ".restore"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	cr := &countingReader{ReadCloser: rc}
	if err := f.buildFromSnapshot(tmp, cr); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("fsm: restore: %w", err)
	}

	f.ckptWG.Wait()     // a local checkpoint reads the database being replaced
	f.snaps.detachAll() // so does a snapshot Raft persists, unordered with us
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		os.RemoveAll(tmp)
		return ErrClosed
	}
	f.snaps.detachAll() // none can start now; this only makes sure
	if err := f.db.Close(); err != nil {
		// The state is being replaced: what matters is the new one.
		f.logger.Warn("fsm: restore: closing the replaced state failed", "error", err)
	}
	if err := f.swapIn(tmp); err != nil {
		return f.reopenAfterFailedSwap(fmt.Errorf("fsm: restore: %w", err))
	}
	f.snaps.restored.Add(1)
	// The log now starts after the restored snapshot.
	f.logBytes.markSnapshot()
	f.logBytes.state.Store(cr.n)
	return nil
}

// swapIn renames the state built in tmp into place and opens it. f.mu is
// held and the current database closed.
func (f *FSM) swapIn(tmp string) error {
	old := f.dir + ".old"
	if err := os.Rename(f.dir, old); err != nil {
		return err
	}
	if err := os.Rename(tmp, f.dir); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(f.dir)); err != nil {
		return err
	}
	if err := os.RemoveAll(old); err != nil {
		f.logger.Warn("fsm: could not remove the replaced state", "dir", old, "error", err)
	}
	return f.reopen()
}

// reopen opens the database in f.dir and reads its applied index.
func (f *FSM) reopen() error {
	db, err := f.openPebble(f.dir)
	if err != nil {
		return err
	}
	idx, err := readAppliedIndex(db)
	if err != nil {
		db.Close()
		return err
	}
	f.db = db
	f.setApplied(idx)
	return nil
}

// reopenAfterFailedSwap puts whichever state is whole back in place (see
// recoverInterruptedRestore) and reopens it, so that the state machine
// is never left with a closed database; if even that fails, it is marked
// closed, and Apply and reads return ErrClosed.
func (f *FSM) reopenAfterFailedSwap(err error) error {
	rerr := recoverInterruptedRestore(f.dir)
	if rerr == nil {
		rerr = f.reopen()
	}
	if rerr != nil {
		f.closed = true
		f.notifyApplied()
		f.logger.Error("fsm: restore failed and the state could not be reopened; the state machine is closed", "error", rerr)
		return errors.Join(err, rerr)
	}
	return err
}

func (f *FSM) buildFromSnapshot(dir string, r io.Reader) error {
	cr := &crcReader{r: bufio.NewReaderSize(r, 1<<20), h: crc32.New(crcTable)}
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(cr, magic); err != nil || string(magic) != snapshotMagic {
		return fmt.Errorf("%w: not a stated snapshot", ErrCorrupt)
	}
	db, err := f.openPebble(dir)
	if err != nil {
		return err
	}
	if err := loadRecords(db, cr); err != nil {
		db.Close()
		return err
	}
	return db.Close()
}

// crcReader hashes exactly the bytes its reader has consumed.
type crcReader struct {
	r *bufio.Reader
	h hash.Hash32
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	return n, err
}

func (c *crcReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.h.Write([]byte{b})
	}
	return b, err
}

// loadRecords writes the records of a snapshot stream into db in batches,
// checks the trailing checksum and syncs.
func loadRecords(db *pebble.DB, cr *crcReader) error {
	b := db.NewBatch()
	defer func() { b.Close() }()
	for {
		key, err := readRecord(cr)
		if err != nil {
			return err
		}
		if key == nil {
			break
		}
		val, err := readRecord(cr)
		if err != nil {
			return err
		}
		if val == nil {
			val = []byte{}
		}
		if err := b.Set(key, val, nil); err != nil {
			return err
		}
		if b.Len() >= 4<<20 {
			if err := b.Commit(pebble.NoSync); err != nil {
				return err
			}
			b.Close()
			b = db.NewBatch()
		}
	}
	want := cr.h.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(cr.r, sum[:]); err != nil {
		return fmt.Errorf("%w: snapshot without checksum", ErrCorrupt)
	}
	if binary.BigEndian.Uint32(sum[:]) != want {
		return fmt.Errorf("%w: snapshot checksum mismatch", ErrCorrupt)
	}
	return b.Commit(pebble.Sync)
}

func readRecord(r *crcReader) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("%w: truncated snapshot: %v", ErrCorrupt, err)
	}
	if n == 0 {
		return nil, nil
	}
	if n > 1<<30 {
		return nil, fmt.Errorf("%w: snapshot record of %d bytes", ErrCorrupt, n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("%w: truncated snapshot: %v", ErrCorrupt, err)
	}
	return buf, nil
}
