package fsm

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

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
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, ErrClosed
	}
	if err := f.db.LogData([]byte("snapshot"), pebble.Sync); err != nil {
		return nil, fmt.Errorf("fsm: sync before snapshot: %w", err)
	}
	return &snapshot{snap: f.db.NewSnapshot()}, nil
}

type snapshot struct {
	snap *pebble.Snapshot
}

// Persist writes the snapshot to sink and closes it, or cancels it on error.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("fsm: persist snapshot: %w", err)
	}
	return sink.Close()
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

// Release frees the Pebble snapshot.
func (s *snapshot) Release() { s.snap.Close() }

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

	f.ckptWG.Wait() // a local checkpoint reads the database being replaced
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		os.RemoveAll(tmp)
		return ErrClosed
	}
	if err := f.db.Close(); err != nil {
		return fmt.Errorf("fsm: restore: close current state: %w", err)
	}
	old := f.dir + ".old"
	if err := os.Rename(f.dir, old); err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	if err := os.Rename(tmp, f.dir); err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	if err := syncDir(filepath.Dir(f.dir)); err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	if err := os.RemoveAll(old); err != nil {
		f.logger.Warn("fsm: could not remove the replaced state", "dir", old, "error", err)
	}
	db, err := openPebble(f.dir, f.logger)
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

func (f *FSM) buildFromSnapshot(dir string, r io.Reader) error {
	cr := &crcReader{r: bufio.NewReaderSize(r, 1<<20), h: crc32.New(crcTable)}
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(cr, magic); err != nil || string(magic) != snapshotMagic {
		return fmt.Errorf("%w: not a stated snapshot", ErrCorrupt)
	}
	db, err := openPebble(dir, f.logger)
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
