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
