package fsm

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// A changelog checkpoint is the state of an earlier checkpoint (its base)
// and the Raft log's command entries since, up to the changelog barrier:
// the leader writes those entries into segment files, and a restore
// downloads the base's tables and replays the segments through the state
// machine (ReplayChangelog), which, being deterministic, makes the state
// as of the barrier again.
//
// A segment file holds the command entries of the log's indexes first to
// last (other entries have no effect on the state and are left out):
//
//	header  = "STATEDCL" format first last crc
//	record  = index term length data crc
//	trailer = 0x00 count crc
//
// format is one byte, 1; first, last, index, term, length and count are
// uvarints; data is the entry's bytes; crc is the CRC-32C (Castagnoli),
// big-endian in 4 bytes, of the bytes of its header, record or trailer
// before it. A record's index is at least 1, so its first byte is never
// the trailer's 0x00. count is the number of records, and nothing follows
// the trailer. Records are in increasing index order, within first..last.
// The whole file is also checked by SHA-256 when downloaded; the replay
// checks all of this anyway, and the chain of segments, and the state it
// ends at against the checkpoint's.
const (
	changelogMagic   = "STATEDCL"
	changelogFormat  = 1
	changelogTrailer = 0x00
)

// A replay applies entries in batches of up to changelogBatchEntries
// entries and changelogBatchBytes bytes of data, as Raft hands a follower
// its committed entries (applyBatch).
const (
	changelogBatchEntries = 256
	changelogBatchBytes   = 8 << 20
)

// ChangelogError is a changelog that does not replay onto a state: a
// segment that is damaged or out of place, a state other than the base
// the changelog starts from, or a replay that does not end at the
// checkpoint's cut. It matches ErrCorrupt.
type ChangelogError struct {
	Segment string // the segment file; empty when the state is at fault
	Index   uint64 // the Raft index concerned; zero when none is
	Reason  string
}

func (e *ChangelogError) Error() string {
	var b strings.Builder
	b.WriteString("fsm: changelog")
	if e.Segment != "" {
		fmt.Fprintf(&b, " segment %s", e.Segment)
	}
	if e.Index != 0 {
		fmt.Fprintf(&b, " at index %d", e.Index)
	}
	return b.String() + ": " + e.Reason
}

// Is matches ErrCorrupt.
func (e *ChangelogError) Is(target error) bool { return target == ErrCorrupt }

func changelogErr(segment string, index uint64, format string, args ...any) error {
	return &ChangelogError{Segment: segment, Index: index, Reason: fmt.Sprintf(format, args...)}
}

// ChangelogWriter writes one segment file (see CreateChangelogSegment).
type ChangelogWriter struct {
	path        string
	first, last uint64
	f           *os.File
	w           *bufio.Writer
	prev        uint64 // the index of the newest entry appended; 0 before the first
	count       uint64 // records written
	bytes       int64  // bytes written
	buf         []byte // a record's or the trailer's bytes before its data
	err         error  // the first failure, which every later call returns
	closed      bool
}

// CreateChangelogSegment creates (or truncates) the segment file at path
// for the Raft log's entries first to last, inclusive, and writes its
// header. tee, if not nil, is given every byte written to the file, in
// order, as it is written (a hash of the file, say); it must not fail.
func CreateChangelogSegment(path string, first, last uint64, tee io.Writer) (*ChangelogWriter, error) {
	if first == 0 || last < first {
		return nil, fmt.Errorf("fsm: changelog segment %s: bad range %d..%d", path, first, last)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("fsm: create changelog segment: %w", err)
	}
	var out io.Writer = f
	if tee != nil {
		out = io.MultiWriter(f, tee)
	}
	w := &ChangelogWriter{path: path, first: first, last: last, f: f, w: bufio.NewWriterSize(out, 256<<10)}
	if err := w.write(segmentHeader(first, last), nil); err != nil {
		w.Abort()
		return nil, err
	}
	return w, nil
}

