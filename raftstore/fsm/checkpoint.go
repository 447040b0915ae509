package fsm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// CheckpointResult is what a TypeCheckpoint entry returns: the epoch the
// state machine gave it and the local Pebble checkpoint of the state as of
// the entry, or, for a changelog barrier, what that state records.
type CheckpointResult struct {
	Epoch uint64
	Index uint64
	Term  uint64
	// Dir is the local checkpoint directory; Err is why it could not be
	// made (the epoch is still used up, and fails). Both are set once
	// Wait returns. A changelog barrier makes no local checkpoint: Dir
	// stays empty.
	Dir string
	Err error
	// Changelog is set for a changelog barrier, and Info to what
	// ReadCheckpointMeta would read of a checkpoint made exactly at the
	// entry (Info.AppliedIndex is Index), unless Err says why it could not
	// be read.
	Changelog bool
	Info      *CheckpointInfo
	// Captured, when capture is on (FSM.CaptureChangelog) and held every
	// command entry since the barrier before, is their records up to
	// this barrier, for the changelog segment that ends here. Whoever
	// takes the result releases it.
	Captured *CapturedChangelog
	// LogBytes is LogBytes().Applied as the barrier applied: with the
	// entries Raft handed over with it, in the same batch.
	LogBytes uint64
	done     chan struct{}
}

// Wait blocks until the local checkpoint is made, or failed, and returns
// why it failed.
func (c *CheckpointResult) Wait() error {
	if c.done != nil {
		<-c.done
	}
	return c.Err
}

// CheckpointState is what the state machine records of checkpoints.
type CheckpointState struct {
	// LastEpoch is the epoch of the newest barrier.
	LastEpoch uint64
	// Completed is the newest epoch whose upload completed, and
	// CompletedAt the leader's Unix nanosecond time of that.
	Completed   uint64
	CompletedAt int64
}

// SetCheckpointDir sets the directory under which replicas make their
// local checkpoints, one subdirectory per epoch. Call it before Raft
// applies entries; the default is local-checkpoints beside the state
// directory.
func (f *FSM) SetCheckpointDir(dir string) { f.checkpointDir = dir }

// CheckpointDir returns the directory of epoch's local checkpoint.
func (f *FSM) CheckpointDir(epoch uint64) string {
	return filepath.Join(f.checkpointDir, fmt.Sprintf("%020d", epoch))
}

func (a *applier) loadCheckpointState() (CheckpointState, error) {
	var st CheckpointState
	if v, ok, err := a.get(keyCheckpointEpoch); err != nil {
		return st, err
	} else if ok {
		if len(v) != 8 {
			return st, fmt.Errorf("%w: checkpoint epoch of %d bytes", ErrCorrupt, len(v))
		}
		st.LastEpoch = binary.BigEndian.Uint64(v)
	}
	if v, ok, err := a.get(keyCheckpointDone); err != nil {
		return st, err
	} else if ok {
		if len(v) != 16 {
			return st, fmt.Errorf("%w: completed checkpoint of %d bytes", ErrCorrupt, len(v))
		}
		st.Completed = binary.BigEndian.Uint64(v)
		st.CompletedAt = int64(binary.BigEndian.Uint64(v[8:]))
	}
	return st, nil
}

// checkpointBarrier numbers a new epoch; the local checkpoint is made
// once the batch is committed (makeCheckpoint).
func (a *applier) checkpointBarrier() (uint64, error) {
	st, err := a.loadCheckpointState()
	if err != nil {
		return 0, err
	}
	epoch := st.LastEpoch + 1
	return epoch, a.b.Set(keyCheckpointEpoch, binary.BigEndian.AppendUint64(nil, epoch), nil)
}

