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
// not read back every entry (torn) leaves the metadata as it was. A tail
// that recovers sealed with no entry committed is removed: raft-wal
// creates it again, empty.
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
	defer w.Close()
	info := tail
	info.IndexStart, info.MaxIndex = indexStart, last
	r, err := filer.Open(info)
	if err != nil {
		return nil
	}
	defer r.Close()
	for i := first; i <= last; i++ {
		if !sameEntry(w, r, i) {
			return nil
		}
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

// sameEntry reports whether entry i reads the same from a and b.
func sameEntry(a, b types.SegmentReader, i uint64) bool {
	x, err := a.GetLog(i)
	if err != nil {
		return false
	}
	defer x.Close()
	y, err := b.GetLog(i)
	if err != nil {
		return false
	}
	defer y.Close()
	return bytes.Equal(x.Bs, y.Bs)
}
