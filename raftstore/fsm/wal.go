package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2/record"
)

// TrimCheckpointWAL cuts each WAL file of a local checkpoint after its
// last valid record. Pebble recycles WAL files: a new log reuses an old
// file and overwrites it from the start, so the file's tail still holds
// the old log's records (up to a memtable's worth), which replay skips by
// their log number. A checkpoint copies the file whole; trimming keeps
// that dead tail out of the upload. It returns the bytes cut.
//
// Only a tail may be cut: what follows the last whole record must hold no
// valid record of the same log (a torn last record, zeroes, or a recycled
// file's older log). A record that does not read followed by one of the
// same log that does is corruption in the middle of the log: the WAL is
// left as it is and the error, which matches ErrCorrupt, names the file
// and the offsets, so that the checkpoint fails rather than silently
// dropping the writes after the damage.
func TrimCheckpointWAL(dir string) (int64, error) {
	logs, err := checkpointWALs(dir)
	if err != nil {
		return 0, fmt.Errorf("fsm: trim checkpoint WAL: %w", err)
	}
	var cut int64
	for _, l := range logs {
		if l.segment {
			continue // a segment of a failover WAL, e.g. 000012-001.log: keep it whole
		}
		n, err := trimLog(l.path, l.num)
		if err != nil {
			return cut, err
		}
		cut += n
	}
	return cut, nil
}

// walFile is a WAL file of a local checkpoint: log num at path, or a
// segment of a failover WAL (e.g. 000012-001.log), whose name is no
// number.
type walFile struct {
	path    string
	num     uint64
	segment bool
}

// checkpointWALs lists the WAL files of the checkpoint in dir.
func checkpointWALs(dir string) ([]walFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var logs []walFile
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".log") || !e.Type().IsRegular() {
			continue
		}
		num, err := strconv.ParseUint(strings.TrimSuffix(name, ".log"), 10, 64)
		logs = append(logs, walFile{path: filepath.Join(dir, name), num: num, segment: err != nil})
	}
	return logs, nil
}