// checkpointDone records epoch as completed, with its offsets as the
// checkpointed offsets of their groups, unless a newer epoch completed.
func (a *applier) checkpointDone(epoch uint64, offsets []command.Offset) error {
	st, err := a.loadCheckpointState()
	if err != nil {
		return err
	}
	if epoch > st.LastEpoch {
		return reject("epoch", "checkpoint %d was never started (last barrier %d)", epoch, st.LastEpoch)
	}
	if epoch <= st.Completed {
		return nil
	}
	for _, o := range offsets {
		if err := a.b.Set(checkpointedOffsetKey(o.Group, o.Topic, o.Partition), binary.BigEndian.AppendUint64(nil, uint64(o.Offset)), nil); err != nil {
			return err
		}
	}
	v := binary.BigEndian.AppendUint64(nil, epoch)
	return a.b.Set(keyCheckpointDone, binary.BigEndian.AppendUint64(v, uint64(a.now)), nil)
}

// CheckpointedOffsets returns group's offsets as of the newest completed
// checkpoint, by topic and partition: offsets Kafka may be told, because
// a restore can always bring the state back to them.
func (f *FSM) CheckpointedOffsets(group string) ([]command.Offset, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, ErrClosed
	}
	return checkpointedIn(f.db, group)
}

// checkpointedIn reads group's checkpointed offsets from r.
func checkpointedIn(r pebble.Reader, group string) ([]command.Offset, error) {
	p := appendComponent([]byte{prefixCkptOffset}, []byte(group))
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, err
	}
	var out []command.Offset
	for ok := it.First(); ok; ok = it.Next() {
		o, err := decodeOffset(it.Key(), it.Value())
		if err != nil {
			it.Close()
			return nil, err
		}
		out = append(out, o)
	}
	return out, it.Close()
}

// barrier is the result of a checkpoint barrier at l, numbered epoch, once
// the entries up to it are committed: a local checkpoint, started; for a
// changelog barrier its cut (changelogCut); none while a changelog is
// replayed, which only applies the barrier's writes.
func (f *FSM) barrier(l *raft.Log, epoch uint64, changelog bool) *CheckpointResult {
	switch {
	case f.replay:
		return nil
	case changelog:
		// Not lastCkpt: that is the newest local checkpoint, which
		// removals wait for (removeUploaded), and this makes none.
		cp := f.changelogCut(l, epoch)
		cp.Captured, cp.LogBytes = f.sealCapture(l), f.logBytes.applied.Load()
		return cp
	}
	cp := &CheckpointResult{Epoch: epoch, Index: l.Index, Term: l.Term, Captured: f.sealCapture(l), LogBytes: f.logBytes.applied.Load()}
	f.startCheckpoint(cp)
	f.lastCkpt = cp
	return cp
}

// changelogCut is the result of a changelog barrier at l, numbered epoch,
// once the entries up to it are committed: no local checkpoint, but what
// one made at l would record (ReadCheckpointMeta). It is read here, in
// the apply loop, from the database, which is then exactly the state as
// of l: nothing but the apply loop writes it, and Restore, which replaces
// it, waits for the apply loop's read lock. That is a few point reads and
// a scan of every group's offsets, tens to hundreds of records (500 took
// 0.2 ms); a Pebble snapshot read in the background would free the apply
// loop of them, but must then be closed before Close and Restore close
// the database.
func (f *FSM) changelogCut(l *raft.Log, epoch uint64) *CheckpointResult {
	cp := &CheckpointResult{Epoch: epoch, Index: l.Index, Term: l.Term, Changelog: true}
	info, err := readCheckpointMeta(f.db)
	switch {
	case err != nil:
		cp.Err = fmt.Errorf("fsm: changelog checkpoint %d: %w", epoch, err)
	case info.AppliedIndex != l.Index || info.Epoch != epoch:
		cp.Err = fmt.Errorf("fsm: changelog checkpoint %d at index %d: the state read holds index %d and epoch %d",
			epoch, l.Index, info.AppliedIndex, info.Epoch)
	default:
		cp.Info = &info
		return cp
	}
	f.logger.Error("fsm: changelog checkpoint failed", "epoch", epoch, "error", cp.Err)
	return cp
}

