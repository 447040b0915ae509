package fsm

import (
	"errors"
	"fmt"
)

var (
	// ErrRejected marks a command the state machine refused as a whole:
	// nothing of it was applied. Test with errors.Is; the *RejectError
	// names the field.
	ErrRejected = errors.New("fsm: command rejected")
	// ErrClosed is returned by reads after Close.
	ErrClosed = errors.New("fsm: closed")
	// ErrFenced marks a commit refused because it moves the offset of a
	// partition its client does not hold the current claim on: a zombie
	// after a rebalance. It matches ErrRejected too; test with errors.As
	// for the *FenceError.
	ErrFenced = errors.New("fsm: partition claim fenced")
	// ErrSessionRefused marks a commit refused by its client session:
	// fenced by a newer session of its client id, expired, or a sequence
	// that is not the lane's next nor a faithful retry. It matches
	// ErrRejected too; test with errors.As for the *SessionError.
	ErrSessionRefused = errors.New("fsm: refused by the client session")
	// ErrOutboxFull marks a commit refused because it adds to or hints a
	// window namespace whose outbox holds MaxPendingEmissions
	// unacknowledged emissions. It matches ErrRejected too; test with
	// errors.As for the *OutboxFullError.
	ErrOutboxFull = errors.New("fsm: window outbox full")
	// ErrCorrupt marks stored state that cannot be decoded.
	ErrCorrupt = errors.New("fsm: corrupt state")
)

// RejectError says which field of a command made the state machine refuse
// it. Every replica refuses the same command the same way.
type RejectError struct {
	Field  string // e.g. "offsets[2].offset"
	Reason string
}

func (e *RejectError) Error() string { return fmt.Sprintf("fsm: %s: %s", e.Field, e.Reason) }

func (e *RejectError) Is(target error) bool { return target == ErrRejected }

// EndedSessionError is an open refused because its session ended (it
// expired, or an open of another session id replaced it): an attempt of
// the open that made it, applied late. Nothing changed. It is a
// *RejectError naming session.id, so it is answered INVALID_ARGUMENT as
// before; the session's ids let the client tell it from a malformed open
// and open a new session instead.
type EndedSessionError struct {
	Reject    RejectError
	ClientID  string
	SessionID uint64
	// Current is the client id's current session, zero when it has none.
	Current uint64
}

func (e *EndedSessionError) Error() string { return e.Reject.Error() }

// Unwrap returns the refusal as a *RejectError.
func (e *EndedSessionError) Unwrap() error { return &e.Reject }

// FenceError is a commit refused by partition fencing: the epoch it
// carries for a partition is not that partition's current claim.
type FenceError struct {
	Field     string // e.g. "offsets[0].epoch"
	Group     string
	Topic     string
	Partition int32
	// Epoch is the commit's epoch, Current the partition's newest claim
	// (zero when it was never claimed) and Owner that claim's owner.
	Epoch   uint64
	Current uint64
	Owner   string
	Reason  string
}

func (e *FenceError) Error() string {
	return fmt.Sprintf("fsm: %s: group %q topic %q partition %d: %s", e.Field, e.Group, e.Topic, e.Partition, e.Reason)
}

// Is matches ErrFenced, and ErrRejected: nothing of the commit applied.
func (e *FenceError) Is(target error) bool { return target == ErrFenced || target == ErrRejected }

// OutboxFullError refuses a commit that adds to or hints a namespace whose
// outbox holds MaxPendingEmissions unacknowledged emissions or more.
type OutboxFullError struct {
	Namespace string
	Pending   int64
}

func (e *OutboxFullError) Error() string {
	return fmt.Sprintf("fsm: namespace %q has %d unacknowledged emissions; acknowledge them first", e.Namespace, e.Pending)
}

// Is matches ErrOutboxFull and ErrRejected: nothing of the commit applied.
func (e *OutboxFullError) Is(target error) bool {
	return target == ErrOutboxFull || target == ErrRejected
}
