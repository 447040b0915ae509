package fsm

import (
	"errors"
	"fmt"
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
func TrimCheckpointWAL(dir string) (int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("fsm: trim checkpoint WAL: %w", err)
	}
	var cut int64
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".log") || !e.Type().IsRegular() {
			continue
		}
		num, err := strconv.ParseUint(strings.TrimSuffix(name, ".log"), 10, 64)
		if err != nil {
			continue // a segment of a failover WAL, e.g. 000012-001.log: keep it whole
		}
		n, err := trimLog(filepath.Join(dir, name), num)
		if err != nil {
			return cut, err
		}
		cut += n
	}
	return cut, nil
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
	end, err := validEnd(f, num)
	if err != nil {
		return 0, fmt.Errorf("fsm: trim %s: %w", p, err)
	}
	if end >= fi.Size() {
		return 0, nil
	}
	if err := f.Truncate(end); err != nil {
		return 0, fmt.Errorf("fsm: trim %s: %w", p, err)
	}
	return fi.Size() - end, f.Sync()
}

// validEnd reads the records of log num and returns the offset just past
// the last one read whole.
func validEnd(r io.Reader, num uint64) (int64, error) {
	rr := newRecordReader(record.NewReader, r, num)
	var end int64
	for {
		rec, err := rr.Next()
		if err != nil {
			// io.EOF, or the first stale record of a recycled file.
			return end, nil
		}
		if _, err := io.Copy(io.Discard, rec); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || record.IsInvalidRecord(err) {
				return end, nil
			}
			return 0, err
		}
		end = rr.Offset()
	}
}

// newRecordReader calls record.NewReader, whose log number parameter has
// a type from one of Pebble's internal packages: inference names it.
func newRecordReader[N ~uint64](newReader func(io.Reader, N) *record.Reader, r io.Reader, num uint64) *record.Reader {
	return newReader(r, N(num))
}