// startCheckpoint makes the local checkpoint of a barrier in the
// background, so that the apply loop does not wait for Pebble to link
// every table and copy the WAL. The checkpoint then holds the state as of
// the barrier or of a later entry: every entry applies atomically, so the
// cut is consistent whichever it is, and ReadCheckpoint reads its own
// applied index and offsets from it.
func (f *FSM) startCheckpoint(cp *CheckpointResult) {
	f.ckptWG.Wait() // the previous one, if a slow disk still makes it
	cp.done = make(chan struct{})
	db := f.db
	f.ckptWG.Add(1)
	go func() {
		defer f.ckptWG.Done()
		defer close(cp.done)
		cp.Dir, cp.Err = f.makeCheckpoint(db, cp.Epoch)
		if cp.Err != nil {
			f.logger.Error("fsm: local checkpoint failed", "epoch", cp.Epoch, "error", cp.Err)
		}
	}()
}

// makeCheckpoint makes the local checkpoint of epoch: hard links of the
// SSTs and a copy of the flushed WAL. Older local checkpoints are removed
// first: their uploads are done or abandoned.
func (f *FSM) makeCheckpoint(db *pebble.DB, epoch uint64) (string, error) {
	if err := f.removeCheckpoints(epoch - 1); err != nil {
		f.logger.Warn("fsm: removing old local checkpoints failed", "error", err)
	}
	// Made under a temporary name and renamed when complete, so that a
	// checkpoint directory under its epoch's name is always whole.
	dir := f.CheckpointDir(epoch)
	tmp := dir + ".tmp"
	for _, p := range []string{dir, tmp} {
		if err := os.RemoveAll(p); err != nil {
			return "", fmt.Errorf("fsm: checkpoint %d: %w", epoch, err)
		}
	}
	if err := os.MkdirAll(f.checkpointDir, 0o755); err != nil {
		return "", fmt.Errorf("fsm: checkpoint %d: %w", epoch, err)
	}
	if err := db.Checkpoint(tmp, pebble.WithFlushedWAL()); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("fsm: checkpoint %d: %w", epoch, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("fsm: checkpoint %d: %w", epoch, err)
	}
	return dir, nil
}

