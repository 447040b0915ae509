package fsm

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// logFiles lists the WAL files in dir with their sizes.
func logFiles(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	logs, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, l := range logs {
		if fi, err := os.Stat(l); err == nil { // a log may be deleted meanwhile
			out[filepath.Base(l)] = fi.Size()
		}
	}
	return out
}

// TestStateStoreDoesNotRecycleWALFiles opens Pebble with the state
// machine's options (a smaller memtable, so that logs rotate quickly),
// rotates the log many times with flushes and checkpoints in between,
// and checks that each checkpoint's WAL ends at its last valid record
// (nothing for TrimCheckpointWAL to cut) and that obsolete WAL files are
// deleted rather than kept for reuse.
func TestStateStoreDoesNotRecycleWALFiles(t *testing.T) {
	opts := PebbleOptions()
	opts.MemTableSize = 1 << 20
	dbDir := filepath.Join(t.TempDir(), "db")
	db, err := pebble.Open(dbDir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	value := bytes.Repeat([]byte("v"), 1000)
	for round := range 8 {
		// Most of a memtable, so that a recycled file would be large,
		// then a flush (a new log), then a few writes into the new log.
		for i := range 700 {
			if err := db.Set(fmt.Appendf(nil, "big-%d-%04d", round, i), value, pebble.NoSync); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.Flush(); err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			if err := db.Set(fmt.Appendf(nil, "small-%d-%04d", round, i), value, pebble.Sync); err != nil {
				t.Fatal(err)
			}
		}
		cp := filepath.Join(t.TempDir(), "cp")
		if err := db.Checkpoint(cp, pebble.WithFlushedWAL()); err != nil {
			t.Fatal(err)
		}
		logs := logFiles(t, cp)
		if len(logs) == 0 {
			t.Fatalf("round %d: the checkpoint holds no WAL", round)
		}
		for name, size := range logs {
			num, err := strconv.ParseUint(strings.TrimSuffix(name, ".log"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(filepath.Join(cp, name))
			if err != nil {
				t.Fatal(err)
			}
			end, _, err := validEnd(f, num)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			// 20 records of about 1 KB: a recycled file would be as
			// large as the previous log, about 700 KB.
			if end != size || size > 64<<10 {
				t.Fatalf("round %d: checkpoint WAL %s is %d bytes, its records end at %d: a recycled file's tail", round, name, size, end)
			}
		}
		if cut, err := TrimCheckpointWAL(cp); err != nil || cut != 0 {
			t.Fatalf("round %d: TrimCheckpointWAL = %d, %v; want nothing to cut", round, cut, err)
		}
	}
	// Obsolete logs are deleted (in the background): the directory keeps
	// the live log, and nothing grows with the rounds.
	deadline := time.Now().Add(10 * time.Second)
	for {
		logs := logFiles(t, dbDir)
		if len(logs) <= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 8 flushes the data dir keeps WAL files %v; want only the live one", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if m := db.Metrics(); m.WAL.ObsoleteFiles != 0 {
		t.Fatalf("Pebble keeps %d obsolete WAL files (%d bytes) for reuse; want none", m.WAL.ObsoleteFiles, m.WAL.ObsoletePhysicalSize)
	}
}
