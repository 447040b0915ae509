package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/record"
)

// walCheckpoint writes n keys, one synced batch each, into a real Pebble
// database, after filling and flushing enough to make Pebble recycle a WAL
// file when recycle is set, and returns a checkpoint of it (with its
// flushed WAL) and the path of its one WAL file. The state machine's
// options no longer recycle WAL files (cleaner.go); with recycle, Pebble's
// default cleaner does, as in a data dir written by an older stated.
// Values in extra are written last, as keys n, n+1, and so on.
func walCheckpoint(t *testing.T, n int, recycle bool, extra ...[]byte) (dir, log string) {
	t.Helper()
	opts := PebbleOptions()
	opts.MemTableSize = 1 << 20 // small logs, quick to fill
	if recycle {
		opts.Cleaner = pebble.DeleteCleaner{}
	}
	db, err := pebble.Open(filepath.Join(t.TempDir(), "db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if recycle {
		// Two rounds of a large log then a flush: the first log becomes
		// obsolete and its file is reused by a later one.
		for round := range 3 {
			for i := range 400 {
				if err := db.Set(fmt.Appendf(nil, "old-%d-%04d", round, i), bytes.Repeat([]byte("o"), 1000), pebble.Sync); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range n {
		if err := db.Set(key(i), bytes.Repeat([]byte{byte('a' + i%26)}, 500), pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	for i, v := range extra {
		if err := db.Set(key(n+i), v, pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	dir = filepath.Join(t.TempDir(), "cp")
	if err := db.Checkpoint(dir, pebble.WithFlushedWAL()); err != nil {
		t.Fatal(err)
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	if len(logs) != 1 {
		t.Fatalf("checkpoint holds WAL files %v, want one", logs)
	}
	return dir, logs[0]
}

func key(i int) []byte { return fmt.Appendf(nil, "key-%04d", i) }

// recordStarts returns the offsets of the records of the log at p, and
// the offset past the last one.
func recordStarts(t *testing.T, p string) ([]int64, int64) {
	t.Helper()
	num, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(p), ".log"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rr := newRecordReader(record.NewReader, f, num)
	var starts []int64
	var end int64
	for {
		at := rr.Offset()
		rec, err := rr.Next()
		if err != nil {
			break
		}
		if _, err := io.Copy(io.Discard, rec); err != nil {
			break
		}
		starts = append(starts, at)
		end = rr.Offset()
	}
	return starts, end
}

// lastRecordOver returns the offset of the log's last record longer than
// over bytes.
func lastRecordOver(t *testing.T, p string, over int64) int64 {
	t.Helper()
	starts, end := recordStarts(t, p)
	last := int64(-1)
	for i, s := range starts {
		next := end
		if i+1 < len(starts) {
			next = starts[i+1]
		}
		if next-s > over {
			last = s
		}
	}
	if last < 0 {
		t.Fatalf("%s holds no record over %d bytes", p, over)
	}
	return last
}

// keysIn opens a checkpoint and reports which of keys 0..n-1 it holds.
func keysIn(t *testing.T, dir string, n int) []bool {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{ReadOnly: true, Logger: pebbleLogger{slog.New(slog.DiscardHandler)}})
	if err != nil {
		t.Fatalf("open the trimmed checkpoint: %v", err)
	}
	defer db.Close()
	out := make([]bool, n)
	for i := range n {
		_, closer, err := db.Get(key(i))
		if err == nil {
			closer.Close()
			out[i] = true
		} else if !errors.Is(err, pebble.ErrNotFound) {
			t.Fatal(err)
		}
	}
	return out
}

func size(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestTrimCheckpointWALCutsOnlyATail(t *testing.T) {
	const n = 200 // about 100 KiB of records: several 32 KiB blocks
	t.Run("a torn last record is cut, the records before it stay", func(t *testing.T) {
		dir, log := walCheckpoint(t, n, false)
		// The last record holding a key (Pebble may log an empty batch
		// after it).
		last := lastRecordOver(t, log, 500)
		if err := os.Truncate(log, last+20); err != nil {
			t.Fatal(err)
		}
		cut, err := TrimCheckpointWAL(dir)
		if err != nil || cut != 20 {
			t.Fatalf("TrimCheckpointWAL = %d, %v; want the torn record's 20 bytes cut", cut, err)
		}
		if got := size(t, log); got != last {
			t.Fatalf("log is %d bytes, want %d", got, last)
		}
		has := keysIn(t, dir, n)
		for i := range n - 1 {
			if !has[i] {
				t.Fatalf("key %d lost", i)
			}
		}
		if has[n-1] {
			t.Fatal("the torn record's key is there")
		}
	})
	t.Run("a record torn at a block's end, its first chunk whole, is cut", func(t *testing.T) {
		// The last record (a 50 KB value) spans blocks; the file ends at the
		// end of its first chunk's block, as a copy made mid-write can.
		dir, log := walCheckpoint(t, n, false, bytes.Repeat([]byte("z"), 50<<10))
		last := lastRecordOver(t, log, 40<<10)
		cutAt := (last/walBlockSize + 1) * walBlockSize
		if err := os.Truncate(log, cutAt); err != nil {
			t.Fatal(err)
		}
		cut, err := TrimCheckpointWAL(dir)
		if err != nil || cut != cutAt-last {
			t.Fatalf("TrimCheckpointWAL = %d, %v; want the torn record's %d bytes cut", cut, err, cutAt-last)
		}
		has := keysIn(t, dir, n+1)
		for i := range n {
			if !has[i] {
				t.Fatalf("key %d lost", i)
			}
		}
		if has[n] {
			t.Fatal("the torn record's key is there")
		}
	})
	t.Run("a zeroed tail is cut", func(t *testing.T) {
		dir, log := walCheckpoint(t, n, false)
		_, end := recordStarts(t, log)
		f, err := os.OpenFile(log, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(make([]byte, 3*32<<10)); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if _, err := TrimCheckpointWAL(dir); err != nil {
			t.Fatal(err)
		}
		if got := size(t, log); got != end {
			t.Fatalf("log is %d bytes after the trim, want %d", got, end)
		}
		for i, ok := range keysIn(t, dir, n) {
			if !ok {
				t.Fatalf("key %d lost", i)
			}
		}
	})
	t.Run("a recycled file's older log is cut", func(t *testing.T) {
		dir, log := walCheckpoint(t, n, true)
		_, end := recordStarts(t, log)
		before := size(t, log)
		if before <= end {
			t.Fatalf("the WAL (%d bytes, records to %d) is not a recycled file with an older tail", before, end)
		}
		cut, err := TrimCheckpointWAL(dir)
		if err != nil || cut != before-end {
			t.Fatalf("TrimCheckpointWAL = %d, %v; want %d cut", cut, err, before-end)
		}
		for i, ok := range keysIn(t, dir, n) {
			if !ok {
				t.Fatalf("key %d lost", i)
			}
		}
	})
	for _, where := range []struct {
		name   string
		record int
	}{{"the first record", 0}, {"a record in the middle", n / 2}, {"a record in the last block", n - 10}} {
		t.Run("corruption in "+where.name+" fails and changes nothing", func(t *testing.T) {
			dir, log := walCheckpoint(t, n, false)
			starts, _ := recordStarts(t, log)
			b, err := os.ReadFile(log)
			if err != nil {
				t.Fatal(err)
			}
			b[starts[where.record]+11+30] ^= 0x40 // inside the payload
			if err := os.WriteFile(log, b, 0o644); err != nil {
				t.Fatal(err)
			}
			cut, err := TrimCheckpointWAL(dir)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("offset %d", starts[where.record])) {
				t.Fatalf("TrimCheckpointWAL = %d, %v; want ErrCorrupt naming offset %d", cut, err, starts[where.record])
			}
			if after, _ := os.ReadFile(log); !bytes.Equal(after, b) {
				t.Fatal("the corrupt WAL was changed")
			}
		})
	}
}
