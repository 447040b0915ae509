package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/batchrepr"
	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// applyBatch applies committed log entries in order and returns one value
// per entry: a *Result for each command, and nil for a configuration
// change (raft.Raft passes those to a BatchingFSM too; Apply never saw
// them, and the state machine keeps nothing of them).
//
// The commands go into one Pebble batch, committed once with the applied
// index of the last of them, so that a batch of entries costs one Pebble
// commit and one wake-up of the readers waiting for an index. Every entry
// still applies as if alone:
//   - it reads the state through the batch, so it sees the entries before
//     it (a counter added to twice, a sequence retried in the same batch);
//   - a rejected entry, or a retry answered as a duplicate, leaves nothing
//     in the batch (its writes are cut off again);
//   - a checkpoint barrier commits the batch up to and including itself
//     before its local checkpoint starts, so the checkpoint holds every
//     entry up to the barrier and the applied index that says so (a
//     changelog barrier reads its cut from the database then).
//
// The applied index, in Pebble and for WaitApplied, moves only once the
// writes of the entries up to it are committed. A Pebble write that fails
// stops the replica with a panic rather than let it diverge.
//
// Raft batches only through Batching (f itself has no ApplyBatch, so that
// raft.Raft sees a plain raft.FSM): raft.Raft answers the entries of a
// batch only once the whole batch is applied, so a commit waits for the
// ones after it. On a quiet machine, `stated run` processes driven
// through the SDK measured batch apply no faster than one entry at a time
// and slower for 1000-mutation commits from 4 clients (median 0.92×,
// with a longer tail; BENCHMARKS.md, "Batch apply in the state machine"),
// so the Raft node is not given it.
func (f *FSM) applyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	f.logBytes.count(logs)
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		for i, l := range logs {
			if l.Type == raft.LogCommand {
				out[i] = &Result{Index: l.Index, Err: ErrClosed}
			}
		}
		return out
	}
	g := group{f: f, dec: decoders.Get().(*command.Decoder)}
	applied := f.applied.Load()
	for _, l := range logs {
		if l.Type == raft.LogCommand && l.Index > applied {
			g.entries++
		}
	}
	defer g.close()
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		if l.Index <= applied {
			// Already in Pebble: a replay after restart.
			out[i] = &Result{Index: l.Index}
			continue
		}
		f.captureEntry(l)
		out[i] = g.apply(l)
	}
	g.commit()
	return out
}

// Batching returns f as a raft.BatchingFSM, so that Raft hands it its
// committed entries a batch at a time (see applyBatch); f itself is only
// a raft.FSM, which Raft applies one entry at a time.
func (f *FSM) Batching() raft.BatchingFSM { return batchingFSM{f} }

// batchingFSM is an FSM that Raft gives batches to.
type batchingFSM struct{ *FSM }

func (b batchingFSM) ApplyBatch(logs []*raft.Log) []interface{} { return b.applyBatch(logs) }

// group is the Pebble batch that one applyBatch writes its entries into.
type group struct {
	f *FSM
	// dec decodes the entries: each command's mutations go into memory
	// it keeps from one entry to the next (command.Decoder), which
	// nothing applied keeps a reference to.
	dec *command.Decoder
	// entries is how many entries the call applies. With more than one,
	// b is an indexed batch that every entry reads the state through;
	// a lone entry gets an indexed batch only when it reads its own
	// writes (readsOwnWrites), as plain puts do not pay for an index.
	entries int
	b       *pebble.Batch
	// last is the index of the newest entry in b; zero when b holds
	// nothing to commit.
	last uint64
	// done are the epochs completed by entries in b, whose local
	// checkpoints are removed once b is committed.
	done []uint64
	// whole is set while the commits of one TypeCommitBatch entry apply:
	// they share an index, so they go into Pebble together, in one batch
	// committed with it, never partly (see applyCommits).
	whole bool
	// wholeReads is set with whole when a commit of the entry reads state
	// that the commits before it may have written (commitReadsState): the
	// entry's batch is then indexed, so that the reads see those writes.
	wholeReads bool
	// sync commits b with a sync of Pebble's WAL: it records the
	// cluster's id, which a restarting node checks its join addresses
	// against before it has a leader to replay its log (see commit).
	sync bool
}

// groupMaxOps is the most writes a commit may carry to share the batch of
// the entries around it. Indexing a write in the shared batch (so that
// later entries read it) costs more than the Pebble commit it saves once
// an entry carries more than a few: BenchmarkApplyBatch measured
// 100-mutation entries a third slower in a shared indexed batch than
// committed one by one, and 1-mutation entries faster.
const groupMaxOps = 16

