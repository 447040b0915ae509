package fsm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
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
	persisted, restored, staged atomic.Uint64
}

// SnapshotCounts are the snapshots of the state since the FSM was opened.
type SnapshotCounts struct {
	// Persisted counts snapshots Raft took that were written and closed.
	Persisted uint64
	// Restored counts snapshots that replaced the state: sent by the
	// leader (InstallSnapshot), or restored when the node started behind
	// its newest local snapshot.
	Restored uint64
	// Staged counts, of Restored, the snapshots whose state was built as
	// the stream was received (StageSnapshot).
	Staged uint64
}

// SnapshotCounts returns the snapshot counts; cheap.
func (f *FSM) SnapshotCounts() SnapshotCounts {
	return SnapshotCounts{Persisted: f.snaps.persisted.Load(), Restored: f.snaps.restored.Load(), Staged: f.snaps.staged.Load()}
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
	s := &stream{live: &f.snaps, snap: f.db.NewSnapshot(), crc: crc32.New(crcTable),
		buf: make([]byte, 0, streamChunk+64<<10)}
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

	buf    []byte // the chunk of the stream fill made; buf[off:] is unread
	off    int
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
	b, err := s.unread()
	if err != nil {
		return 0, err
	}
	n := copy(p, b)
	s.off += n
	return n, nil
}

// WriteTo writes the rest of the stream to w a chunk at a time, without
// the copy into io.Copy's buffer that Read would take.
func (s *stream) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		b, err := s.unread()
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		n, err := w.Write(b)
		s.off += n
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
}

// unread returns what is left of the current chunk, making the next one
// when it is all read; io.EOF after the checksum.
func (s *stream) unread() ([]byte, error) {
	for s.off == len(s.buf) {
		if s.done {
			return nil, io.EOF
		}
		if err := s.fill(); err != nil {
			return nil, err
		}
	}
	return s.buf[s.off:], nil
}

// fill makes the next chunk of the stream, in buf, reusing its memory.
func (s *stream) fill() error {
	if s.closed {
		return errors.New("fsm: read of a closed snapshot stream")
	}
	if err := s.live.beginRead(s); err != nil {
		return err
	}
	defer s.live.endRead()
	out := s.buf[:0]
	if s.it == nil { // the first fill: the magic, and the iterator positioned
		it, err := s.snap.NewIter(nil)
		if err != nil {
			return err
		}
		s.it, s.valid = it, it.First()
		out = append(out, snapshotMagic...)
	}
	for s.valid && len(out) < streamChunk {
		k, v := s.it.Key(), s.it.Value()
		out = binary.AppendUvarint(out, uint64(len(k)))
		out = append(out, k...)
		out = binary.AppendUvarint(out, uint64(len(v)))
		out = append(out, v...)
		s.valid = s.it.Next()
	}
	if !s.valid {
		if err := s.it.Error(); err != nil {
			return err
		}
		out = append(out, 0)
	}
	s.crc.Write(out)
	if !s.valid {
		out = binary.BigEndian.AppendUint32(out, s.crc.Sum32())
		s.done = true
	}
	s.buf, s.off = out, 0
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
	var key, val []byte
	for {
		var err error
		key, err = readRecord(cr, key)
		if err != nil || key == nil {
			return 0, err
		}
		val, err = readRecord(cr, val)
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
//
// If StageSnapshot built the state of this very stream as it was
// received, Restore reads rc once to check that and swaps that state in
// (see stage.go).
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	f.staging.mu.Lock()
	defer f.staging.mu.Unlock()
	tmp := restoreDir(f.dir)
	staged, err := f.takeStaged(rc)
	if err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("fsm: restore: %w", err)
	}
	if !staged {
		if err := os.RemoveAll(tmp); err != nil {
			return fmt.Errorf("fsm: restore: %w", err)
		}
		if err := f.buildFromSnapshot(tmp, rc); err != nil {
			os.RemoveAll(tmp)
			return fmt.Errorf("fsm: restore: %w", err)
		}
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
		// The state reopened may be the new one (the swap's recovery
		// can finish it): the entries captured so far need not lead
		// to it.
		f.breakCapture()
		return f.reopenAfterFailedSwap(fmt.Errorf("fsm: restore: %w", err))
	}
	f.snaps.restored.Add(1)
	if staged {
		f.snaps.staged.Add(1)
	}
	f.breakCapture()
	// The log now starts after the restored snapshot.
	f.logBytes.markSnapshot()
	return nil
}

