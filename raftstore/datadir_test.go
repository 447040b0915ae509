package raftstore

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/statedhq/stated/internal/testenv"
	"github.com/statedhq/stated/raftstore/fsm"
)

// The crash helper runs in a child process of the test binary: it
// installs (or recovers) the data dir in $STATED_TEST_SWAP_DIR and kills
// itself with SIGKILL at the failpoint $STATED_TEST_SWAP_CRASH_AT.
const (
	envSwapDir   = "STATED_TEST_SWAP_DIR"
	envSwapCrash = "STATED_TEST_SWAP_CRASH_AT"
	envSwapOp    = "STATED_TEST_SWAP_OP"
)

func TestInstallRestoredStateCrashHelper(t *testing.T) {
	dir := os.Getenv(envSwapDir)
	if dir == "" {
		t.Skip("runs only as the child process of the restore swap crash test")
	}
	at := os.Getenv(envSwapCrash)
	swapFailpoint = func(step string) {
		if step == at {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}
	defer func() { swapFailpoint = nil }()
	op := InstallRestoredState
	if os.Getenv(envSwapOp) == "recover" {
		op = RecoverDataDir
	}
	if err := op(dir); err != nil {
		t.Fatal(err)
	}
}

// crashAt runs op ("install" or "recover") on dir in a child process that
// is SIGKILLed at step; it fails the test unless the child died there.
func crashAt(t *testing.T, dir, op, step string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestInstallRestoredStateCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), envSwapDir+"="+dir, envSwapCrash+"="+step, envSwapOp+"="+op)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("%s did not crash at %q (err %v): %s", op, step, err, out)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("%s at %q: child ended with %v, not SIGKILL: %s", op, step, err, out)
	}
}

// copyDir copies the directory tree src to dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
}

