package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"
)

// Changelog capture. A changelog checkpoint's segment holds the Raft
// log's command entries since the checkpoint before. Read back from the
// log, each entry is read from the log's file and decoded into a fresh
// copy before it is written into the segment: on a 2-core machine at
// 1 GB, the growth study's 1 s row spent about a third of its changelog
// checkpoints' CPU there. While capture is on, the apply loop writes each
// command entry it applies, as the segment's record for it, into memory
// as well, and a checkpoint barrier seals what it holds: the barrier's
// CheckpointResult.Captured is then the records of every command entry
// after the barrier before it, up to and including itself, of which the
// leader makes the segment in memory (CapturedChangelog.Segment: the same
// bytes ChangelogWriter writes for those entries) and sends it from
// there, with no file written or read, instead of reading the log.
//
// Capture is bounded: once the records held pass the limit, they are
// dropped and capture pauses until the next barrier, whose Captured is
// then nil (the segment is read from the log, as without capture). A
// snapshot restored by Raft does the same, the entries it replaces having
// never been applied here.

// captureChunkSize is the size of the buffers captured records are
// written into; a record may span two or more of them.
const captureChunkSize = 1 << 20

// captureChunks recycles captured buffers between checkpoints, so that
// each second's segment is written into pages already touched.
var captureChunks = sync.Pool{New: func() any { b := make([]byte, 0, captureChunkSize); return &b }}

// CapturedChangelog is the segment records of a run of command entries,
// as the apply loop captured them: every command entry of the Raft log
// from From to Last, inclusive, applied on this node. It is handed over
// sealed; Release it once written.
type CapturedChangelog struct {
	// From and Last bound the log indexes the records cover: the entries
	// between them that hold no record were no commands.
	From, Last uint64
	// Count is the number of records, and Bytes their size.
	Count uint64
	Bytes int64
	// First is the index of the first record; zero when there is none.
	First  uint64
	chunks []*[]byte
}

// Release gives the records' memory back for reuse; c must not be used
// after. It does nothing on nil.
func (c *CapturedChangelog) Release() {
	if c == nil {
		return
	}
	for _, b := range c.chunks {
		*b = (*b)[:0]
		captureChunks.Put(b)
	}
	c.chunks = nil
}

// piecesFrom returns the bytes of the records of index from on, in
// order, in pieces (slices of the buffers, not copies), and how many
// records were skipped before them. Skipping reads each skipped record's
// head only.
func (c *CapturedChangelog) piecesFrom(from uint64) ([][]byte, uint64, error) {
	cur := recordCursor{chunks: c.chunks}
	var skipped uint64
	for cur.ci < len(c.chunks) {
		next := cur // where this record starts
		index, err := cur.uvarint()
		if err != nil {
			return nil, 0, err
		}
		if index >= from {
			cur = next
			break
		}
		if _, err := cur.uvarint(); err != nil { // term
			return nil, 0, err
		}
		n, err := cur.uvarint()
		if err != nil {
			return nil, 0, err
		}
		if err := cur.skip(int64(n) + 4); err != nil { // data and crc
			return nil, 0, err
		}
		skipped++
	}
	var pieces [][]byte
	for ci, off := cur.ci, cur.off; ci < len(c.chunks); ci, off = ci+1, 0 {
		if b := (*c.chunks[ci])[off:]; len(b) > 0 {
			pieces = append(pieces, b)
		}
	}
	return pieces, skipped, nil
}

// recordCursor reads captured records across their chunks.
type recordCursor struct {
	chunks  []*[]byte
	ci, off int
}

var errCapturedCut = errors.New("fsm: captured changelog records end inside a record")

func (r *recordCursor) ReadByte() (byte, error) {
	for r.ci < len(r.chunks) && r.off == len(*r.chunks[r.ci]) {
		r.ci, r.off = r.ci+1, 0
	}
	if r.ci == len(r.chunks) {
		return 0, errCapturedCut
	}
	b := (*r.chunks[r.ci])[r.off]
	r.off++
	return b, nil
}

func (r *recordCursor) uvarint() (uint64, error) { return binary.ReadUvarint(r) }

func (r *recordCursor) skip(n int64) error {
	for n > 0 {
		if r.ci == len(r.chunks) {
			return errCapturedCut
		}
		k := min(n, int64(len(*r.chunks[r.ci])-r.off))
		r.off += int(k)
		n -= k
		if r.off == len(*r.chunks[r.ci]) {
			r.ci, r.off = r.ci+1, 0
		}
	}
	return nil
}

