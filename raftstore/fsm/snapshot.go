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
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// A snapshot stream is the magic, then (key, value) records with uvarint
// lengths, then a zero key length and the CRC-32C of everything before it.
// Keys are never empty, so a zero length ends the records. It is the form
// the whole state travels in: Raft sends it to a follower
// (InstallSnapshot), and Restore reads it.
const snapshotMagic = "stated-fsm-snapshot-v1\n"

// A snapshot reference is what Persist writes for a snapshot this node
// takes: the magic, the applied index of the state it was taken of (8
// bytes, big-endian) and the CRC-32C of both. The state itself stays in
// Pebble, which holds it durably (Snapshot synced it) and only moves
// forward; OpenSnapshotStream turns the reference into a stream when a
// follower needs one. This is how etcd and CockroachDB treat a state
// machine that lives on disk: compacting the log does not copy the state.
const snapshotRefMagic = "stated-fsm-snapshot-ref-v1\n"

// SnapshotRefSize is the size of a snapshot reference.
const SnapshotRefSize = len(snapshotRefMagic) + 8 + 4

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrStateBehindSnapshot is returned when a snapshot taken here refers to
// a state newer than the one on disk: the state directory was replaced or
// lost since, and the snapshot cannot bring it back.
var ErrStateBehindSnapshot = errors.New("fsm: the state on disk is behind the snapshot that refers to it")

// Snapshot captures the state for Raft. It syncs Pebble's WAL, so that the
// state on disk is at least as new as the snapshot: Raft then compacts its
// log up to the snapshot, and a restart replays only the entries after it
// (the state machine skips those it holds). Persist writes only a
// reference to that state (see snapshotRefMagic), in constant time
// whatever the state's size.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, ErrClosed
	}
	if err := f.db.LogData([]byte("snapshot"), pebble.Sync); err != nil {
		return nil, fmt.Errorf("fsm: sync before snapshot: %w", err)
	}
	s := &snapshot{applied: f.applied.Load(), live: &f.snaps, counts: &f.logBytes}
	s.from = f.logBytes.markSnapshot()
	return s, nil
}

// errSnapshotDetached is returned by a snapshot stream's Read when the
// state it was reading has been replaced by Restore or closed.
var errSnapshotDetached = errors.New("fsm: the state was replaced by a restore or closed while a snapshot of it was being read")

// liveSnapshots are the snapshot streams that hold a Pebble snapshot of
// the current database.
type liveSnapshots struct {
	mu      sync.Mutex
	cond    sync.Cond // signalled when a read of a stream ends
	set     map[*stream]struct{}
	reading int

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
	l.set = map[*stream]struct{}{}
}

func (l *liveSnapshots) add(s *stream) {
	l.mu.Lock()
	l.set[s] = struct{}{}
	l.mu.Unlock()
}

// beginRead marks s as being read, or fails if it was detached.
func (l *liveSnapshots) beginRead(s *stream) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s.snap == nil {
		return errSnapshotDetached
	}
	l.reading++
	return nil
}

func (l *liveSnapshots) endRead() {
	l.mu.Lock()
	l.reading--
	l.cond.Broadcast()
	l.mu.Unlock()
}

// release frees s's iterator and Pebble snapshot; called by the stream's
// own reader (Close), never during one of its reads.
func (l *liveSnapshots) release(s *stream) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s.free()
	delete(l.set, s)
}

// detachAll waits for every read of a stream to end and frees the Pebble
// snapshots of all of them, whose next Read fails. After it, no snapshot
// reads the database, which may then be closed. A read is at most one
// chunk (streamChunk), so the wait is short; a stream's size pass
// (OpenSnapshotStream) is one read of the whole state.
func (l *liveSnapshots) detachAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.reading > 0 {
		l.cond.Wait()
	}
	for s := range l.set {
		s.free()
	}
	clear(l.set)
}