// Append adds l. Its index must lie in the segment's range and be above
// the previous entry's; an entry that is not a raft.LogCommand is left
// out. l is not kept. After an error the segment is unusable: Abort it.
func (w *ChangelogWriter) Append(l *raft.Log) error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return fmt.Errorf("fsm: changelog segment %s: append after close", w.path)
	}
	if l.Index < w.first || l.Index > w.last || l.Index <= w.prev {
		w.err = fmt.Errorf("fsm: changelog segment %s: entry %d after %d, outside %d..%d or out of order",
			w.path, l.Index, w.prev, w.first, w.last)
		return w.err
	}
	w.prev = l.Index
	if l.Type != raft.LogCommand {
		return nil
	}
	w.buf = appendRecordHead(w.buf[:0], l)
	crc := recordCRC(w.buf, l.Data)
	if err := w.write(w.buf, l.Data); err != nil {
		return err
	}
	if err := w.write(binary.BigEndian.AppendUint32(w.buf[:0], crc), nil); err != nil {
		return err
	}
	w.count++
	return nil
}

// Close writes the trailer and closes the file; Bytes is then its size.
// After an error, Abort the segment. The file is not synced: a segment is
// written to be uploaded, the bucket's copy is the durable one (the
// uploader syncs it), and the file is removed once sent, usually before
// the kernel would write it out at all. A crash before the upload loses
// nothing: the Raft log still holds the entries.
func (w *ChangelogWriter) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return fmt.Errorf("fsm: changelog segment %s: closed twice", w.path)
	}
	if err := w.write(segmentTrailer(w.count), nil); err != nil {
		return err
	}
	err := w.w.Flush()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.closed = true
	if err != nil {
		w.err = fmt.Errorf("fsm: close changelog segment %s: %w", w.path, err)
	}
	return w.err
}

// Bytes is the size of the segment file once Close returned nil.
func (w *ChangelogWriter) Bytes() int64 { return w.bytes }

// Abort closes the file, if open, and removes it.
func (w *ChangelogWriter) Abort() {
	if !w.closed {
		w.f.Close()
		w.closed = true
	}
	if w.err == nil {
		w.err = fmt.Errorf("fsm: changelog segment %s: aborted", w.path)
	}
	os.Remove(w.path)
}

func (w *ChangelogWriter) write(a, b []byte) error {
	for _, p := range [][]byte{a, b} {
		if _, err := w.w.Write(p); err != nil {
			w.err = fmt.Errorf("fsm: write changelog segment %s: %w", w.path, err)
			return w.err
		}
		w.bytes += int64(len(p))
	}
	return nil
}

// segmentHeader is a segment's header for the entries first..last.
func segmentHeader(first, last uint64) []byte {
	h := append([]byte(changelogMagic), changelogFormat)
	h = binary.AppendUvarint(h, first)
	return appendCRC(binary.AppendUvarint(h, last))
}

// segmentTrailer is the trailer of a segment of count records.
func segmentTrailer(count uint64) []byte {
	return appendCRC(binary.AppendUvarint([]byte{changelogTrailer}, count))
}

// appendRecordHead appends the part of l's record before its data: index,
// term, length.
func appendRecordHead(b []byte, l *raft.Log) []byte {
	b = binary.AppendUvarint(b, l.Index)
	b = binary.AppendUvarint(b, l.Term)
	return binary.AppendUvarint(b, uint64(len(l.Data)))
}

// recordCRC is the CRC-32C a record ends with: of its head, then its data.
func recordCRC(head, data []byte) uint32 {
	return crc32.Update(crc32.Checksum(head, crcTable), crcTable, data)
}