// trimLog truncates the log file at p after its last record of log num.
func trimLog(p string, num uint64) (int64, error) {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("fsm: trim %s: %w", p, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	end, torn, err := validEnd(f, num)
	if err != nil {
		return 0, fmt.Errorf("fsm: trim %s: %w", p, err)
	}
	if end >= fi.Size() {
		return 0, nil
	}
	if torn {
		// Reading stopped at a record that does not read: make sure that
		// nothing of this log follows it.
		if _, err := f.Seek(end, io.SeekStart); err != nil {
			return 0, fmt.Errorf("fsm: trim %s: %w", p, err)
		}
		tail, err := io.ReadAll(f)
		if err != nil {
			return 0, fmt.Errorf("fsm: trim %s: %w", p, err)
		}
		if bad, next, ok := corruptionIn(tail, end, num); ok {
			return 0, fmt.Errorf("%w: checkpoint WAL %s (log %d) does not read at offset %d, but a valid record of the same log follows at offset %d: the log is damaged in the middle, not torn at its end",
				ErrCorrupt, p, num, bad, next)
		}
	}
	if err := f.Truncate(end); err != nil {
		return 0, fmt.Errorf("fsm: trim %s: %w", p, err)
	}
	return fi.Size() - end, f.Sync()
}

// validEnd reads the records of log num and returns the offset just past
// the last one read whole, and whether reading stopped at a record that
// does not read (rather than at the log's clean end).
func validEnd(r io.Reader, num uint64) (end int64, torn bool, err error) {
	rr := newRecordReader(record.NewReader, r, num)
	for {
		rec, err := rr.Next()
		if err == nil {
			_, err = io.Copy(io.Discard, rec)
			if err == nil {
				end = rr.Offset()
				continue
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			// The end of the file, or the EOF trailer of a log closed
			// cleanly: what follows is a recycled file's older log.
			return end, false, nil
		case errors.Is(err, record.ErrUnexpectedEOF), errors.Is(err, io.ErrUnexpectedEOF):
			// Pebble's reader found no proof of corruption: a torn or
			// stale tail, unless a record of this log follows.
			return end, true, nil
		case errors.Is(err, record.ErrInvalidChunk), errors.Is(err, record.ErrZeroedChunk):
			// Pebble's read-ahead proved it (a later record's sync
			// offset vouches for this one).
			return 0, false, fmt.Errorf("%w: log %d at offset %d: %v", ErrCorrupt, num, end, err)
		}
		return 0, false, err
	}
}

// The chunk format of Pebble's WAL (see package record): a header of
// checksum (4 bytes), payload length (2), chunk type (1), log number (4),
// and with the WAL-sync types a synced offset (8), then the payload. The
// checksum is a masked CRC-32C of the type, the log number, the synced
// offset and the payload. Chunks do not cross 32 KiB blocks.
const (
	walBlockSize        = 32 << 10
	recyclableHeaderLen = 11
	walSyncHeaderLen    = 19
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// chunkAt reports whether b[off:] starts a whole, valid chunk of log num,
// and its length with the header. pos is off's offset in the file, which
// tells where its block ends.
func chunkAt(b []byte, off int, pos int64, num uint64) (int, bool) {
	if off+recyclableHeaderLen > len(b) {
		return 0, false
	}
	h := b[off:]
	typ := h[6]
	var hlen int
	switch {
	case typ >= 5 && typ <= 8: // recyclable full, first, middle, last
		hlen = recyclableHeaderLen
	case typ >= 9 && typ <= 12: // WAL-sync full, first, middle, last
		hlen = walSyncHeaderLen
	default:
		return 0, false
	}
	if binary.LittleEndian.Uint32(h[7:11]) != uint32(num) {
		return 0, false
	}
	n := hlen + int(binary.LittleEndian.Uint16(h[4:6]))
	blockLeft := walBlockSize - int(pos%walBlockSize)
	if n > blockLeft || off+n > len(b) {
		return 0, false
	}
	c := crc32.Checksum(h[6:n], castagnoli)
	masked := (c>>15 | c<<17) + 0xa282ead8
	return n, masked == binary.LittleEndian.Uint32(h[0:4])
}

// corruptionIn looks at the tail of log num that starts at file offset
// base, where the record reader stopped. It walks the chunks that still
// read (the first chunks of a record whose end is torn) to the first that
// does not; if any valid chunk of the same log lies beyond it, the log
// is damaged in the middle, and it returns both offsets.
func corruptionIn(tail []byte, base int64, num uint64) (bad, next int64, corrupt bool) {
	off := 0
	for off < len(tail) {
		pos := base + int64(off)
		if left := walBlockSize - int(pos%walBlockSize); left < recyclableHeaderLen {
			off += left // a block's padding
			continue
		}
		n, ok := chunkAt(tail, off, pos, num)
		if !ok {
			break
		}
		off += n
	}
	bad = base + int64(off)
	// Any later chunk of this log carries its log number at offset 7 of
	// its header: look for those bytes, then check the whole chunk. The
	// chunks may have read to the end of the tail (a record whose first
	// chunks are whole and whose last is missing): then nothing follows.
	var pat [4]byte
	binary.LittleEndian.PutUint32(pat[:], uint32(num))
	for from := off + 1; from < len(tail); {
		i := bytes.Index(tail[from:], pat[:])
		if i < 0 {
			break
		}
		at := from + i - 7
		from += i + 1
		if at <= off {
			continue
		}
		if _, ok := chunkAt(tail, at, base+int64(at), num); ok {
			return bad, base + int64(at), true
		}
	}
	return bad, 0, false
}

// newRecordReader calls record.NewReader, whose log number parameter has
// a type from one of Pebble's internal packages: inference names it.
func newRecordReader[N ~uint64](newReader func(io.Reader, N) *record.Reader, r io.Reader, num uint64) *record.Reader {
	return newReader(r, N(num))
}