// snapshot is what Raft persists: a reference to the state at applied.
type snapshot struct {
	applied uint64
	live    *liveSnapshots
	// counts is the state machine's log byte count, whose mark Snapshot
	// moved from; Release moves it back unless Persist succeeded.
	counts    *logBytes
	from      markFrom
	persisted bool
}

// Persist writes the snapshot's reference to sink and closes it, or
// cancels it on error.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(encodeSnapshotRef(s.applied)); err != nil {
		sink.Cancel()
		return fmt.Errorf("fsm: persist snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return err
	}
	s.live.persisted.Add(1)
	s.persisted = true
	return nil
}

// Release undoes the snapshot's mark of the log's bytes unless Persist
// succeeded: a snapshot not persisted leaves the log uncompacted. Raft
// calls it after Persist, on the same goroutine.
func (s *snapshot) Release() {
	if !s.persisted {
		s.counts.unmark(s.from)
	}
}

func encodeSnapshotRef(applied uint64) []byte {
	b := binary.BigEndian.AppendUint64([]byte(snapshotRefMagic), applied)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

// DecodeSnapshotRef reads a snapshot reference: the applied index of the
// state it refers to. ok is false if b is not a reference (it may be a
// snapshot stream); err is set if it is one, damaged.
func DecodeSnapshotRef(b []byte) (applied uint64, ok bool, err error) {
	if len(b) != SnapshotRefSize || !bytes.HasPrefix(b, []byte(snapshotRefMagic)) {
		return 0, false, nil
	}
	n := len(snapshotRefMagic) + 8
	if crc32.Checksum(b[:n], crcTable) != binary.BigEndian.Uint32(b[n:]) {
		return 0, true, fmt.Errorf("%w: snapshot reference checksum mismatch", ErrCorrupt)
	}
	return binary.BigEndian.Uint64(b[len(snapshotRefMagic):n]), true, nil
}

// OpenSnapshotStream returns the current state as a snapshot stream and
// its exact size, for a snapshot whose reference holds applied: Raft
// sends a follower exactly that many bytes. The state may be newer than
// the reference: a follower that restores it skips the entries it already
// holds, as a restart does. ErrStateBehindSnapshot if the state is older.
//
// It reads the state twice, once to size the stream and once to send it,
// from one Pebble snapshot. Restore and Close wait for a read in progress
// and make the stream's next Read fail.
func (f *FSM) OpenSnapshotStream(applied uint64) (int64, io.ReadCloser, error) {
	s, err := f.newStream(applied)
	if err != nil {
		return 0, nil, err
	}
	size, err := s.size()
	if err != nil {
		s.Close()
		return 0, nil, fmt.Errorf("fsm: size the snapshot stream: %w", err)
	}
	return size, s, nil
}

func (f *FSM) newStream(applied uint64) (*stream, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, ErrClosed
	}
	// The applied index is stored after the entries it counts are in
	// Pebble, so a snapshot taken after it holds at least them.
	if have := f.applied.Load(); have < applied {
		return nil, fmt.Errorf("%w: the snapshot holds applied index %d, the state %d", ErrStateBehindSnapshot, applied, have)
	}
	s := &stream{live: &f.snaps, snap: f.db.NewSnapshot(), crc: crc32.New(crcTable)}
	f.snaps.add(s)
	return s, nil
}

// streamChunk is about how much of the stream one fill produces; a
// variable so that tests can read a small state in many chunks.
var streamChunk = 1 << 20

// stream is a snapshot stream read from a Pebble snapshot.
type stream struct {
	live *liveSnapshots
	// snap and it are nil once freed (closed or detached); guarded by
	// live.mu, and used only between beginRead and endRead. it is also nil
	// before the first fill.
	snap *pebble.Snapshot
	it   *pebble.Iterator

	buf    bytes.Buffer
	crc    hash.Hash32
	valid  bool // it is at a record not yet written
	done   bool // the checksum is in buf
	closed bool
}

// free closes the iterator and the Pebble snapshot; live.mu is held.
func (s *stream) free() {
	if s.it != nil {
		s.it.Close()
		s.it = nil
	}
	if s.snap != nil {
		s.snap.Close()
		s.snap = nil
	}
}