// write appends p to the records.
func (c *CapturedChangelog) write(p []byte) {
	for len(p) > 0 {
		if len(c.chunks) == 0 || len(*c.chunks[len(c.chunks)-1]) == captureChunkSize {
			c.chunks = append(c.chunks, captureChunks.Get().(*[]byte))
		}
		b := c.chunks[len(c.chunks)-1]
		n := min(len(p), captureChunkSize-len(*b))
		*b = append(*b, p[:n]...)
		p = p[n:]
		c.Bytes += int64(n)
	}
}

// capture is the apply loop's open run of captured records. Only the
// apply loop uses it, with the FSM's lock held shared; turning capture on
// or off takes the lock exclusively.
type capture struct {
	limit int64
	open  *CapturedChangelog // nil while paused (over the limit)
	head  []byte
}

// CaptureChangelog turns capture on, with at most limit bytes of records
// held between two barriers, or off when limit is 0 (a negative limit
// counts as 0). Turning it on while on only changes the limit: the
// records held stay.
func (f *FSM) CaptureChangelog(limit int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if limit <= 0 {
		if f.capture != nil {
			f.capture.open.Release()
		}
		f.capture = nil
		return
	}
	if f.capture != nil {
		f.capture.limit = limit
		return
	}
	f.capture = &capture{limit: limit, open: &CapturedChangelog{From: f.applied.Load() + 1}}
}

// captureEntry adds the command entry l, about to be applied, to the open
// run. The apply loop calls it for every command entry it applies, in
// order, with the FSM's lock held shared.
func (f *FSM) captureEntry(l *raft.Log) {
	c := f.capture
	if c == nil || c.open == nil {
		return
	}
	o := c.open
	c.head = appendRecordHead(c.head[:0], l)
	if o.Bytes+int64(len(c.head)+len(l.Data)+4) > c.limit {
		f.logger.Debug("fsm: changelog capture paused until the next barrier: over its limit",
			"limit", c.limit, "from", o.From, "index", l.Index)
		o.Release()
		c.open = nil
		return
	}
	crc := recordCRC(c.head, l.Data)
	o.write(c.head)
	o.write(l.Data)
	o.write(binary.BigEndian.AppendUint32(c.head[:0], crc))
	if o.First == 0 {
		o.First = l.Index
	}
	o.Count++
}

// sealCapture ends the open run at the barrier l (already captured) and
// returns it, or nil if capture was off or paused, and opens the next.
func (f *FSM) sealCapture(l *raft.Log) *CapturedChangelog {
	c := f.capture
	if c == nil {
		return nil
	}
	sealed := c.open
	if sealed != nil {
		sealed.Last = l.Index
	}
	c.open = &CapturedChangelog{From: l.Index + 1}
	return sealed
}

// breakCapture drops the open run: the entries a restored snapshot
// replaced were never applied here. Capture starts again
// at the next barrier. The FSM's lock is held exclusively.
func (f *FSM) breakCapture() {
	if c := f.capture; c != nil {
		c.open.Release()
		c.open = nil
	}
}

// CapturedSegment is a changelog segment made of captured records, held
// in memory: the same bytes ChangelogWriter writes into a file for the
// same entries. It refers to the records of the CapturedChangelog it came
// from and is valid until that is released.
type CapturedSegment struct {
	pieces [][]byte
	size   int64
}

// Size is the segment's length in bytes.
func (s *CapturedSegment) Size() int64 { return s.size }

// WriteTo writes the segment's bytes to w.
func (s *CapturedSegment) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for _, p := range s.pieces {
		k, err := w.Write(p)
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Reader returns a reader of the segment's bytes from the start; each
// call returns a new one.
func (s *CapturedSegment) Reader() io.Reader {
	rs := make([]io.Reader, len(s.pieces))
	for i, p := range s.pieces {
		rs[i] = bytes.NewReader(p)
	}
	return io.MultiReader(rs...)
}

// Segment returns the segment of the Raft log's entries first..last made
// of c's records, without copying them: c must reach exactly last and
// cover first on (start at first or before it); the records before first
// are left out.
func (c *CapturedChangelog) Segment(first, last uint64) (*CapturedSegment, error) {
	if first == 0 || last < first || c.Last != last || c.From > first {
		return nil, fmt.Errorf("fsm: a changelog segment of %d..%d from captured entries %d..%d", first, last, c.From, c.Last)
	}
	records, skipped, err := c.piecesFrom(first)
	if err != nil {
		return nil, err
	}
	s := &CapturedSegment{pieces: append(append([][]byte{segmentHeader(first, last)}, records...), segmentTrailer(c.Count-skipped))}
	for _, p := range s.pieces {
		s.size += int64(len(p))
	}
	return s, nil
}
