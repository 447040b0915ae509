package raftstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/statedhq/stated/raftstore/fsm"
)

// The layout of a data dir, as far as the store is concerned.
const (
	raftDirName  = "raft"  // the Raft log (raft.db or wal/, see logstore.go), Raft snapshots, node-id
	stateDirName = "state" // Pebble, the state machine
	// restoreStagingName holds a restored state while it is prepared, and
	// until InstallRestoredState swaps it in.
	restoreStagingName = ".restore"
	// restoreOldName holds what a swap displaced, until it is deleted.
	restoreOldName = ".restore-old"
	// restoreMarkerName is the commit point of a swap: once it exists, the
	// staged state replaces the old one, whatever crashes after.
	restoreMarkerName = ".restore-swap"
)

// replacedByRestore are the parts of a data dir that belong to the old
// cluster and that a restore replaces: the Raft log, the state, the state
// machine's own restore leftovers, its local checkpoints and the base of
// checkpoint counts (fsm.CountBaseDir) with the copy a count reads. Anything
// else (the default checkpoint bucket under checkpoints/, the socket) is
// left alone.
var replacedByRestore = append(fsm.RestoreLeftovers(stateDirName), raftDirName, "local-checkpoints", stateDirName,
	fsm.CountBaseDir, fsm.CountBaseDir+".tmp", fsm.CountBaseDir+".old", fsm.CountBaseDir+".count")

// swapFailpoint, when set (by tests only), is called at each step of
// InstallRestoredState and of the recovery of an interrupted swap.
var swapFailpoint func(step string)

func failpoint(step string) {
	if swapFailpoint != nil {
		swapFailpoint(step)
	}
}

// RestoreStagingDir is where a restore materialises the new state of
// dataDir before InstallRestoredState swaps it in.
func RestoreStagingDir(dataDir string) string { return filepath.Join(dataDir, restoreStagingName) }

// InstallRestoredState replaces dataDir's Raft log, state and local
// checkpoints with the complete state staged in RestoreStagingDir(dataDir)
// (prepared by fsm.PrepareRestore), so that the next Open bootstraps a new
// cluster from it.
//
// The swap is crash-safe: a crash at any point leaves either the old data
// dir or the new one, whole, once RecoverDataDir has run (Open runs it
// first). It syncs the staged files, then writes a marker file, the commit
// point; then it moves the old parts aside into one directory, renames the
// staged state into place, removes the marker and deletes the old parts.
// Before the marker exists, recovery drops the staging; after, it rolls
// the swap forward. Every step is made durable with an fsync of the
// directory it changed.
//
// A marker or old parts left by an earlier, interrupted swap do no harm:
// this swap's roll forward replaces them.
func InstallRestoredState(dataDir string) error {
	staging := RestoreStagingDir(dataDir)
	if desc, err := pebble.Peek(staging, vfs.Default); err != nil || !desc.Exists {
		return fmt.Errorf("raftstore: install restored state: %s holds no Pebble database (%v)", staging, err)
	}
	// A node running on the data dir holds its state's Pebble lock; the
	// swap would pull its files from under it. Hold the lock until the old
	// state is moved aside, so that no node starts on it meanwhile.
	unlock, err := lockState(dataDir)
	if err != nil {
		return err
	}
	defer unlock()
	if err := syncTree(staging); err != nil {
		return fmt.Errorf("raftstore: install restored state: sync %s: %w", staging, err)
	}
	if err := syncDir(dataDir); err != nil {
		return fmt.Errorf("raftstore: install restored state: %w", err)
	}
	failpoint("staged")
	if err := writeMarker(dataDir); err != nil {
		return err
	}
	failpoint("committed")
	if err := rollForward(dataDir); err != nil {
		return err
	}
	return nil
}

// RecoverDataDir completes or rolls back a restore swap that a crash
// interrupted (see InstallRestoredState), and removes what an interrupted
// restore left behind. Open calls it before it reads anything; it is a
// no-op on a data dir in order.
func RecoverDataDir(dataDir string) error {
	_, err := os.Stat(filepath.Join(dataDir, restoreMarkerName))
	switch {
	case err == nil:
		return rollForward(dataDir)
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("raftstore: recover data dir: %w", err)
	}
	// No swap was committed: the old data dir is in place. Whatever a
	// restore left (a staged state it never installed, the old parts of a
	// finished swap) is garbage.
	for _, p := range []string{restoreOldName, restoreStagingName} {
		if err := os.RemoveAll(filepath.Join(dataDir, p)); err != nil {
			return fmt.Errorf("raftstore: recover data dir: remove %s: %w", p, err)
		}
	}
	return nil
}