// alone reports whether cmd, applied with other entries, is committed in a
// batch of its own rather than in the shared one.
func (g *group) alone(cmd *command.Command) bool {
	c := cmd.Commit
	return g.entries > 1 && !g.whole && cmd.Type == command.TypeCommit && c != nil &&
		len(c.Mutations)+len(c.Offsets)+len(c.WindowAdds) > groupMaxOps
}

// batch returns the batch cmd writes into and the reader it reads through.
func (g *group) batch(cmd *command.Command, alone bool) (*pebble.Batch, pebble.Reader) {
	if g.b == nil {
		if ((g.entries > 1 || g.wholeReads) && !alone) || readsOwnWrites(cmd) {
			g.b = g.f.db.NewIndexedBatch()
		} else {
			g.b = g.f.db.NewBatch()
		}
	}
	if g.b.Indexed() {
		return g.b, g.b
	}
	return g.b, g.f.db
}

// apply applies one command entry into the group's batch.
func (g *group) apply(l *raft.Log) *Result {
	res := &Result{Index: l.Index}
	cmd, err := g.dec.Decode(l.Data)
	if err != nil {
		// Every replica decodes the same bytes the same way; a command
		// that does not decode is refused by all of them.
		g.last = l.Index
		res.Err = &RejectError{Field: "command", Reason: err.Error()}
		return res
	}
	if cmd.Type == command.TypeCommitBatch {
		return g.applyCommits(l, cmd)
	}
	return g.applyOne(l, cmd, res)
}

// applyCommits applies a TypeCommitBatch entry: each of its commits as a
// TypeCommit entry of its own at l.Index would apply, in order, each
// reading the writes of the ones before it. A rejected commit, or a retry
// answered as a duplicate, leaves nothing of itself, as an entry would;
// the others are unaffected. The commits go into the group's batch and are
// never committed apart: one applied index stands for all of them, so
// Pebble must never hold some of them under it.
//
// The batch is indexed only when a commit reads state (wholeReads): the
// commits that only write (puts, deletes), as the SDK coalesces single
// commits from many goroutines, read nothing but their session and lane
// records, which the record cache answers with the batch's own writes.
// Indexing every write for reads that never come cost 4% of the daemon's
// CPU under 64 clients of single commits (BENCHMARKS.md).
func (g *group) applyCommits(l *raft.Log, cmd *command.Command) *Result {
	res := &Result{Index: l.Index, Batch: make([]*Result, len(cmd.Batch))}
	g.last = l.Index
	g.whole = true
	for _, c := range cmd.Batch {
		sub := command.Command{Type: command.TypeCommit, Version: cmd.Version, Commit: c}
		if commitReadsState(&sub) {
			g.wholeReads = true
			break
		}
	}
	defer func() { g.whole, g.wholeReads = false, false }()
	for i, c := range cmd.Batch {
		sub := &command.Command{Type: command.TypeCommit, Now: cmd.Now, Version: cmd.Version, Commit: c}
		res.Batch[i] = g.applyOne(l, sub, &Result{Index: l.Index})
	}
	return res
}

// applyOne applies one decoded command at l's index into the group's
// batch, and fills res.
func (g *group) applyOne(l *raft.Log, cmd *command.Command, res *Result) *Result {
	alone := g.alone(cmd)
	if alone {
		// It reads the entries before it from the database. They are
		// committed with the index of the last of them: this entry's
		// index goes with its own writes (so g.last moves only below),
		// and a commit that finds g.last zero writes nothing.
		g.commit()
	}
	g.last = l.Index
	b, r := g.batch(cmd, alone)
	before := g.mark()
	var out applyOut
	res.Index, res.Duplicate, out, res.Err = applyCommand(b, r, g.f.records, l.Index, cmd)
	g.f.noteLogTime(cmd.Now)
	res.Claimed = out.claimed
	res.Session = out.session
	res.Adds, res.Emissions, res.WindowsCreated = out.adds, out.emissions, out.windowsCreated
	switch {
	case res.Duplicate || errors.Is(res.Err, ErrRejected):
		// Nothing of it is written, but the entry is applied: its index
		// is recorded with the batch, so that Pebble's applied index
		// equals Raft's for snapshots.
		if err := g.cut(before); err != nil {
			g.fail(l.Index, err)
		}
	case res.Err != nil:
		g.fail(l.Index, res.Err)
	case out.epoch != 0 && cmd.Type == command.TypeCheckpoint:
		// The local checkpoint, or a changelog barrier's cut, reads the
		// database, which must hold every entry up to this one.
		g.commit()
		res.Checkpoint = g.f.barrier(l, out.epoch, cmd.Changelog)
	case out.epoch != 0 && cmd.Type == command.TypeCheckpointDone && !g.f.replay:
		// A replay (ReplayChangelog) has no local checkpoints to remove.
		g.done = append(g.done, out.epoch)
	case cmd.Type == command.TypeSetClusterID:
		g.sync = true
	}
	if alone {
		// The entries after it read it from the database.
		g.commit()
	}
	return res
}

