package raftstore

import (
	"context"
	"fmt"
	"time"

	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/fsm"
)

// Window state (see fsm/windows.go and docs/WINDOWS.md): thin wrappers
// that propose the window commands and read the state machine's windows.

// CommitOutcome is what a commit did: its entry's index, whether it was a
// retry of a commit applied before (then nothing applied again, and Adds
// and Emissions are empty: the emissions are in the outbox), the status of
// each window add, and the emissions its entry wrote.
type CommitOutcome struct {
	Index     uint64
	Duplicate bool
	Adds      []command.AddStatus
	Emissions []command.Emission
}

// CommitOutcome proposes a transaction like Commit and returns its
// outcome. A refusal is a *fsm.RejectError, *fsm.FenceError,
// *fsm.SessionError or *fsm.OutboxFullError (all errors.Is ErrRejected),
// with the outcome's Index set to the refused entry's. It keeps nothing of
// c once it returns (the entry holds c encoded), so the caller may reuse
// c's memory.
func (s *Store) CommitOutcome(ctx context.Context, c *command.Commit) (CommitOutcome, error) {
	if err := s.fsm.CheckTimersOutbox(c); err != nil {
		return CommitOutcome{}, err
	}
	res, err := s.proposeResult(ctx, &command.Command{Type: command.TypeCommit, Commit: c})
	if err != nil {
		return CommitOutcome{}, err
	}
	return outcomeOf(res)
}

// outcomeOf is a commit's outcome from its result in the state machine.
func outcomeOf(res *fsm.Result) (CommitOutcome, error) {
	out := CommitOutcome{Index: res.Index, Duplicate: res.Duplicate}
	if res.Err != nil {
		return out, res.Err
	}
	out.Adds, out.Emissions = res.Adds, res.Emissions
	return out, nil
}

// CommitBatch proposes cs as one entry (command.TypeCommitBatch) and
// returns each commit's outcome and error, as CommitOutcome would for each
// on its own: each commit applies atomically or not at all, with its own
// session check, and a refusal of one leaves the others applied. Their
// outcomes share the entry's index (a duplicate's is its first
// application's). The error is the proposal's, when none of them was
// applied or the outcome is unknown (a lost leadership or ctx ending
// first); then outs and errs are nil.
func (s *Store) CommitBatch(ctx context.Context, cs []*command.Commit) (outs []CommitOutcome, errs []error, err error) {
	outs, errs = make([]CommitOutcome, len(cs)), make([]error, len(cs))
	// A commit whose timers meet a full outbox is refused on its own (see
	// fsm.CheckTimersOutbox); the others go to Raft, at[k] naming the
	// place of propose[k] in cs (nil: every commit goes, in place).
	refused := false
	for i, c := range cs {
		if errs[i] = s.fsm.CheckTimersOutbox(c); errs[i] != nil {
			refused = true
		}
	}
	propose, at := cs, []int(nil)
	if refused {
		propose = nil
		for i, c := range cs {
			if errs[i] == nil {
				propose, at = append(propose, c), append(at, i)
			}
		}
	}
	if len(propose) == 0 {
		return outs, errs, nil
	}
	res, err := s.proposeResult(ctx, &command.Command{Type: command.TypeCommitBatch, Batch: propose})
	if err != nil {
		return nil, nil, err
	}
	if res.Err != nil {
		return nil, nil, res.Err
	}
	if len(res.Batch) != len(propose) {
		return nil, nil, fmt.Errorf("raftstore: commit batch of %d commits answered with %d results", len(propose), len(res.Batch))
	}
	for k, r := range res.Batch {
		i := k
		if at != nil {
			i = at[k]
		}
		outs[i], errs[i] = outcomeOf(r)
	}
	return outs, errs, nil
}

// DefineWindows defines a window namespace. It validates spec before
// proposing it, so that bad input never reaches the log (the error is a
// *command.FieldError naming the field). Defining a namespace again with
// the same spec succeeds with created false; with another spec it is
// refused with a *fsm.RejectError naming the first field that differs.
func (s *Store) DefineWindows(ctx context.Context, spec command.WindowSpec) (created bool, err error) {
	if err := command.ValidateNewWindowSpec(&spec); err != nil {
		return false, err
	}
	res, err := s.proposeResult(ctx, &command.Command{Type: command.TypeDefineWindows, Windows: &spec})
	if err != nil {
		return false, err
	}
	if res.Err != nil {
		return false, res.Err
	}
	return res.WindowsCreated, nil
}

// TickWindows proposes a TypeWindowTick when some namespace's watermark
// would move by the leader's clock now (a source went idle), so that its
// windows close without new records. It reports whether it proposed one.
func (s *Store) TickWindows(ctx context.Context) (bool, error) {
	due, err := s.fsm.WindowTickDue(time.Now().UnixNano())
	if err != nil || !due {
		return false, s.waitError(err)
	}
	if _, err := s.propose(ctx, &command.Command{Type: command.TypeWindowTick}); err != nil {
		return false, err
	}
	return true, nil
}

// WindowSpec returns the spec of window namespace ns, defaults filled in.
func (s *Store) WindowSpec(ns string) (command.WindowSpec, bool, error) {
	spec, ok, err := s.fsm.WindowSpec(ns)
	return spec, ok, s.waitError(err)
}

// WindowStatuses returns every window namespace's status, by name.
func (s *Store) WindowStatuses() ([]fsm.WindowStatus, error) {
	st, err := s.fsm.WindowStatuses()
	return st, s.waitError(err)
}

// Windows returns key's windows in ns starting in [fromMs, toMs), open or
// closed and retained. An undefined namespace is a *fsm.RejectError.
func (s *Store) Windows(ns string, key []byte, fromMs, toMs int64) ([]fsm.Window, error) {
	w, err := s.fsm.Windows(ns, key, fromMs, toMs)
	return w, s.waitError(err)
}

// OpenWindows returns ns's open windows after (afterKey, afterStart), in
// (key, start) order, at most limit; a nil afterKey starts at the first.
func (s *Store) OpenWindows(ns string, afterKey []byte, afterStart int64, limit int) ([]fsm.Window, error) {
	w, err := s.fsm.OpenWindows(ns, afterKey, afterStart, limit)
	return w, s.waitError(err)
}

// Emissions returns ns's unacknowledged emissions with ids above afterID,
// at most limit.
func (s *Store) Emissions(ns string, afterID uint64, limit int) ([]command.Emission, error) {
	e, err := s.fsm.Emissions(ns, afterID, limit)
	return e, s.waitError(err)
}
