package raftstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/fsm"
)

// ErrLogCompacted is returned by ReadLog when the Raft log no longer holds
// an entry asked for: a snapshot compacted it away.
var ErrLogCompacted = errors.New("raftstore: the Raft log no longer holds the entry")

// ChangelogCheckpoint proposes the barrier of a changelog checkpoint
// epoch and returns its cut once applied on this node: no replica makes a
// local checkpoint, and Info holds what the state records as of exactly
// the barrier (its applied index, epoch, cluster id and offsets). The
// checkpoint is then that state, which an earlier checkpoint's tables
// plus the Raft log's entries up to Index make again (fsm.ReplayChangelog).
func (s *Store) ChangelogCheckpoint(ctx context.Context) (fsm.CheckpointResult, error) {
	return s.barrier(ctx, true)
}

// barrier proposes a checkpoint barrier, a changelog one or one that
// makes a local checkpoint on every replica, and waits for its cut.
func (s *Store) barrier(ctx context.Context, changelog bool) (fsm.CheckpointResult, error) {
	res, err := s.proposeResult(ctx, &command.Command{Type: command.TypeCheckpoint, Changelog: changelog})
	if err != nil {
		return fsm.CheckpointResult{}, err
	}
	if res.Err != nil {
		return fsm.CheckpointResult{}, res.Err
	}
	err = res.Checkpoint.Wait()
	return *res.Checkpoint, err
}

// CaptureChangelog turns on the state machine's capture of the command
// entries it applies, holding at most limit bytes of them between two
// barriers, or turns it off when limit is 0: a barrier's
// CheckpointResult.Captured then holds the entries since the barrier
// before, for a changelog segment written without reading the Raft log
// (fsm.CapturedChangelog).
func (s *Store) CaptureChangelog(limit int64) { s.fsm.CaptureChangelog(limit) }

// AppliedLogBytes is the bytes of the command entries this node's state
// machine was handed since it opened (fsm.LogBytes.Applied); cheap.
func (s *Store) AppliedLogBytes() uint64 { return s.fsm.LogBytes().Applied }

// LogHolds reports whether this node's Raft log still holds every entry
// from first on (none of them compacted into a snapshot).
func (s *Store) LogHolds(first uint64) bool {
	idx, err := s.log.FirstIndex()
	return err == nil && idx != 0 && idx <= first
}

// ReadLog calls fn with each entry of this node's Raft log from first to
// last, in order, and stops at fn's first error. An entry the log no
// longer holds is ErrLogCompacted. fn must not keep l: it is reused.
func (s *Store) ReadLog(first, last uint64, fn func(l *raft.Log) error) error {
	var l raft.Log
	for i := first; i <= last; i++ {
		l = raft.Log{}
		if err := s.log.GetLog(i, &l); errors.Is(err, raft.ErrLogNotFound) {
			return fmt.Errorf("%w: entry %d", ErrLogCompacted, i)
		} else if err != nil {
			return fmt.Errorf("raftstore: read Raft log entry %d: %w", i, err)
		}
		if l.Index != i {
			return fmt.Errorf("raftstore: Raft log entry %d read as index %d", i, l.Index)
		}
		if err := fn(&l); err != nil {
			return err
		}
	}
	return nil
}
