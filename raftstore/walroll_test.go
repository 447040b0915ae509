package raftstore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/types"
)

// crashingMeta is raft-wal's metadata store whose commits fail once crash
// is set: what is on disk after a failed commit is what a crash just
// before it leaves, as long as nothing else is written after it.
type crashingMeta struct {
	*metadb.BoltMetaDB
	crash bool
}

func (m *crashingMeta) CommitState(s types.PersistentState) error {
	if m.crash {
		return errors.New("crashed before the metadata commit")
	}
	return m.BoltMetaDB.CommitState(s)
}

// tearLastCommit zeroes the last commit frame written to the segment file
// at path, as a crash in the middle of the append that wrote it can leave
// it.
func tearLastCommit(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	end := len(b)
	for end > 0 && b[end-1] == 0 {
		end--
	}
	end = (end + 7) &^ 7 // frames are 8-byte aligned
	if end < 8 || b[end-8] != 3 {
		t.Fatalf("the last frame written to %s is not a commit frame", path)
	}
	copy(b[end-8:end], make([]byte, 8))
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A crash in a segment roll leaves a tail segment sealed on disk that the
// metadata calls unsealed. raft-wal v0.4.1 opens it as the tail and fails
// every append after it with "segment is sealed", at every restart: the
// node can never write its log again. openWAL finishes the roll, and the
// log reopens with every entry it had and takes appends.
func TestTheWALTakesAppendsAfterACrashInASegmentRoll(t *testing.T) {
	hlog := hclogAdapter(slog.New(slog.DiscardHandler))
	entry := func(i uint64) *raft.Log {
		return &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: fmt.Appendf(nil, "entry %d", i)}
	}
	for _, tc := range []struct {
		name string
		// crash writes the log in a WAL of 1 MiB segments whose metadata
		// commits fail once m.crash is set, and returns its last entry.
		crash func(t *testing.T, w *wal.WAL, m *crashingMeta, dir string) uint64
	}{
		{"after the append that filled the segment, before the roll's commit", func(t *testing.T, w *wal.WAL, m *crashingMeta, dir string) uint64 {
			m.crash = true
			return appendBatches(t, w, 1, 1) // 1 MiB: seals the segment
		}},
		{"in the middle of the append that filled the segment", func(t *testing.T, w *wal.WAL, m *crashingMeta, dir string) uint64 {
			if err := w.StoreLogs([]*raft.Log{entry(1), entry(2)}); err != nil {
				t.Fatal(err)
			}
			m.crash = true
			appendBatches(t, w, 3, 1)
			segs, err := filepath.Glob(filepath.Join(dir, "*.wal"))
			if err != nil || len(segs) != 1 {
				t.Fatalf("segments %v, %v; want 1", segs, err)
			}
			tearLastCommit(t, segs[0])
			return 2 // the torn append was never acknowledged
		}},
		{"in the middle of the first append into a segment, which filled it", func(t *testing.T, w *wal.WAL, m *crashingMeta, dir string) uint64 {
			m.crash = true
			appendBatches(t, w, 1, 1)
			segs, err := filepath.Glob(filepath.Join(dir, "*.wal"))
			if err != nil || len(segs) != 1 {
				t.Fatalf("segments %v, %v; want 1", segs, err)
			}
			tearLastCommit(t, segs[0])
			return 0
		}},
		{"in a tail truncation, after the seal, before its commit", func(t *testing.T, w *wal.WAL, m *crashingMeta, dir string) uint64 {
			var logs []*raft.Log
			for i := uint64(1); i <= 30; i++ {
				logs = append(logs, entry(i))
			}
			if err := w.StoreLogs(logs); err != nil {
				t.Fatal(err)
			}
			m.crash = true
			if err := w.DeleteRange(21, 30); err == nil {
				t.Fatal("DeleteRange succeeded without its metadata commit")
			}
			return 30 // the truncation never happened
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			m := &crashingMeta{BoltMetaDB: &metadb.BoltMetaDB{}}
			w, err := wal.Open(dir, wal.WithMetaStore(m), wal.WithSegmentSize(1<<20), wal.WithSegmentFiler(newReleasingFiler(dir)))
			if err != nil {
				t.Fatal(err)
			}
			want := tc.crash(t, w, m, dir)
			w.Close()
			wantData := map[uint64][]byte{}
			for round := range 2 { // and again after an append since
				ls, err := openWAL(dir, hlog)
				if err != nil {
					t.Fatalf("reopen %d: %v", round, err)
				}
				if last, err := ls.LastIndex(); err != nil || last != want {
					ls.Close()
					t.Fatalf("reopen %d: LastIndex = %d, %v; want %d", round, last, err, want)
				}
				for i := uint64(1); i <= want; i++ {
					var l raft.Log
					if err := ls.GetLog(i, &l); err != nil || l.Index != i {
						ls.Close()
						t.Fatalf("reopen %d: GetLog(%d) = entry %d, %v", round, i, l.Index, err)
					}
					if d, ok := wantData[i]; ok && string(d) != string(l.Data) {
						ls.Close()
						t.Fatalf("reopen %d: entry %d changed", round, i)
					}
					wantData[i] = l.Data
				}
				want++
				err = ls.StoreLogs([]*raft.Log{entry(want)})
				ls.Close()
				if err != nil {
					t.Fatalf("reopen %d: append %d after a crash in a segment roll: %v", round, want, err)
				}
			}
		})
	}
}
