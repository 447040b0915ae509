package raftstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// treeState is every file and directory under root with its mode, size,
// modification time and contents' hash: what "nothing changed on disk"
// compares.
func treeState(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		desc := fmt.Sprintf("%s %d %d", info.Mode(), info.Size(), info.ModTime().UnixNano())
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffTrees(before, after map[string]string) []string {
	var diffs []string
	for p, b := range before {
		if a, ok := after[p]; !ok {
			diffs = append(diffs, "removed "+p)
		} else if a != b {
			diffs = append(diffs, "changed "+p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			diffs = append(diffs, "created "+p)
		}
	}
	return diffs
}

func TestOpenRefusesADataDirWhoseRaftLogIsTheOtherStoreAndChangesNothing(t *testing.T) {
	for _, tc := range []struct{ created, asked string }{
		{LogStoreBoltDB, LogStoreWAL},
		{LogStoreWAL, LogStoreBoltDB},
	} {
		t.Run(tc.created+" opened with "+tc.asked, func(t *testing.T) {
			cfg := storeConfig(tc.created, t.TempDir())
			s := openStore(t, cfg)
			for range 10 {
				addOne(t, s)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			before := treeState(t, cfg.Dir)

			other := cfg
			other.LogStore = tc.asked
			for range 2 { // refusing changes nothing: it refuses again
				s, err := Open(context.Background(), other)
				if err == nil {
					s.Close()
					t.Fatalf("a %s data dir opened with LogStore %s", tc.created, tc.asked)
				}
				if !errors.Is(err, ErrLogStoreMismatch) {
					t.Fatalf("err = %v, want ErrLogStoreMismatch", err)
				}
				for _, want := range []string{
					"Raft log is " + tc.created, logStorePath(tc.created),
					"--raft-log-store " + tc.asked + " cannot open it", "--raft-log-store " + tc.created,
					"new data dir",
				} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("refusal %q does not say %q", err, want)
					}
				}
				if d := diffTrees(before, treeState(t, cfg.Dir)); len(d) > 0 {
					t.Fatalf("the refusal changed the data dir: %s", strings.Join(d, ", "))
				}
			}

			// Without a store named, the data dir's own opens, whole.
			omitted := cfg
			omitted.LogStore = ""
			s = openStore(t, omitted)
			defer s.Close()
			if s.LogStore() != tc.created {
				t.Fatalf("LogStore() = %q with the store omitted, want the data dir's %q", s.LogStore(), tc.created)
			}
			if got := counter(t, s); got != 10 {
				t.Fatalf("counter = %d after reopening with the store omitted, want 10", got)
			}
			if _, err := os.Lstat(filepath.Join(cfg.Dir, logStorePath(tc.asked))); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s exists beside the %s log (%v)", logStorePath(tc.asked), tc.created, err)
			}
		})
	}
}

func TestANewDataDirGetsTheNamedStoreOrTheDefault(t *testing.T) {
	for _, asked := range []string{"", LogStoreWAL, LogStoreBoltDB} {
		t.Run("asked "+asked, func(t *testing.T) {
			cfg := storeConfig(asked, t.TempDir())
			s := openStore(t, cfg)
			defer s.Close()
			want := asked
			if want == "" {
				want = DefaultLogStore
			}
			if s.LogStore() != want {
				t.Fatalf("LogStore() = %q, want %q", s.LogStore(), want)
			}
			if _, err := os.Stat(filepath.Join(cfg.Dir, logStorePath(want))); err != nil {
				t.Fatalf("no %s in the new data dir: %v", logStorePath(want), err)
			}
		})
	}
}