func uvarintLen(x uint64) int64 {
	n := int64(1)
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// size is the stream's length in bytes.
func (s *stream) size() (int64, error) {
	if err := s.live.beginRead(s); err != nil {
		return 0, err
	}
	defer s.live.endRead()
	it, err := s.snap.NewIter(nil)
	if err != nil {
		return 0, err
	}
	n := int64(len(snapshotMagic)) + 1 + 4
	for ok := it.First(); ok; ok = it.Next() {
		k, v := int64(len(it.Key())), int64(len(it.Value()))
		n += uvarintLen(uint64(k)) + k + uvarintLen(uint64(v)) + v
	}
	return n, it.Close()
}

func (s *stream) Read(p []byte) (int, error) {
	for s.buf.Len() == 0 {
		if s.done {
			return 0, io.EOF
		}
		if err := s.fill(); err != nil {
			return 0, err
		}
	}
	return s.buf.Read(p)
}

// fill writes the next chunk of the stream into buf.
func (s *stream) fill() error {
	if s.closed {
		return errors.New("fsm: read of a closed snapshot stream")
	}
	if err := s.live.beginRead(s); err != nil {
		return err
	}
	defer s.live.endRead()
	var out []byte
	if s.it == nil { // the first fill: the magic, and the iterator positioned
		it, err := s.snap.NewIter(nil)
		if err != nil {
			return err
		}
		s.it, s.valid = it, it.First()
		out = append(out, snapshotMagic...)
	}
	for s.valid && len(out) < streamChunk {
		for _, b := range [][]byte{s.it.Key(), s.it.Value()} {
			out = binary.AppendUvarint(out, uint64(len(b)))
			out = append(out, b...)
		}
		s.valid = s.it.Next()
	}
	if !s.valid {
		if err := s.it.Error(); err != nil {
			return err
		}
		out = append(out, 0)
	}
	s.crc.Write(out)
	s.buf.Write(out)
	if !s.valid {
		s.buf.Write(binary.BigEndian.AppendUint32(nil, s.crc.Sum32()))
		s.done = true
	}
	return nil
}

// Close frees the stream's Pebble snapshot.
func (s *stream) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.live.release(s)
	return nil
}

// SnapshotAppliedIndex reads the applied index held by the state in a
// snapshot stream, or by the state a snapshot reference refers to,
// without reading the rest of it: in a stream the applied index is among
// the first records. A state that never applied an entry has 0.
func SnapshotAppliedIndex(r io.Reader) (uint64, error) {
	br := bufio.NewReader(r)
	if head, _ := br.Peek(SnapshotRefSize); bytes.HasPrefix(head, []byte(snapshotRefMagic)) {
		applied, _, err := DecodeSnapshotRef(head)
		if err == nil && len(head) < SnapshotRefSize {
			err = fmt.Errorf("%w: truncated snapshot reference", ErrCorrupt)
		}
		return applied, err
	}
	cr := &crcReader{r: br, h: crc32.New(crcTable)}
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
	if err := f.buildFromSnapshot(tmp, rc); err != nil {
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
	f.storage.retire(f.db)
	if err := f.db.Close(); err != nil {
		// The state is being replaced: what matters is the new one.
		f.logger.Warn("fsm: restore: closing the replaced state failed", "error", err)
	}
	if err := f.swapIn(tmp); err != nil {
		return f.reopenAfterFailedSwap(fmt.Errorf("fsm: restore: %w", err))
	}
	f.snaps.restored.Add(1)
	f.breakCapture()
	// The log now starts after the restored snapshot.
	f.logBytes.markSnapshot()
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
	f.records.reset()
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
		if strings.HasPrefix(snapshotRefMagic, string(magic)) {
			return fmt.Errorf("%w: a snapshot reference refers to a state and does not hold one: open it with OpenSnapshotStream", ErrCorrupt)
		}
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
	f.storage.retire(db) // its flushes and compactions were the state's work too
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