// swapIn renames the state built in tmp into place and opens it. f.mu is
// held and the current database closed.
func (f *FSM) swapIn(tmp string) error {
	old := replacedDir(f.dir)
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
	f.outboxLows.reset()
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

// buildFromSnapshot builds in dir the state a snapshot stream holds.
//
// The stream's records come in key order (OpenSnapshotStream reads them
// with one iterator), so they are written straight into tables, in the
// sibling directory dir+tablesSuffix, and ingested into an empty
// database once the stream's checksum is verified: each byte is written
// once, and the tables land in the bottom level, where no compaction
// rewrites them. Loading them through batches would write each byte to
// Pebble's WAL, then to a flushed table, then again in compactions
// (BenchmarkSnapshotInstall, BENCHMARKS.md).
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
	tables := dir + tablesSuffix
	defer os.RemoveAll(tables)
	if err := os.RemoveAll(tables); err != nil {
		db.Close()
		return err
	}
	if err := os.Mkdir(tables, 0o755); err != nil {
		db.Close()
		return err
	}
	paths, err := writeTables(tables, db, cr)
	if err == nil && len(paths) > 0 {
		err = db.Ingest(context.Background(), paths)
	}
	if err != nil {
		db.Close()
		return err
	}
	f.storage.retire(db) // its work was the state's too
	if err := db.Close(); err != nil {
		return err
	}
	return syncDir(dir)
}

// tablesSuffix names the directory, beside a state being built from a
// snapshot stream, where the stream's tables are written before they are
// ingested.
const tablesSuffix = "-tables"

// snapshotTableSize is about how large each table written from a snapshot
// stream grows before the next one starts; a variable so that tests can
// restore a small state into many tables.
var snapshotTableSize uint64 = 64 << 20

// writeTables writes the records of a snapshot stream into tables in dir,
// in the table format and with the options of db's bottom level, each
// synced, a new one at each key prefix and past snapshotTableSize, and
// checks the stream's trailing checksum. It returns the tables' paths, in
// key order.
func writeTables(dir string, db *pebble.DB, cr *crcReader) (paths []string, err error) {
	opts := PebbleOptions()
	wopts := opts.MakeWriterOptions(len(opts.Levels)-1, db.TableFormat())
	var w *sstable.Writer
	defer func() {
		if w != nil {
			w.Close() // after an error: the table is thrown away with dir
		}
	}()
	// Two key buffers, in turn: the one before is compared with the next.
	var key, prev, val []byte
	for {
		key, err = readRecord(cr, key)
		if err != nil {
			return nil, err
		}
		if key == nil {
			break
		}
		if prev != nil && bytes.Compare(prev, key) >= 0 {
			return nil, fmt.Errorf("%w: snapshot records out of key order", ErrCorrupt)
		}
		val, err = readRecord(cr, val)
		if err != nil {
			return nil, err
		}
		if w != nil && prev[0] != key[0] { // prev is set once w is: keys are never empty
			// A table per key prefix, as Pebble's flushes and compactions
			// write them (PebbleOptions).
			err := w.Close()
			w = nil
			if err != nil {
				return nil, err
			}
		}
		if w == nil {
			p := filepath.Join(dir, fmt.Sprintf("%06d.sst", len(paths)))
			file, err := vfs.Default.Create(p, vfs.WriteCategoryUnspecified)
			if err != nil {
				return nil, err
			}
			w = sstable.NewWriter(objstorageprovider.NewFileWritable(file), wopts)
			paths = append(paths, p)
		}
		if err := w.Set(key, val); err != nil {
			return nil, err
		}
		prev, key = key, prev
		if w.Raw().EstimatedSize() >= snapshotTableSize {
			err := w.Close() // syncs the table
			w = nil
			if err != nil {
				return nil, err
			}
		}
	}
	want := cr.h.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(cr.r, sum[:]); err != nil {
		return nil, fmt.Errorf("%w: snapshot without checksum", ErrCorrupt)
	}
	if binary.BigEndian.Uint32(sum[:]) != want {
		return nil, fmt.Errorf("%w: snapshot checksum mismatch", ErrCorrupt)
	}
	if w != nil {
		err := w.Close()
		w = nil
		if err != nil {
			return nil, err
		}
	}
	return paths, syncDir(dir)
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

// readRecord reads the next record of a snapshot stream into buf's
// memory, grown as needed, and returns it; nil for the zero length that
// ends the records. The length's bytes are hashed together, not one by one.
func readRecord(r *crcReader, buf []byte) ([]byte, error) {
	head, err := r.r.Peek(binary.MaxVarintLen64)
	if len(head) == 0 {
		return nil, fmt.Errorf("%w: truncated snapshot: %v", ErrCorrupt, err)
	}
	n, k := binary.Uvarint(head)
	if k <= 0 {
		return nil, fmt.Errorf("%w: truncated snapshot: a record length of %d bytes", ErrCorrupt, len(head))
	}
	r.h.Write(head[:k])
	r.r.Discard(k)
	if n == 0 {
		return nil, nil
	}
	if n > 1<<30 {
		return nil, fmt.Errorf("%w: snapshot record of %d bytes", ErrCorrupt, n)
	}
	buf = slices.Grow(buf[:0], int(n))[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("%w: truncated snapshot: %v", ErrCorrupt, err)
	}
	return buf, nil
}
