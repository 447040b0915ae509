package raftstore

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// DefaultSnapshotBytes is Config.SnapshotBytes unless set otherwise.
//
// Raft's own trigger counts entries (SnapshotThreshold, 8192): with small
// commits it snapshots long before 256 MiB of log (8192 entries of 32 KiB
// are 256 MiB), so this trigger only acts on large commits, whose 8192
// entries could hold 8 to 32 GB. A restart re-reads the log after the
// newest snapshot: the growth study's restart took 5.9 s with 1 GB of it,
// so 256 MiB keeps that part to a second or two. A snapshot this node
// takes writes a reference to the state, not the state (fsm.Snapshot), so
// snapshotting often costs next to nothing.
const DefaultSnapshotBytes = 256 << 20

// snapshotTrigger takes a Raft snapshot when the log since the newest
// snapshot holds Config.SnapshotBytes bytes of entries; see
// snapshotIfDue.
type snapshotTrigger struct {
	// mu orders the start of a snapshot with Close: once closing is set,
	// none starts.
	mu      sync.Mutex
	closing bool
	stop    context.CancelFunc
	done    chan struct{}
}

// SnapshotBytesStatus is where the log stands against the size trigger.
type SnapshotBytesStatus struct {
	// SinceSnapshot is the bytes of log entries since the newest snapshot,
	// in Entries command entries.
	SinceSnapshot uint64
	Entries       uint64
	// Threshold is Config.SnapshotBytes: a snapshot is taken once
	// SinceSnapshot reaches it. 0 when the trigger is off.
	Threshold uint64
}

// SnapshotBytesStatus returns the size trigger's counts; cheap.
func (s *Store) SnapshotBytesStatus() SnapshotBytesStatus {
	lb := s.fsm.LogBytes()
	st := SnapshotBytesStatus{SinceSnapshot: lb.SinceSnapshot, Entries: lb.Entries}
	if s.cfg.SnapshotBytes > 0 {
		st.Threshold = uint64(s.cfg.SnapshotBytes)
	}
	return st
}

// startSnapshotTrigger starts the goroutine that checks the size trigger,
// unless Config.SnapshotBytes is 0.
func (s *Store) startSnapshotTrigger() {
	if s.cfg.SnapshotBytes <= 0 {
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	s.trigger.stop, s.trigger.done = stop, make(chan struct{})
	go s.runSnapshotTrigger(ctx)
}

// stopSnapshotTrigger makes sure no size-triggered snapshot starts from now
// on; one running ends with Raft's shutdown (waitSnapshotTrigger).
func (s *Store) stopSnapshotTrigger() {
	t := &s.trigger
	t.mu.Lock()
	t.closing = true
	t.mu.Unlock()
	if t.stop != nil {
		t.stop()
	}
}

func (s *Store) waitSnapshotTrigger() {
	if s.trigger.done != nil {
		<-s.trigger.done
	}
}

// snapshotCheckEvery is how often the size trigger looks at the counts:
// a few atomic loads, so every second, or every SnapshotInterval if that
// is shorter.
func (s *Store) snapshotCheckEvery() time.Duration {
	return min(s.cfg.SnapshotInterval, time.Second)
}

func (s *Store) runSnapshotTrigger(ctx context.Context) {
	defer close(s.trigger.done)
	t := time.NewTicker(s.snapshotCheckEvery())
	defer t.Stop()
	var notBefore time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if now.Before(notBefore) {
				continue
			}
		}
		if err := s.snapshotIfDue(); err != nil {
			if errors.Is(err, raft.ErrRaftShutdown) {
				return
			}
			// After a failure, wait a SnapshotInterval before trying
			// again rather than fail every second.
			s.logger.Warn("size-triggered raft snapshot failed", "error", err)
			notBefore = time.Now().Add(s.cfg.SnapshotInterval)
		}
	}
}

// snapshotIfDue takes a Raft snapshot when the log since the newest one
// reached the threshold. Nothing new to snapshot is not an error: another
// snapshot got there first.
func (s *Store) snapshotIfDue() error {
	st := s.SnapshotBytesStatus()
	if st.Threshold == 0 || st.SinceSnapshot < st.Threshold {
		return nil
	}
	t := &s.trigger
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		return nil
	}
	orig := s.raft.ReloadableConfig()
	trailing := trailingEntries(st, max(st.Threshold, s.fsm.DiskSize()), orig.TrailingLogs)
	s.logger.Info("taking a raft snapshot: the log since the last one reached the size threshold",
		"log_bytes_since_snapshot", st.SinceSnapshot, "threshold", st.Threshold,
		"trailing_logs", trailing)
	if trailing < orig.TrailingLogs {
		rc := orig
		rc.TrailingLogs = trailing
		if err := s.raft.ReloadConfig(rc); err != nil {
			t.mu.Unlock()
			return err
		}
		defer func() {
			if err := s.raft.ReloadConfig(orig); err != nil {
				s.logger.Warn("restoring raft's trailing logs after a size-triggered snapshot", "error", err)
			}
		}()
	}
	f := s.raft.Snapshot()
	t.mu.Unlock()
	err := f.Error()
	if errors.Is(err, raft.ErrNothingNewToSnapshot) {
		s.logger.Debug("size-triggered raft snapshot: nothing new to snapshot")
		return nil
	}
	return err
}

// trailingEntries is how many entries a size-triggered snapshot keeps in
// the log: Config.TrailingLogs, but no more than about keep bytes at the
// entries' average size. TrailingLogs counts entries: 10240 of 1 MB would
// keep 10 GB of log after every snapshot, which is the disk this trigger
// exists to bound. A follower further behind than that is sent the whole
// state instead, so keep is the larger of the threshold and the state's
// size on disk: a follower behind by less than the state gets the log.
func trailingEntries(st SnapshotBytesStatus, keep, trailingLogs uint64) uint64 {
	if st.Entries == 0 || st.SinceSnapshot == 0 {
		return trailingLogs
	}
	avg := max(st.SinceSnapshot/st.Entries, 1)
	return min(trailingLogs, max(keep/avg, 1))
}