// restoreFixtures makes, once, the data dir of a node whose counter is at
// 5, with a Raft log and a local checkpoint (the old one), and a state
// prepared by fsm.PrepareRestore whose counter is at 7 (the new one).
func restoreFixtures(t *testing.T, logStore string) (oldDir, staged string) {
	t.Helper()
	root := t.TempDir()
	oldDir = filepath.Join(root, "old")
	s := openStore(t, storeConfig(logStore, oldDir))
	for range 5 {
		addOne(t, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The base the old node's checkpoint coordinator counts from.
	counts := fsm.NewCheckpointCounter(filepath.Join(oldDir, fsm.CountBaseDir))
	ckpt := filepath.Join(oldDir, "local-checkpoints", "00000000000000000001")
	n, err := counts.Count(ctx, ckpt)
	if err != nil {
		t.Fatal(err)
	}
	if err := counts.Keep(ckpt, 1, n); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(root, "other")
	s = openStore(t, storeConfig(logStore, other))
	for range 7 {
		addOne(t, s)
	}
	applied := s.AppliedIndex()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	staged = filepath.Join(root, "staged")
	copyDir(t, filepath.Join(other, stateDirName), staged)
	if err := fsm.PrepareRestore(staged, fsm.RestoredFrom{Epoch: 4, RaftIndex: applied, ClusterID: "the-old-cluster"}, 4); err != nil {
		t.Fatal(err)
	}
	return oldDir, staged
}

// checkWholeDataDir opens the store on dir and checks it is the old data
// dir (counter 5, its Raft log and local checkpoint) or the new one
// (counter 7, a new cluster bootstrapped on the restored state), whole;
// then that a commit applies, and survives a restart.
func checkWholeDataDir(t *testing.T, logStore, dir string, wantNew bool) {
	t.Helper()
	cfg := storeConfig(logStore, dir)
	cfg.Bootstrap = true
	s := openStore(t, cfg)
	defer func() { s.Close() }()
	_, restored, err := s.RestoredFrom()
	if err != nil {
		t.Fatal(err)
	}
	ckpts, _ := os.ReadDir(filepath.Join(dir, "local-checkpoints"))
	_, err = os.Stat(filepath.Join(dir, fsm.CountBaseDir))
	base := err == nil
	got := counter(t, s)
	switch {
	case wantNew && (got != 7 || !restored || s.HadState() || len(ckpts) != 0 || base):
		t.Fatalf("want the new data dir whole: counter %d (want 7), restored %v, had Raft state %v, local checkpoints %d, the old count base %v",
			got, restored, s.HadState(), len(ckpts), base)
	case !wantNew && (got != 5 || restored || !s.HadState() || len(ckpts) != 1 || !base):
		t.Fatalf("want the old data dir whole: counter %d (want 5), restored %v, had Raft state %v, local checkpoints %d, its count base %v",
			got, restored, s.HadState(), len(ckpts), base)
	}
	for _, p := range []string{restoreStagingName, restoreOldName, restoreMarkerName} {
		if _, err := os.Lstat(filepath.Join(dir, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left in the data dir after recovery (%v)", p, err)
		}
	}
	addOne(t, s)
	if c := counter(t, s); c != got+1 {
		t.Fatalf("counter after one more commit = %d, want %d: the entry was not applied", c, got+1)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, cfg)
	if c := counter(t, s); c != got+1 {
		t.Fatalf("counter after a restart = %d, want %d", c, got+1)
	}
}

func TestRestoreSwapLeavesTheOldOrTheNewDataDirWholeWhateverStepItCrashesAt(t *testing.T) {
	if testenv.Race {
		t.Skip("crash steps of a data dir swap, on one goroutine: 17 s under the race detector; go test ./raftstore runs it")
	}
	forEachLogStore(t, func(t *testing.T, logStore string) {
		oldDir, staged := restoreFixtures(t, logStore)
		for _, tc := range []struct {
			name string
			// crashes are (operation, failpoint) in order; the recovery that
			// Open runs follows the last.
			crashes [][2]string
			// reinstall runs InstallRestoredState again after the crashes,
			// before any recovery.
			reinstall bool
			wantNew   bool
		}{
			{"no crash", nil, false, true},
			{"staged, not committed", [][2]string{{"install", "staged"}}, false, false},
			{"committed", [][2]string{{"install", "committed"}}, false, true},
			{"raft moved aside", [][2]string{{"install", "moved raft"}}, false, true},
			{"local checkpoints moved aside", [][2]string{{"install", "moved local-checkpoints"}}, false, true},
			{"state moved aside", [][2]string{{"install", "moved state"}}, false, true},
			{"count base moved aside", [][2]string{{"install", "moved " + fsm.CountBaseDir}}, false, true},
			{"new state in place", [][2]string{{"install", "installed"}}, false, true},
			{"marker removed", [][2]string{{"install", "uncommitted"}}, false, true},
			{"again during recovery", [][2]string{{"install", "moved raft"}, {"recover", "moved state"}, {"recover", "installed"}}, false, true},
			{"installed again over a committed swap", [][2]string{{"install", "moved state"}}, true, true},
			{"installed again over an uncommitted swap", [][2]string{{"install", "staged"}}, true, true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				dir := filepath.Join(t.TempDir(), "data")
				copyDir(t, oldDir, dir)
				copyDir(t, staged, RestoreStagingDir(dir))
				if len(tc.crashes) == 0 {
					if err := InstallRestoredState(dir); err != nil {
						t.Fatal(err)
					}
				}
				for _, c := range tc.crashes {
					crashAt(t, dir, c[0], c[1])
				}
				if tc.reinstall {
					if err := InstallRestoredState(dir); err != nil {
						t.Fatalf("install again: %v", err)
					}
				}
				checkWholeDataDir(t, logStore, dir, tc.wantNew)
			})
		}
	})
}

func TestInstallRestoredStateRefusesAStagingWithoutADatabase(t *testing.T) {
	oldDir, _ := restoreFixtures(t, LogStoreBoltDB)
	dir := filepath.Join(t.TempDir(), "data")
	copyDir(t, oldDir, dir)
	if err := os.MkdirAll(RestoreStagingDir(dir), 0o700); err != nil {
		t.Fatal(err)
	}
	err := InstallRestoredState(dir)
	if err == nil || !strings.Contains(err.Error(), "holds no Pebble database") {
		t.Fatalf("err = %v, want a refusal naming the empty staging", err)
	}
	if err := os.RemoveAll(RestoreStagingDir(dir)); err != nil {
		t.Fatal(err)
	}
	checkWholeDataDir(t, LogStoreBoltDB, dir, false)
}

func TestInstallRestoredStateRefusesADataDirInUse(t *testing.T) {
	oldDir, staged := restoreFixtures(t, LogStoreBoltDB)
	dir := filepath.Join(t.TempDir(), "data")
	copyDir(t, oldDir, dir)
	s := openStore(t, testConfig(dir))
	copyDir(t, staged, RestoreStagingDir(dir))
	if err := InstallRestoredState(dir); !errors.Is(err, ErrDataDirInUse) {
		s.Close()
		t.Fatalf("restore into the data dir of a running node: err = %v, want ErrDataDirInUse", err)
	}
	addOne(t, s) // the running node is untouched
	if got := counter(t, s); got != 6 {
		t.Fatalf("counter of the running node = %d, want 6", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := InstallRestoredState(dir); err != nil {
		t.Fatalf("restore once the node stopped: %v", err)
	}
	checkWholeDataDir(t, LogStoreBoltDB, dir, true)
}

func TestOpenRefusesStateWithoutARaftLog(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		cfg := storeConfig(logStore, t.TempDir())
		cfg.Bootstrap = true
		s := openStore(t, cfg)
		for range 5 {
			addOne(t, s)
		}
		applied := s.AppliedIndex()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		// What an interrupted restore of an older version left: state applied
		// up to some index, and no Raft log.
		if err := os.RemoveAll(filepath.Join(cfg.Dir, raftDirName)); err != nil {
			t.Fatal(err)
		}
		for range 2 { // refusing changes nothing: it refuses again
			s, err := Open(context.Background(), cfg)
			if err == nil {
				s.Close()
				t.Fatal("Open bootstrapped a new cluster on state without a Raft log")
			}
			if !errors.Is(err, ErrStateWithoutLog) {
				t.Fatalf("err = %v, want ErrStateWithoutLog", err)
			}
			for _, want := range []string{cfg.Dir, "index " + strconv.FormatUint(applied, 10), "stated restore", "--join"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("refusal %q does not say %q", err, want)
				}
			}
			if _, err := os.Lstat(filepath.Join(cfg.Dir, raftDirName)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the refusal created %s/ (%v)", raftDirName, err)
			}
		}
		// A log that holds nothing is no log either.
		if err := os.MkdirAll(filepath.Join(cfg.Dir, raftDirName), 0o700); err != nil {
			t.Fatal(err)
		}
		empty := filepath.Join(cfg.Dir, logStorePath(logStore))
		if logStore == LogStoreWAL {
			if err := os.Mkdir(empty, 0o700); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(empty, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if s, err := Open(context.Background(), cfg); !errors.Is(err, ErrStateWithoutLog) {
			if err == nil {
				s.Close()
			}
			t.Fatalf("with an empty %s: err = %v, want ErrStateWithoutLog", empty, err)
		}
	})
}

func TestRestartWithCurrentStateDoesNotRebuildItWhenTheSnapshotEndsOnANonCommand(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		cfg := storeConfig(logStore, t.TempDir())
		s := openStore(t, cfg)
		for range 10 {
			addOne(t, s)
		}
		// End the log on entries the state machine never sees (a barrier),
		// then snapshot: the snapshot's Raft index is above the applied index.
		if err := s.raft.Barrier(5 * time.Second).Error(); err != nil {
			t.Fatal(err)
		}
		if err := s.Snapshot(); err != nil {
			t.Fatal(err)
		}
		metas, err := s.snaps.List()
		if err != nil || len(metas) == 0 {
			t.Fatalf("no snapshot: %v", err)
		}
		if metas[0].Index <= s.AppliedIndex() {
			t.Fatalf("snapshot index %d is not above the applied index %d: the test does not test anything", metas[0].Index, s.AppliedIndex())
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			before, err := os.Stat(filepath.Join(cfg.Dir, stateDirName))
			if err != nil {
				t.Fatal(err)
			}
			s = openStore(t, cfg)
			after, err := os.Stat(filepath.Join(cfg.Dir, stateDirName))
			if err != nil {
				t.Fatal(err)
			}
			if !os.SameFile(before, after) {
				t.Fatalf("restart %d rebuilt the current state from the snapshot (the state dir was replaced)", i+1)
			}
			if got := counter(t, s); got != int64(10+i) {
				t.Fatalf("counter after restart %d = %d, want %d", i+1, got, 10+i)
			}
			addOne(t, s)
			if err := s.raft.Barrier(5 * time.Second).Error(); err != nil {
				t.Fatal(err)
			}
			if err := s.Snapshot(); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestStateReplacedByAnOlderCopyBehindTheSnapshotIsRefused(t *testing.T) {
	// The snapshot refers to the state, and the log before it is
	// compacted: an older copy of state/ cannot be brought forward from
	// this disk, and is not served as if it were current.
	forEachLogStore(t, func(t *testing.T, logStore string) {
		cfg := storeConfig(logStore, t.TempDir())
		cfg.TrailingLogs = 5
		s := openStore(t, cfg)
		for range 20 {
			addOne(t, s)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		stale := filepath.Join(t.TempDir(), "stale-state")
		copyDir(t, filepath.Join(cfg.Dir, stateDirName), stale)
		s = openStore(t, cfg)
		for range 30 {
			addOne(t, s)
		}
		if err := s.raft.Barrier(5 * time.Second).Error(); err != nil {
			t.Fatal(err)
		}
		if err := s.Snapshot(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		// Pebble went back to counter 20 while the log was compacted past it.
		if err := os.RemoveAll(filepath.Join(cfg.Dir, stateDirName)); err != nil {
			t.Fatal(err)
		}
		copyDir(t, stale, filepath.Join(cfg.Dir, stateDirName))
		if _, err := Open(context.Background(), cfg); !errors.Is(err, fsm.ErrStateBehindSnapshot) {
			t.Fatalf("open with state/ replaced by an older copy: %v, want ErrStateBehindSnapshot", err)
		}
	})
}