// appendCRC appends the CRC-32C of b to it.
func appendCRC(b []byte) []byte {
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

// segmentReader reads a segment file, checking each part as it goes.
type segmentReader struct {
	path        string
	f           *os.File
	r           *bufio.Reader
	size, off   int64 // the file's size and the bytes read
	first, last uint64
	prev        uint64 // the index of the newest record read
	count       uint64 // records read
	head        []byte // the bytes of the part being read, for its CRC
}

// openSegment opens the segment file at path and reads its header.
func openSegment(path string) (*segmentReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("fsm: open changelog segment: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("fsm: open changelog segment: %w", err)
	}
	s := &segmentReader{path: path, f: f, r: bufio.NewReaderSize(f, 1<<20), size: fi.Size()}
	if err := s.header(); err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

func (s *segmentReader) close() { s.f.Close() }

func (s *segmentReader) header() error {
	s.head = s.head[:0]
	if err := s.readFull(len(changelogMagic)+1, "header"); err != nil {
		return err
	}
	if string(s.head[:len(changelogMagic)]) != changelogMagic {
		return changelogErr(s.path, 0, "not a changelog segment (magic %q)", s.head[:len(changelogMagic)])
	}
	if v := s.head[len(changelogMagic)]; v != changelogFormat {
		return changelogErr(s.path, 0, "unknown segment format %d", v)
	}
	var err error
	if s.first, err = s.uvarint("header"); err != nil {
		return err
	}
	if s.last, err = s.uvarint("header"); err != nil {
		return err
	}
	if err := s.checkCRC("header", 0, 0); err != nil {
		return err
	}
	if s.first == 0 || s.last < s.first {
		return changelogErr(s.path, 0, "bad range %d..%d in the header", s.first, s.last)
	}
	return nil
}

// next reads the next record as a command entry, or the trailer, after
// which it returns io.EOF.
func (s *segmentReader) next() (*raft.Log, error) {
	at := s.off
	s.head = s.head[:0]
	b, err := s.r.ReadByte()
	if err != nil {
		return nil, s.truncated("record", err)
	}
	if err := s.r.UnreadByte(); err != nil {
		return nil, err
	}
	if b == changelogTrailer {
		return nil, s.trailer()
	}
	index, err := s.uvarint("record")
	if err != nil {
		return nil, err
	}
	term, err := s.uvarint("record")
	if err != nil {
		return nil, err
	}
	n, err := s.uvarint("record")
	if err != nil {
		return nil, err
	}
	if n > uint64(s.size-s.off) {
		return nil, changelogErr(s.path, index, "record at byte %d: length %d runs past the end of the file", at, n)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(s.r, data); err != nil {
		return nil, s.truncated("record", err)
	}
	s.off += int64(n)
	crc := crc32.Update(crc32.Checksum(s.head, crcTable), crcTable, data)
	if err := s.readCRC(crc, "record", at, index); err != nil {
		return nil, err
	}
	if index < s.first || index > s.last || index <= s.prev {
		return nil, changelogErr(s.path, index, "record after index %d, outside the segment's %d..%d or out of order", s.prev, s.first, s.last)
	}
	s.prev = index
	s.count++
	return &raft.Log{Index: index, Term: term, Type: raft.LogCommand, Data: data}, nil
}

// trailer reads the trailer and checks that the file ends with it.
func (s *segmentReader) trailer() error {
	at := s.off
	if err := s.readFull(1, "trailer"); err != nil {
		return err
	}
	count, err := s.uvarint("trailer")
	if err != nil {
		return err
	}
	if err := s.checkCRC("trailer", at, s.prev); err != nil {
		return err
	}
	if count != s.count {
		return changelogErr(s.path, s.prev, "the trailer counts %d records, the segment holds %d", count, s.count)
	}
	if s.off != s.size {
		return changelogErr(s.path, s.prev, "%d bytes after the trailer", s.size-s.off)
	}
	return io.EOF
}

// readFull reads n bytes into head.
func (s *segmentReader) readFull(n int, what string) error {
	start := len(s.head)
	s.head = slices.Grow(s.head, n)[:start+n]
	if _, err := io.ReadFull(s.r, s.head[start:]); err != nil {
		return s.truncated(what, err)
	}
	s.off += int64(n)
	return nil
}

// uvarint reads a uvarint into head.
func (s *segmentReader) uvarint(what string) (uint64, error) {
	start := len(s.head)
	for len(s.head)-start < binary.MaxVarintLen64 {
		b, err := s.r.ReadByte()
		if err != nil {
			return 0, s.truncated(what, err)
		}
		s.head = append(s.head, b)
		s.off++
		if b < 0x80 {
			v, n := binary.Uvarint(s.head[start:])
			if n <= 0 {
				break
			}
			return v, nil
		}
	}
	return 0, changelogErr(s.path, s.prev, "bad uvarint in the %s at byte %d", what, s.off)
}

// checkCRC reads the CRC that ends the part in head, which began at byte
// at, and checks it.
func (s *segmentReader) checkCRC(what string, at int64, index uint64) error {
	return s.readCRC(crc32.Checksum(s.head, crcTable), what, at, index)
}

// readCRC reads the CRC that ends a part and checks it against want.
func (s *segmentReader) readCRC(want uint32, what string, at int64, index uint64) error {
	var b [4]byte
	if _, err := io.ReadFull(s.r, b[:]); err != nil {
		return s.truncated(what, err)
	}
	s.off += 4
	if got := binary.BigEndian.Uint32(b[:]); got != want {
		return changelogErr(s.path, index, "%s at byte %d: CRC-32C %08x, want %08x", what, at, got, want)
	}
	return nil
}

func (s *segmentReader) truncated(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return changelogErr(s.path, s.prev, "truncated in the %s at byte %d (of %d)", what, s.off, s.size)
	}
	return fmt.Errorf("fsm: read changelog segment %s: %w", s.path, err)
}

// ChangelogTarget is the checkpoint a changelog replay must end at.
type ChangelogTarget struct {
	// BaseIndex is the applied index of the base state the segments
	// start after.
	BaseIndex uint64
	// Index is the applied index the replay must end at (the checkpoint's
	// cut, its changelog barrier), and Term the term of that entry.
	Index uint64
	Term  uint64
	// Epoch is the checkpoint epoch the state must record after the
	// replay (the barrier's).
	Epoch uint64
	// ClusterID is the cluster id the state must hold; "" is not checked.
	ClusterID string
	// Offsets are every group's offsets the state must hold after the
	// replay, compared as a set.
	Offsets []command.Offset
}

// ReplayStats says what a replay did.
type ReplayStats struct {
	Segments, Entries int   // segments read and command entries applied
	Bytes             int64 // the segment files' bytes
	Took              time.Duration
	// Windows are the window namespaces of the replayed state, as they
	// stand at the checkpoint's cut (a changelog checkpoint's manifest
	// does not record them); empty when it has none.
	Windows []WindowStatus
}

// ReplayChangelog opens the state in stateDir (a Pebble directory such as
// a checkpoint's tables, restored and not yet prepared by PrepareRestore),
// checks that its applied index is want.BaseIndex, applies the command
// entries of the segments, in order, through the state machine's apply
// path, checks the result against want, makes it durable, and closes the
// state.
//
// It refuses, with a *ChangelogError (matching ErrCorrupt) naming the
// segment and the index, a state at another index, segments that do not
// chain from want.BaseIndex+1 to want.Index, a damaged segment, and a
// replay that ends at another index, term, epoch, cluster id or offsets
// than want's. An entry that the state machine rejects is not an error:
// every replica rejected it the same way. An apply that fails otherwise
// is an error that wraps the cause. After an error the state in stateDir
// is unusable.
//
// Replaying, barriers make no local checkpoint and completions remove
// none. The replay stops between two batches of entries when ctx ends,
// with ctx's cause.
func ReplayChangelog(ctx context.Context, stateDir string, segments []string, want ChangelogTarget, logger *slog.Logger) (ReplayStats, error) {
	start := time.Now() // for ReplayStats only: the state never sees it
	var stats ReplayStats
	if err := checkChain(segments, want); err != nil {
		return stats, err
	}
	// Open would make an empty state where none is.
	if fi, err := os.Stat(stateDir); err != nil {
		return stats, fmt.Errorf("fsm: replay changelog: %w", err)
	} else if !fi.IsDir() {
		return stats, fmt.Errorf("fsm: replay changelog: %s is not a state directory", stateDir)
	}
	// Without Pebble's WAL: the replay's writes reach the tables by the
	// Flush below, and a replay that does not get there leaves a state
	// nobody uses (a restore stages it, and starts again from the
	// download).
	f, err := Open(stateDir, logger, func(o *openOptions) { o.tune = func(po *pebble.Options) { po.DisableWAL = true } })
	if err != nil {
		return stats, err
	}
	f.replay = true
	err = f.replaySegments(ctx, segments, want, &stats)
	if err == nil {
		err = f.Flush() // the tables then hold the state, synced
	}
	if err == nil {
		stats.Windows, err = f.WindowStatuses()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	stats.Took = time.Since(start)
	return stats, err
}

// checkChain reads the segments' headers and checks that their ranges
// follow one another from want.BaseIndex+1 to want.Index.
func checkChain(segments []string, want ChangelogTarget) error {
	if len(segments) == 0 {
		return changelogErr("", want.Index, "no segment leads from the base at index %d", want.BaseIndex)
	}
	next := want.BaseIndex + 1
	for _, p := range segments {
		s, err := openSegment(p)
		if err != nil {
			return err
		}
		s.close()
		if s.first != next {
			return changelogErr(p, s.first, "the segment holds %d..%d, but the one before it ends at %d", s.first, s.last, next-1)
		}
		next = s.last + 1
	}
	if next != want.Index+1 {
		return changelogErr(segments[len(segments)-1], next-1, "the last segment ends at %d, the checkpoint's cut is at %d", next-1, want.Index)
	}
	return nil
}

// replaySegments applies the segments to f, whose state is at want's
// base, and checks that they end at want's cut.
func (f *FSM) replaySegments(ctx context.Context, segments []string, want ChangelogTarget, stats *ReplayStats) error {
	if got := f.AppliedIndex(); got != want.BaseIndex {
		return changelogErr("", got, "the state is at index %d, the changelog starts after %d", got, want.BaseIndex)
	}
	var last *raft.Log // the last entry applied
	for _, p := range segments {
		s, err := openSegment(p)
		if err != nil {
			return err
		}
		l, n, err := f.replaySegment(ctx, s)
		s.close()
		stats.Segments++
		stats.Entries += n
		stats.Bytes += s.size
		if err != nil {
			return err
		}
		if l != nil {
			last = l
		}
	}
	p := segments[len(segments)-1]
	switch {
	case last == nil || last.Index != want.Index:
		return changelogErr(p, want.Index, "no entry at the checkpoint's cut")
	case last.Term != want.Term:
		return changelogErr(p, want.Index, "the entry at the cut has term %d, the checkpoint's is %d", last.Term, want.Term)
	}
	return f.checkReplayed(want)
}

// replaySegment applies the records of s in batches and returns the last
// one applied and how many were. It stops before a batch once ctx ends.
func (f *FSM) replaySegment(ctx context.Context, s *segmentReader) (*raft.Log, int, error) {
	var batch []*raft.Log
	var last *raft.Log
	applied, size := 0, 0
	for {
		l, err := s.next()
		if err != nil && err != io.EOF {
			return last, applied, err
		}
		if l != nil {
			batch = append(batch, l)
			size += len(l.Data)
		}
		if len(batch) > 0 && (err == io.EOF || len(batch) == changelogBatchEntries || size >= changelogBatchBytes) {
			if ctx.Err() != nil {
				return last, applied, fmt.Errorf("fsm: replay changelog segment %s: %w", s.path, context.Cause(ctx))
			}
			if err := f.replayBatch(s.path, batch); err != nil {
				return last, applied, err
			}
			applied += len(batch)
			last = batch[len(batch)-1]
			batch, size = batch[:0], 0
		}
		if err == io.EOF {
			return last, applied, nil
		}
	}
}

// replayBatch applies logs as Raft would hand them to a follower. A
// rejected entry is applied (as nothing) on every replica alike; an apply
// that fails otherwise, which would stop a replica (group.fail), is an
// error here.
func (f *FSM) replayBatch(path string, logs []*raft.Log) (err error) {
	defer func() {
		if p := recover(); p != nil {
			af, ok := p.(*applyFailure)
			if !ok {
				panic(p)
			}
			err = fmt.Errorf("fsm: replay changelog segment %s: %w", path, af)
		}
	}()
	for i, out := range f.applyBatch(logs) {
		if res := out.(*Result); res.Err != nil && !errors.Is(res.Err, ErrRejected) {
			return fmt.Errorf("fsm: replay changelog segment %s: index %d: %w", path, logs[i].Index, res.Err)
		}
	}
	return nil
}

// checkReplayed checks the replayed state against want.
func (f *FSM) checkReplayed(want ChangelogTarget) error {
	info, err := readCheckpointMeta(f.db)
	if err != nil {
		return fmt.Errorf("fsm: read the replayed state: %w", err)
	}
	switch {
	case info.AppliedIndex != want.Index:
		return changelogErr("", want.Index, "the replayed state is at index %d", info.AppliedIndex)
	case info.Epoch != want.Epoch:
		return changelogErr("", want.Index, "the replayed state is at epoch %d, the checkpoint's is %d", info.Epoch, want.Epoch)
	case want.ClusterID != "" && info.ClusterID != want.ClusterID:
		return changelogErr("", want.Index, "the replayed state is of cluster %q, the checkpoint of %q", info.ClusterID, want.ClusterID)
	}
	if d := diffOffsets(info.Offsets, want.Offsets); d != "" {
		return changelogErr("", want.Index, "the replayed state's offsets differ from the checkpoint's: %s", d)
	}
	return nil
}

// partitionOf is an offset's partition, as a map key.
type partitionOf struct {
	group, topic string
	partition    int32
}

// diffOffsets says how the offsets got differ from want, as sets, naming
// the first few partitions that differ; "" when they do not.
func diffOffsets(got, want []command.Offset) string {
	w := make(map[partitionOf]int64, len(want))
	for _, o := range want {
		w[partitionOf{o.Group, o.Topic, o.Partition}] = o.Offset
	}
	var diffs []string
	for _, o := range got {
		p := partitionOf{o.Group, o.Topic, o.Partition}
		switch wo, ok := w[p]; {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("group %q topic %q partition %d: offset %d, the checkpoint has none", p.group, p.topic, p.partition, o.Offset))
		case wo != o.Offset:
			diffs = append(diffs, fmt.Sprintf("group %q topic %q partition %d: offset %d, the checkpoint's is %d", p.group, p.topic, p.partition, o.Offset, wo))
		}
		delete(w, p)
	}
	for p, wo := range w {
		diffs = append(diffs, fmt.Sprintf("group %q topic %q partition %d: no offset, the checkpoint's is %d", p.group, p.topic, p.partition, wo))
	}
	if len(diffs) == 0 {
		return ""
	}
	slices.Sort(diffs)
	const shown = 3
	if len(diffs) > shown {
		return fmt.Sprintf("%s; and %d more", strings.Join(diffs[:shown], "; "), len(diffs)-shown)
	}
	return strings.Join(diffs, "; ")
}