func TestOpenRefusesADataDirHoldingBothLogStores(t *testing.T) {
	cfg := storeConfig(LogStoreBoltDB, t.TempDir())
	s := openStore(t, cfg)
	addOne(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(cfg.Dir, raftDirName, walDirName), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, asked := range []string{"", LogStoreWAL, LogStoreBoltDB} {
		cfg.LogStore = asked
		s, err := Open(context.Background(), cfg)
		if err == nil {
			s.Close()
			t.Fatalf("LogStore %q: a data dir holding both logs opened", asked)
		}
		if !errors.Is(err, ErrLogStoreMismatch) || !strings.Contains(err.Error(), "both") {
			t.Fatalf("LogStore %q: err = %v, want ErrLogStoreMismatch saying it holds both", asked, err)
		}
	}
}

func TestWALStoreReopensInTheSameProcess(t *testing.T) {
	// raft-wal v0.4.0 left its metadata file open (and locked) on Close;
	// a reopen in the same process waited for the lock forever. v0.4.1
	// closes it.
	dir := t.TempDir()
	hlog := hclogAdapter(slog.New(slog.DiscardHandler))
	for i := range 3 {
		opened := make(chan error, 1)
		go func() {
			ls, err := openLogStore(dir, LogStoreWAL, hlog)
			if err == nil {
				err = ls.SetUint64([]byte("k"), uint64(i+1))
				err = errors.Join(err, ls.Close())
			}
			opened <- err
		}()
		select {
		case err := <-opened:
			if err != nil {
				t.Fatalf("open, write and close %d: %v", i, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("open %d still waits after 30s: the previous Close left the log's files locked", i)
		}
	}
}

func TestWALStoreReopensInTheSameProcessAfterAFailedOpen(t *testing.T) {
	// raft-wal's Open returns errors found after it opened its metadata
	// file without closing it (v0.4.1 too); openWAL closes it, or the
	// next open in this process would wait for the file's lock forever.
	dir := t.TempDir()
	hlog := hclogAdapter(slog.New(slog.DiscardHandler))
	ls, err := openLogStore(dir, LogStoreWAL, hlog)
	if err != nil {
		t.Fatal(err)
	}
	var logs []*raft.Log
	for i := uint64(1); i <= 10; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand})
	}
	// A tail truncation seals the first segment and starts another.
	if err := errors.Join(ls.StoreLogs(logs), ls.DeleteRange(9, 10), ls.Close()); err != nil {
		t.Fatal(err)
	}
	segs, err := filepath.Glob(filepath.Join(dir, walDirName, "*.wal"))
	if err != nil || len(segs) != 2 {
		t.Fatalf("segments after a tail truncation: %v, %v; want 2", segs, err)
	}
	// The sealed segment (the lowest base index, first by name) goes:
	// Open finds the metadata naming it and fails.
	if err := os.Remove(segs[0]); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		opened := make(chan error, 1)
		go func() {
			ls, err := openLogStore(dir, LogStoreWAL, hlog)
			if err == nil {
				ls.Close()
			}
			opened <- err
		}()
		select {
		case err := <-opened:
			if err == nil {
				t.Fatalf("open %d of a log missing a segment succeeded", i)
			}
			if !strings.Contains(err.Error(), logStorePath(LogStoreWAL)) {
				t.Fatalf("open %d: error %q does not name %s", i, err, logStorePath(LogStoreWAL))
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("open %d still waits after 30s: the failed open before it left wal-meta.db locked", i)
		}
	}
}

func TestEveryLogStoreHidesCompactedEntries(t *testing.T) {
	// Raft sends a snapshot to a follower that needs an entry the leader
	// compacted away only if GetLog says it is not found.
	hlog := hclogAdapter(slog.New(slog.DiscardHandler))
	for _, kind := range []string{LogStoreBoltDB, LogStoreWAL} {
		t.Run(kind, func(t *testing.T) {
			ls, err := openLogStore(t.TempDir(), kind, hlog)
			if err != nil {
				t.Fatal(err)
			}
			defer ls.Close()
			var logs []*raft.Log
			for i := uint64(1); i <= 20; i++ {
				logs = append(logs, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte{byte(i)}})
			}
			if err := ls.StoreLogs(logs); err != nil {
				t.Fatal(err)
			}
			if err := ls.DeleteRange(1, 15); err != nil {
				t.Fatal(err)
			}
			if first, err := ls.FirstIndex(); err != nil || first != 16 {
				t.Fatalf("FirstIndex = %d, %v; want 16", first, err)
			}
			var l raft.Log
			for _, i := range []uint64{1, 15, 21} {
				if err := ls.GetLog(i, &l); !errors.Is(err, raft.ErrLogNotFound) {
					t.Errorf("GetLog(%d) after compacting 1..15 of 1..20: err = %v (entry %d), want ErrLogNotFound", i, err, l.Index)
				}
			}
			if err := ls.GetLog(16, &l); err != nil || l.Index != 16 || l.Data[0] != 16 {
				t.Fatalf("GetLog(16) = %+v, %v", l, err)
			}
		})
	}
}