// removeCheckpoints deletes the local checkpoints of epochs up to upTo.
func (f *FSM) removeCheckpoints(upTo uint64) error {
	entries, err := os.ReadDir(f.checkpointDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		n, err := strconv.ParseUint(strings.TrimSuffix(e.Name(), ".tmp"), 10, 64)
		if err != nil || n > upTo {
			continue
		}
		if err := os.RemoveAll(filepath.Join(f.checkpointDir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Flush writes Pebble's memtable to a table and starts a new WAL. Writes
// go on meanwhile into a new memtable. The coordinator flushes before a
// checkpoint barrier, so that the checkpoint's WAL holds only the writes
// since (a WAL file changes with every write and is uploaded whole, while
// tables never change and are uploaded once).
//
// Flush fails, naming the error, when Pebble reports a background error
// (a failed flush or compaction) at the end of a flush begun after it
// asked for one: Pebble retries a failed flush forever, so on a full
// disk the flush would never end.
func (f *FSM) Flush() error { return f.FlushContext(context.Background()) }

// FlushContext is Flush, given up on when ctx ends.
func (f *FSM) FlushContext(ctx context.Context) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fsm: flushing the state: %w", err)
	}
	mark, change := f.bg.watch()
	flushed, err := f.db.AsyncFlush()
	if err != nil {
		return fmt.Errorf("fsm: flushing the state: %w%s", err, diskFullHint(err))
	}
	for {
		select {
		case <-flushed:
			return nil
		case <-ctx.Done():
			err := fmt.Errorf("fsm: flushing the state: %w", context.Cause(ctx))
			if last, _ := f.bg.since(mark); last != nil {
				err = fmt.Errorf("%w, while Pebble kept failing: %w%s", err, last, diskFullHint(last))
			}
			return err
		case <-change:
			var last error
			if last, change = f.bg.failedSince(mark); last == nil {
				continue
			}
			select {
			case <-flushed:
				return nil // done all the same
			default:
			}
			return fmt.Errorf("fsm: flushing the state: %w%s", last, diskFullHint(last))
		}
	}
}

// CheckpointState returns what the state machine records of checkpoints.
func (f *FSM) CheckpointState() (CheckpointState, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return CheckpointState{}, ErrClosed
	}
	a := applier{r: f.db}
	return a.loadCheckpointState()
}

// CheckpointInfo is what a local checkpoint holds, read from its files.
type CheckpointInfo struct {
	Epoch        uint64
	AppliedIndex uint64
	ClusterID    string
	// Offsets are every group's offsets, by group, topic and partition.
	Offsets []command.Offset
	// Keys and Bytes count the state entries and their key and value
	// bytes (system records, offsets and claims excluded).
	Keys  uint64
	Bytes uint64
}

// ReadCheckpoint opens a local checkpoint read-only and reads its epoch,
// applied index, cluster id and offsets (ReadCheckpointMeta), and counts
// its state (CountCheckpoint). The checkpoint is a consistent cut, so the
// offsets belong to exactly that state.
func ReadCheckpoint(dir string) (CheckpointInfo, error) {
	info, err := ReadCheckpointMeta(dir)
	if err != nil {
		return info, err
	}
	info.Keys, info.Bytes, err = CountCheckpoint(context.Background(), dir)
	return info, err
}

// ReadCheckpointMeta reads what ReadCheckpoint does except the counts of
// the state (Keys and Bytes stay zero): a few point reads and the
// offsets, whatever the state's size.
func ReadCheckpointMeta(dir string) (CheckpointInfo, error) {
	db, err := openCheckpoint(dir)
	if err != nil {
		return CheckpointInfo{}, err
	}
	defer db.Close()
	return readCheckpointMeta(db)
}

// readCheckpointMeta reads a state's applied index, newest epoch, cluster
// id and offsets from r, which must be a consistent view of it (a
// checkpoint, or the database where nothing writes meanwhile).
func readCheckpointMeta(r pebble.Reader) (CheckpointInfo, error) {
	var info CheckpointInfo
	var err error
	if info.AppliedIndex, err = readAppliedIndex(r); err != nil {
		return info, err
	}
	a := applier{r: r}
	st, err := a.loadCheckpointState()
	if err != nil {
		return info, err
	}
	info.Epoch = st.LastEpoch
	if v, ok, err := a.get(keyClusterID); err != nil {
		return info, err
	} else if ok {
		info.ClusterID = string(v)
	}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixOffset}, UpperBound: []byte{prefixOffset + 1}})
	if err != nil {
		return info, err
	}
	// NextPrefix, not Next: every commit moves its partitions' offsets,
	// and Next steps over each older version still in the memtable (a
	// changelog barrier reads the database's, in the apply loop).
	for ok := it.First(); ok; ok = it.NextPrefix() {
		o, err := decodeOffset(it.Key(), it.Value())
		if err != nil {
			it.Close()
			return info, err
		}
		info.Offsets = append(info.Offsets, o)
	}
	return info, it.Close()
}

// openCheckpoint opens a local checkpoint read-only. Nothing writes a
// checkpoint, so Pebble's LOCK file is not taken: it would appear in the
// directory (a checkpoint has none) while an upload lists and reads it.
func openCheckpoint(dir string) (*pebble.DB, error) {
	opts := &pebble.Options{ReadOnly: true, ErrorIfNotExists: true, Logger: pebbleLogger{slog.New(slog.DiscardHandler)},
		FS: noLockFS{vfs.Default}}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("fsm: open checkpoint %s: %w", dir, err)
	}
	return db, nil
}

// noLockFS is a file system whose Lock takes no lock and creates no file.
type noLockFS struct{ vfs.FS }

func (noLockFS) Lock(string) (io.Closer, error) { return io.NopCloser(nil), nil }

// decodeOffset decodes an offset record of any group.
func decodeOffset(k, v []byte) (command.Offset, error) {
	group, rest, err := readComponent(k[1:])
	if err == nil {
		var topic []byte
		topic, rest, err = readComponent(rest)
		if err == nil && len(rest) == 4 && len(v) == 8 {
			return command.Offset{
				Group: string(group), Topic: string(topic),
				Partition: int32(binary.BigEndian.Uint32(rest)),
				Offset:    int64(binary.BigEndian.Uint64(v)),
			}, nil
		}
	}
	return command.Offset{}, fmt.Errorf("%w: offset record %x", ErrCorrupt, k)
}
