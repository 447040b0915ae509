package raftstore

import (
	"bytes"
	"os"
	"path/filepath"
	"time"

	rwfs "github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
)

// finishInterruptedRoll completes, in raft-wal's metadata, a segment roll
// that a crash cut short, before raft-wal opens the log.
//
// raft-wal (v0.4.1) seals a full segment by writing its index frame in the
// append that fills it; the metadata records the seal, and the next
// segment, only afterwards (asynchronously for an append, after the seal's
// sync for a tail truncation). A crash between the two, or one that tears
// the sealing append after its index frame, leaves a tail segment that the
// metadata calls unsealed but whose recovery finds an index frame: Open
// takes it as the tail, and every append after it fails with "segment is
// sealed", at every restart, because raft-wal checks whether the tail is
// sealed only after an append succeeds.
//
// So when the metadata's tail recovers as sealed, and every entry its
// recovery found (those up to its last intact commit) reads back the same
// through its index frame, the roll is finished as raft-wal does it: the
// tail is recorded sealed at its last recovered entry, and a new segment
// after it (raft-wal creates its file on Open). An index frame that does
// not read back every entry is torn, so no commit covers it: its header
// is zeroed, and raft-wal recovers the tail unsealed at its last commit.
// A tail that recovers sealed with no entry committed is removed:
// raft-wal creates it again, empty.
func finishInterruptedRoll(dir string, meta *metadb.BoltMetaDB) error {
	if _, err := os.Stat(filepath.Join(dir, metadb.FileName)); err != nil {
		return nil // a new log; or one wal.Open reports on
	}
	st, err := meta.Load(dir)
	if err != nil {
		return err
	}
	n := len(st.Segments)
	if n == 0 || !st.Segments[n-1].SealTime.IsZero() {
		return nil
	}
	tail := st.Segments[n-1]
	filer := segment.NewFiler(dir, rwfs.New())
	w, err := filer.RecoverTail(tail) // reads only
	if err != nil {
		return nil // wal.Open recovers it itself, or says why it cannot
	}
	sealed, indexStart, err := w.Sealed()
	last := w.LastIndex()
	first := max(tail.MinIndex, tail.BaseIndex)
	if err != nil || !sealed || (last != 0 && last < first) {
		w.Close()
		return nil
	}
	if last == 0 {
		// Not one entry committed: the file holds nothing of the log.
		// wal.Open creates a missing tail afresh.
		w.Close()
		if err := os.Remove(filepath.Join(dir, segment.FileName(tail))); err != nil {
			return err
		}
		return syncDir(dir)
	}
	info := tail
	info.IndexStart, info.MaxIndex = indexStart, last
	torn, err := tornIndex(filer, info, w, first, last)
	w.Close()
	if err != nil {
		return nil // the tail does not read: wal.Open says why
	}
	if torn {
		// No commit covers a torn index frame: it belongs to an append
		// that was never acknowledged, after the last commit (a sealed
		// segment takes no later one). raft-wal's recovery takes any
		// index frame header as a seal, and would refuse every append
		// from now on; without the header it recovers the tail unsealed
		// at its last commit, and the next append overwrites the rest.
		return unseal(filepath.Join(dir, segment.FileName(tail)), indexStart)
	}
	now := time.Now()
	info.SealTime = now
	st.Segments[n-1] = info
	st.Segments = append(st.Segments, types.SegmentInfo{
		ID:         st.NextSegmentID,
		BaseIndex:  last + 1,
		MinIndex:   last + 1,
		Codec:      tail.Codec,
		SizeLimit:  tail.SizeLimit,
		CreateTime: now,
	})
	st.NextSegmentID++
	return meta.CommitState(st)
}

// tornIndex reports whether the index frame of info (sealed at its
// IndexStart) fails to read back an entry from first to last the same as
// the recovered tail w does; an error is a read of w's, or of the file.
func tornIndex(filer *segment.Filer, info types.SegmentInfo, w types.SegmentReader, first, last uint64) (bool, error) {
	r, err := filer.Open(info)
	if err != nil {
		return false, err
	}
	defer r.Close()
	for i := first; i <= last; i++ {
		same, err := sameEntry(w, r, i)
		if err != nil {
			return false, err
		}
		if !same {
			return true, nil
		}
	}
	return false, nil
}

// indexFrameHeaderLen is the length of a raft-wal frame header, which
// precedes the index array that Sealed's indexStart points to.
const indexFrameHeaderLen = 8

// unseal zeroes, and syncs, the header of the uncommitted index frame
// whose array starts at indexStart in the segment file p. raft-wal reads a
// zero header as the end of the written frames.
func unseal(p string, indexStart uint64) error {
	if indexStart < indexFrameHeaderLen {
		return nil
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(make([]byte, indexFrameHeaderLen), int64(indexStart-indexFrameHeaderLen))
	if err2 := f.Sync(); err == nil {
		err = err2
	}
	if err2 := f.Close(); err == nil {
		err = err2
	}
	return err
}

// sameEntry reports whether entry i reads the same from the tail a and
// through the index frame b; an error is one of a's, whose entries
// recovery found.
func sameEntry(a, b types.SegmentReader, i uint64) (bool, error) {
	x, err := a.GetLog(i)
	if err != nil {
		return false, err
	}
	defer x.Close()
	y, err := b.GetLog(i)
	if err != nil {
		return false, nil
	}
	defer y.Close()
	return bytes.Equal(x.Bs, y.Bs), nil
}
