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
// so 256 MiB keeps that part to a second or two. Below it, snapshots would
// cost more than they save: a state of S bytes smaller than the threshold
// is written once per threshold of commits, S/256 MiB of the commit bytes
// (under 1 since the threshold is at least S), and at 64 MiB a 60 MB state
// would double the bytes written for a restart shorter by about a second.
const DefaultSnapshotBytes = 256 << 20

// snapshotTrigger takes a Raft snapshot when the log since the newest
// snapshot holds max(Config.SnapshotBytes, size of the state at that
// snapshot) bytes of entries; see snapshotIfDue.
type snapshotTrigger struct {
	// mu orders the start of a snapshot with Close: once closing is set,
	// none starts.
	mu      sync.Mutex
	closing bool
	stop    context.CancelFunc
	done    chan struct{}
	// openState is the size of the newest snapshot on disk when the store
	// was opened, until the state machine has one of its own.
	openState uint64
}

// SnapshotBytesStatus is where the log stands against the size trigger.
type SnapshotBytesStatus struct {
	// SinceSnapshot is the bytes of log entries since the newest snapshot,
	// in Entries command entries.
	SinceSnapshot uint64
	Entries       uint64
	// StateAtSnapshot is the size of the state the newest snapshot wrote
	// (0 if this node has none).
	StateAtSnapshot uint64
	// Threshold is max(Config.SnapshotBytes, StateAtSnapshot): a snapshot
	// is taken once SinceSnapshot reaches it. 0 when the trigger is off.
	Threshold uint64
}

// SnapshotBytesStatus returns the size trigger's counts; cheap.
func (s *Store) SnapshotBytesStatus() SnapshotBytesStatus {
	lb := s.fsm.LogBytes()
	st := SnapshotBytesStatus{SinceSnapshot: lb.SinceSnapshot, Entries: lb.Entries, StateAtSnapshot: lb.StateAtSnapshot}
	if st.StateAtSnapshot == 0 {
		st.StateAtSnapshot = s.trigger.openState
	}
	if s.cfg.SnapshotBytes > 0 {
		st.Threshold = max(uint64(s.cfg.SnapshotBytes), st.StateAtSnapshot)
	}
	return st
}

// startSnapshotTrigger starts the goroutine that checks the size trigger,
// unless Config.SnapshotBytes is 0.
func (s *Store) startSnapshotTrigger() error {
	metas, err := s.snaps.List()
	if err != nil {
		return err
	}
	if len(metas) > 0 && metas[0].Size > 0 {
		s.trigger.openState = uint64(metas[0].Size)
	}
	if s.cfg.SnapshotBytes <= 0 {
		return nil
	}
	ctx, stop := context.WithCancel(context.Background())
	s.trigger.stop, s.trigger.done = stop, make(chan struct{})
	go s.runSnapshotTrigger(ctx)
	return nil
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
			// Persist writes the whole state: after a failure, wait a
			// SnapshotInterval before trying again.
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
	trailing := trailingEntries(st, orig.TrailingLogs)
	s.logger.Info("taking a raft snapshot: the log since the last one reached the size threshold",
		"log_bytes_since_snapshot", st.SinceSnapshot, "threshold", st.Threshold, "state_bytes_at_last_snapshot", st.StateAtSnapshot,
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
// the log: Config.TrailingLogs, but no more than about the threshold's
// bytes at the entries' average size. TrailingLogs counts entries: 10240
// of 1 MB would keep 10 GB of log after every snapshot, which is the disk
// this trigger exists to bound. A follower further behind than that is
// sent the snapshot instead, which holds the state and so is no larger
// than the threshold either.
func trailingEntries(st SnapshotBytesStatus, trailingLogs uint64) uint64 {
	if st.Entries == 0 || st.SinceSnapshot == 0 {
		return trailingLogs
	}
	avg := max(st.SinceSnapshot/st.Entries, 1)
	return min(trailingLogs, max(st.Threshold/avg, 1))
}
