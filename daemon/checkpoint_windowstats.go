package daemon

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/statedhq/stated/daemon/recovery"
	"github.com/statedhq/stated/raftstore/fsm"
	"github.com/statedhq/stated/uploader"
)

// windowsScratch is the directory, beside the local checkpoints, where a
// checkpoint's window state is read (see checkpointWindows). One name for
// every epoch, so that a copy a crash left behind goes with the next.
const windowsScratch = "windows-scratch"

// checkpointWindows reads each window namespace's watermark, pending
// emissions and open windows from the local checkpoint in dir, which holds
// applied index appliedIndex, for the manifest's statistics.
//
// They are read from the checkpoint itself, not from the live state: the
// checkpoint is made off the apply loop and may hold a few entries past
// its barrier, and the manifest records its own applied index, so only
// the checkpoint's state matches the offsets and the index a restore
// brings back. The checkpoint is opened as a state machine on a scratch
// copy: its tables hard-linked (they never change), its small files (the
// WAL, which the flush before the barrier keeps short, and Pebble's
// manifest and options) copied, because opening Pebble writes to them and
// the checkpoint directory must stay as it was made until it is uploaded.
//
// live lists the namespaces of the live state: window namespaces are
// never removed (a restore replaces the state before the node runs), so a
// state without any had none at the checkpoint either, and the copy is
// skipped. The result is empty, not nil, when there are none.
func checkpointWindows(dir string, appliedIndex uint64, live func() ([]fsm.WindowStatus, error)) ([]uploader.WindowStats, error) {
	now, err := live()
	if err != nil {
		return nil, err
	}
	if len(now) == 0 {
		return []uploader.WindowStats{}, nil
	}
	scratch := filepath.Join(filepath.Dir(dir), windowsScratch)
	if err := os.RemoveAll(scratch); err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)
	if err := linkCheckpoint(dir, scratch); err != nil {
		return nil, fmt.Errorf("daemon: copy of checkpoint %s to read its windows: %w", dir, err)
	}
	f, err := fsm.Open(scratch, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	sts, err := f.WindowStatuses()
	if got := f.AppliedIndex(); err == nil && got != appliedIndex {
		err = fmt.Errorf("daemon: the copy of checkpoint %s holds applied index %d, not %d", dir, got, appliedIndex)
	}
	if err = errors.Join(err, f.Close()); err != nil {
		return nil, err
	}
	return recovery.WindowStats(sts), nil
}

// linkCheckpoint makes dst a copy of the Pebble checkpoint in src: tables
// hard-linked, every other file copied.
func linkCheckpoint(src, dst string) error {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		from, to := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		switch {
		case e.IsDir():
			return fmt.Errorf("unexpected directory %s in a checkpoint", from)
		case strings.HasSuffix(e.Name(), ".sst"):
			if err := os.Link(from, to); err != nil {
				return err
			}
		case e.Name() == "LOCK":
			// Pebble's lock of a read of the checkpoint; the copy takes its own.
		default:
			if err := copyFile(from, to); err != nil {
				return err
			}
		}
	}
	return nil
}

func copyFile(from, to string) (err error) {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, out.Close()) }()
	_, err = io.Copy(out, in)
	return err
}
