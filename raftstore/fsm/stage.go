package fsm

import (
	"bytes"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"sync"
)

// A follower that receives a snapshot from its leader stores the stream
// first (Raft's snapshot store) and restores it after: writing the stream,
// then reading it back into tables, one after the other. StageSnapshot
// lets the snapshot store build the new state from the bytes as they
// arrive instead, beside the current state in the directory Restore
// builds in; Restore, given the same stream afterwards, reads it once to
// check that it is the one staged, and swaps the staged state in without
// building it again (BenchmarkWipedFollowerCatchUp, BENCHMARKS.md).
//
// Nothing is swapped in by staging: the state stays the current one until
// Restore, and a staged state that Restore never uses is removed by the
// next Restore or the next Open (recoverInterruptedRestore), like a
// restore interrupted by a crash.

// staging is the state built from a stream as it was received, if any.
type staging struct {
	// mu is held by StageSnapshot and by Restore for their whole run: one
	// builds in the directory the other builds in or swaps from.
	mu    sync.Mutex
	state *stagedStream // guarded by mu
}

// stagedStream identifies the stream a staged state was built from: its
// size and the CRC-32C of all of its bytes, trailer included.
type stagedStream struct {
	size int64
	sum  uint32
}

// IsSnapshotStream reports whether head, the first bytes written to a
// snapshot, begin a snapshot stream (rather than a snapshot reference);
// it needs SnapshotStreamMagicSize bytes.
func IsSnapshotStream(head []byte) bool {
	return bytes.HasPrefix(head, []byte(snapshotMagic))
}

// SnapshotStreamMagicSize is how many bytes IsSnapshotStream needs.
const SnapshotStreamMagicSize = len(snapshotMagic)

// IsSnapshotHead reports whether head, the first SnapshotStreamMagicSize
// bytes written to a snapshot, begin a snapshot stream or a snapshot
// reference; no other snapshot of this state machine exists.
func IsSnapshotHead(head []byte) bool {
	return len(head) >= SnapshotStreamMagicSize &&
		(IsSnapshotStream(head) || bytes.HasPrefix(head, []byte(snapshotRefMagic[:SnapshotStreamMagicSize])))
}

// StageSnapshot builds the state the snapshot stream in r holds beside the
// current one, reading r to its end, for the next Restore of the same
// stream to swap in. It replaces any state staged before; on an error,
// nothing stays staged. The current state is untouched either way.
func (f *FSM) StageSnapshot(r io.Reader) error {
	f.staging.mu.Lock()
	defer f.staging.mu.Unlock()
	f.staging.state = nil
	tmp := restoreDir(f.dir)
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("fsm: stage snapshot: %w", err)
	}
	hr := newStreamHasher(r)
	err := f.buildFromSnapshot(tmp, hr)
	if err == nil {
		// Bytes after the trailer are not the state's, but they are the
		// stream's: Restore compares all of them.
		_, err = io.Copy(io.Discard, hr)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("fsm: stage snapshot: %w", err)
	}
	f.staging.state = &stagedStream{size: hr.n, sum: hr.h.Sum32()}
	return nil
}

// DropStaged removes the state StageSnapshot staged, if any: the stream it
// came from was not kept.
func (f *FSM) DropStaged() {
	f.staging.mu.Lock()
	defer f.staging.mu.Unlock()
	if f.staging.state != nil {
		f.staging.state = nil
		os.RemoveAll(restoreDir(f.dir))
	}
}

// takeStaged is Restore's use of a staged state; f.staging.mu is held. It
// returns false if none is staged: Restore then builds from r. If one is,
// it reads r to its end and returns true if r is the staged stream, byte
// for byte as far as its size and CRC-32C tell, and an error if it is
// not: r is then consumed, and the staged state is removed.
func (f *FSM) takeStaged(r io.Reader) (bool, error) {
	st := f.staging.state
	if st == nil {
		return false, nil
	}
	f.staging.state = nil
	hr := newStreamHasher(r)
	buf := make([]byte, 1<<20)
	if _, err := io.CopyBuffer(io.Discard, hr, buf); err != nil {
		return false, err
	}
	if hr.n != st.size || hr.h.Sum32() != st.sum {
		return false, fmt.Errorf("%w: the snapshot stream (%d bytes, CRC-32C %08x) is not the one staged as it was received (%d bytes, %08x)",
			ErrCorrupt, hr.n, hr.h.Sum32(), st.size, st.sum)
	}
	return true, nil
}

// streamHasher counts and hashes what is read through it.
type streamHasher struct {
	r io.Reader
	h hash.Hash32
	n int64
}

func newStreamHasher(r io.Reader) *streamHasher {
	return &streamHasher{r: r, h: crc32.New(crcTable)}
}

func (s *streamHasher) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.h.Write(p[:n])
	s.n += int64(n)
	return n, err
}