// fail stops the replica: Pebble failed to write, and it cannot go on
// without diverging from its peers.
func (g *group) fail(index uint64, err error) {
	g.f.logger.Error("fsm: apply failed; stopping to avoid divergence", "index", index, "error", err)
	panic(&applyFailure{index: index, err: err})
}

// applyFailure is what fail panics with: a replica stops, but a changelog
// replay, which has no peers to diverge from, recovers it as an error
// (replayBatch).
type applyFailure struct {
	index uint64
	err   error
}

func (e *applyFailure) Error() string {
	return fmt.Sprintf("fsm: apply of index %d failed: %v", e.index, e.err)
}

func (e *applyFailure) Unwrap() error { return e.err }

// batchMark is how far a batch was written, and with it the record
// cache's pending writes.
type batchMark struct {
	count   uint32
	len     int
	records int
}

func (g *group) mark() batchMark {
	if g.b == nil {
		return batchMark{records: g.f.records.mark()}
	}
	return batchMark{count: g.b.Count(), len: g.b.Len(), records: g.f.records.mark()}
}

// cut drops what was written into the batch after m. A Pebble batch cannot
// be truncated, so the batch is rebuilt from the records before m (a
// rejection that wrote something first is rare; most are refused before
// their first write and cost nothing here).
func (g *group) cut(m batchMark) error {
	g.f.records.cut(m.records)
	if g.b == nil || g.b.Count() == m.count {
		return nil
	}
	var nb *pebble.Batch
	if g.b.Indexed() {
		nb = g.f.db.NewIndexedBatch()
	} else {
		nb = g.f.db.NewBatch()
	}
	if m.count > 0 {
		prefix := append([]byte(nil), g.b.Repr()[:m.len]...)
		batchrepr.SetCount(prefix, m.count)
		src := g.f.db.NewBatch()
		err := src.SetRepr(prefix)
		if err == nil {
			err = nb.Apply(src, nil)
		}
		src.Close()
		if err != nil {
			nb.Close()
			return fmt.Errorf("fsm: drop a rejected entry's writes: %w", err)
		}
	}
	g.b.Close()
	g.b = nb
	return nil
}

// commit commits the batch with the applied index of its last entry, then
// moves the applied index and starts the removals the batch's completion
// entries asked for.
func (g *group) commit() {
	if g.last == 0 {
		return
	}
	if g.b == nil {
		g.b = g.f.db.NewBatch()
	}
	err := g.f.records.flush(g.b)
	if err == nil {
		err = g.b.Set(keyAppliedIndex, binary.BigEndian.AppendUint64(nil, g.last), nil)
	}
	if err == nil {
		// Pebble holds the WAL's last partial block in memory until a
		// sync, and a SIGKILL loses it; the Raft log is what is durable,
		// and the state machine replays it once it has a leader. The
		// cluster's id is needed before (a restarting member checks its
		// join addresses against it), so its entry is synced, once.
		opt := pebble.NoSync
		if g.sync {
			opt = pebble.Sync
		}
		err = g.b.Commit(opt)
	}
	g.sync = false
	if err != nil {
		g.fail(g.last, err)
	}
	g.f.records.commit()
	g.b.Close()
	g.b = nil
	g.f.setApplied(g.last)
	g.last = 0
	for _, epoch := range g.done {
		g.f.removeUploaded(epoch)
	}
	g.done = g.done[:0]
}

func (g *group) close() {
	g.f.records.abort() // writes never committed (commit emptied it otherwise)
	if g.b != nil {
		g.b.Close()
		g.b = nil
	}
	g.dec.Release()
	decoders.Put(g.dec)
}

// decoders are the command decoders of applyBatch calls, kept from one
// call to the next.
var decoders = sync.Pool{New: func() any { return new(command.Decoder) }}