// rollForward moves the old parts of dataDir aside, renames the staged
// state into place and removes the marker. Each step can be repeated, so
// recovery after a crash at any point in it completes it.
func rollForward(dataDir string) error {
	staging := RestoreStagingDir(dataDir)
	old := filepath.Join(dataDir, restoreOldName)
	wrap := func(err error) error { return fmt.Errorf("raftstore: install restored state in %s: %w", dataDir, err) }
	if _, err := os.Stat(staging); err == nil {
		// The staged state is not in place yet, so every part still in
		// dataDir is an old one.
		if err := os.MkdirAll(old, 0o700); err != nil {
			return wrap(err)
		}
		for _, p := range replacedByRestore {
			from := filepath.Join(dataDir, p)
			if _, err := os.Lstat(from); errors.Is(err, fs.ErrNotExist) {
				continue
			}
			to := filepath.Join(old, p)
			if err := os.RemoveAll(to); err != nil {
				return wrap(err)
			}
			if err := os.Rename(from, to); err != nil {
				return wrap(err)
			}
			failpoint("moved " + p)
		}
		if err := syncDir(dataDir); err != nil {
			return wrap(err)
		}
		if err := os.Rename(staging, filepath.Join(dataDir, stateDirName)); err != nil {
			return wrap(err)
		}
		if err := syncDir(dataDir); err != nil {
			return wrap(err)
		}
		failpoint("installed")
	} else if !errors.Is(err, fs.ErrNotExist) {
		return wrap(err)
	} else if _, err := os.Stat(filepath.Join(dataDir, stateDirName)); err != nil {
		// The marker says the swap was committed, yet neither the staged
		// state nor the installed one exists: someone removed it.
		return wrap(fmt.Errorf("a restore was committed (%s exists) but neither %s nor %s exists; run `stated restore` again",
			restoreMarkerName, restoreStagingName, stateDirName))
	}
	if err := os.Remove(filepath.Join(dataDir, restoreMarkerName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return wrap(err)
	}
	if err := syncDir(dataDir); err != nil {
		return wrap(err)
	}
	failpoint("uncommitted")
	if err := os.RemoveAll(old); err != nil {
		return wrap(err)
	}
	return nil
}

// DataDirLockName is the file of a data dir's own lock (LockDataDir).
const DataDirLockName = "LOCK"

// LockDataDir takes the lock of dataDir, created if missing, and returns
// its release: a running node holds it for its life, a restore for its
// whole run. It returns ErrDataDirInUse while another holds it. Without
// it, a node started during a restore would remove the restore's staged
// state as what an interrupted restore left behind (RecoverDataDir), the
// restore would go on staging into a new directory, and two restores
// would stage into one. The lock is released by the kernel when its
// process dies.
func LockDataDir(dataDir string) (func(), error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("raftstore: data dir: %w", err)
	}
	unlock, err := lockFile(filepath.Join(dataDir, DataDirLockName))
	if err != nil {
		return nil, fmt.Errorf("%w: %s is in use by a running stated or a restore; wait for it to end or stop it (%v)",
			ErrDataDirInUse, dataDir, err)
	}
	return unlock, nil
}

// CheckNotInUse returns ErrDataDirInUse when a running node holds
// dataDir's state. A restore checks it before it downloads anything;
// InstallRestoredState checks again, and holds the lock while it swaps.
func CheckNotInUse(dataDir string) error {
	unlock, err := lockState(dataDir)
	if err != nil {
		return err
	}
	unlock()
	return nil
}

// lockState takes the Pebble lock of dataDir's state, if there is a
// state, and returns its release.
func lockState(dataDir string) (func(), error) {
	state := filepath.Join(dataDir, stateDirName)
	if _, err := os.Stat(state); errors.Is(err, fs.ErrNotExist) {
		return func() {}, nil
	}
	l, err := vfs.Default.Lock(filepath.Join(state, "LOCK"))
	if err != nil {
		return nil, fmt.Errorf("%w: %s is in use, probably by a running stated; stop it before restoring into its data dir (%v)",
			ErrDataDirInUse, dataDir, err)
	}
	return func() { l.Close() }, nil
}

// writeMarker creates the marker file durably: the file, then its
// directory entry.
func writeMarker(dataDir string) error {
	p := filepath.Join(dataDir, restoreMarkerName)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err == nil {
		_, err = f.WriteString("stated restore: the state in " + restoreStagingName + " replaces raft/ and state/; the next start completes the swap\n")
		if err2 := f.Sync(); err == nil {
			err = err2
		}
		if err2 := f.Close(); err == nil {
			err = err2
		}
	}
	if err == nil {
		err = syncDir(dataDir)
	}
	if err != nil {
		return fmt.Errorf("raftstore: install restored state: write %s: %w", p, err)
	}
	return nil
}

// syncTree fsyncs every file and directory under root, so that a staged
// state (downloaded files, hard links, Pebble's own files) is on disk
// before the swap commits to it.
func syncTree(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = f.Sync()
		if err2 := f.Close(); err == nil {
			err = err2
		}
		return err
	})
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if err2 := d.Close(); err == nil {
		err = err2
	}
	return err
}
