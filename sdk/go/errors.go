package stated

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// Sentinel errors. Errors from the daemon match one of these with errors.Is
// according to their gRPC code, keep that code for status.Code, and carry
// the daemon's message (which names the offending field) in Error().
var (
	// ErrInvalidArgument: the daemon refused a request as malformed or over
	// a limit (codes.InvalidArgument). Nothing of it was applied.
	ErrInvalidArgument = errors.New("stated: invalid argument")
	// ErrFailedPrecondition: the request conflicts with the stored state,
	// e.g. a commit from a fenced-out partition owner
	// (codes.FailedPrecondition). Nothing of it was applied.
	ErrFailedPrecondition = errors.New("stated: failed precondition")
	// ErrUnavailable: the daemon cannot be reached, is shutting down or is
	// not the leader (codes.Unavailable). A commit that failed with it may
	// or may not have been applied.
	ErrUnavailable = errors.New("stated: unavailable")
	// ErrResourceExhausted: a message exceeded a size limit, usually a
	// commit larger than the maximum message size (codes.ResourceExhausted).
	// A commit that fails with it applied nothing: one whose answer was
	// too large is sent again to learn its outcome (see "Retries" in the
	// package documentation).
	ErrResourceExhausted = errors.New("stated: resource exhausted")
	// ErrCodec: a typed handle's codec failed to encode or decode a value.
	ErrCodec = errors.New("stated: codec")
	// ErrTxnDone: Commit was called on a Txn that was already committed.
	ErrTxnDone = errors.New("stated: transaction already committed")
	// ErrClosed: the Client was closed. A commit in flight when it was
	// closed may have applied.
	ErrClosed = errors.New("stated: client closed")
	// ErrSessionFenced: another Client opened a session with the same
	// client id, so this one may no longer commit: it is a zombie of a
	// process that was replaced. It matches ErrFailedPrecondition too;
	// errors.As gives the *SessionError.
	ErrSessionFenced = errors.New("stated: session fenced by a newer session of the client id")
	// ErrSessionExpired: the Client's session expired (idle past the
	// daemon's --session-idle-timeout, or lost in a restore) while a commit
	// was being retried, so an earlier attempt of it may or may not have
	// applied. The next commit opens a new session (unless another commit
	// of the Client opened it already; an attempt of the old session is
	// then refused as superseded by it, which is this error, not
	// ErrSessionFenced). A commit whose first attempt finds its session
	// expired is sent again in a new session without this error.
	ErrSessionExpired = errors.New("stated: session expired")
	// ErrOutboxFull: a commit added to or hinted a window namespace whose
	// outbox holds its MaxPendingEmissions unacknowledged emissions
	// (codes.ResourceExhausted, so it matches ErrResourceExhausted too).
	// Nothing of it was applied. Acknowledge pending emissions (Txn.Ack)
	// and commit again.
	ErrOutboxFull = errors.New("stated: window outbox full")
	// ErrDiskFull: the leader's data dir's disk has less free space than
	// its --min-free-disk, so it refuses commits rather than fill the disk
	// (codes.ResourceExhausted with a DiskFull detail, so it matches
	// ErrResourceExhausted too). Nothing of the commit was applied; it
	// goes through once the operator frees space. The Client does not
	// retry it, but for a commit an earlier attempt of which may have
	// applied (no answer): the leader refuses before its session could
	// answer that attempt as a duplicate, so the Client sends it again
	// until its outcome is known or ctx ends, and never returns this for
	// it.
	ErrDiskFull = errors.New("stated: the leader's data disk is nearly full")
	// ErrOtherCluster: the daemon that answered belongs to a cluster
	// other than the one this Client's session was opened in (see
	// Client.Lineage): the Client's address now reaches an unrelated
	// cluster, for example a port or pod IP reused after its own daemon
	// stopped. The call was refused before anything was done
	// (codes.FailedPrecondition, so it matches ErrFailedPrecondition
	// too), and the Client does not retry it: calls keep failing until
	// its address reaches its own cluster again. A Client given several
	// addresses instead leaves that one out for 30 s and retries the call
	// at its next address; it returns ErrOtherCluster only when no other
	// is left. A commit whose earlier
	// attempt failed with ErrUnavailable may still have applied in the
	// Client's own cluster.
	ErrOtherCluster = errors.New("stated: the daemon belongs to another cluster")
)

// sentinelByCode maps gRPC codes to the errors users test for. Deadline and
// cancellation map to the context package's errors, so that
// errors.Is(err, context.DeadlineExceeded) works on a timed-out call.
var sentinelByCode = map[codes.Code]error{
	codes.InvalidArgument:    ErrInvalidArgument,
	codes.FailedPrecondition: ErrFailedPrecondition,
	codes.Unavailable:        ErrUnavailable,
	codes.ResourceExhausted:  ErrResourceExhausted,
	codes.DeadlineExceeded:   context.DeadlineExceeded,
	codes.Canceled:           context.Canceled,
}

// statusError is a failed call: the gRPC status, the operation that failed
// and the sentinel for its code (nil for codes without one).
type statusError struct {
	op       string
	st       *status.Status
	sentinel error
	// refused is the Unavailable answer of an earlier attempt of a call
	// whose ctx ended while it was retried (LastRefusal), else nil.
	refused *status.Status
}

// wrapStatus converts err, returned by the call named op, into a
// *statusError. An error without a gRPC status becomes codes.Unknown.
func wrapStatus(op string, err error) error {
	st := status.Convert(err)
	e := &statusError{op: op, st: st, sentinel: sentinelByCode[st.Code()]}
	var re *refusedError
	var se *statusError
	switch {
	case errors.As(err, &re):
		e.refused = re.refused
	case errors.As(err, &se):
		e.refused = se.refused
	}
	return e
}

// Error reads "stated: <op>: <code>: <daemon's message>", and for a call
// that ran out of time while it was retried, what the daemon answered
// before.
func (e *statusError) Error() string {
	return fmt.Sprintf("stated: %s: %s: %s", e.op, e.st.Code(), e.st.Message()) + refusalSuffix(e.refused)
}

// GRPCStatus lets status.Code and status.FromError see the original status.
func (e *statusError) GRPCStatus() *status.Status { return e.st }

// Is reports whether target is the sentinel for e's code, ErrOutboxFull
// for a refusal with an OutboxFull detail, ErrDiskFull for one with a
// DiskFull detail, or ErrOtherCluster for one
// with a LineageRefused detail.
func (e *statusError) Is(target error) bool {
	switch target {
	case ErrOutboxFull:
		return isOutboxFull(e.st)
	case ErrDiskFull:
		return isDiskFull(e.st)
	case ErrOtherCluster:
		return isOtherCluster(e.st)
	}
	return e.sentinel != nil && target == e.sentinel
}

// isDiskFull reports whether st is the daemon's refusal of a commit
// because its data dir's disk is nearly full.
func isDiskFull(st *status.Status) bool {
	return hasDetail[*statedv1.DiskFull](st, codes.ResourceExhausted)
}

// isOutboxFull reports whether st is the daemon's refusal of a commit
// because a window namespace's outbox is full.
func isOutboxFull(st *status.Status) bool {
	return hasDetail[*statedv1.OutboxFull](st, codes.ResourceExhausted)
}

// hasDetail reports whether st has code and a detail of type T.
func hasDetail[T any](st *status.Status, code codes.Code) bool {
	if st.Code() != code {
		return false
	}
	for _, d := range st.Details() {
		if _, ok := d.(T); ok {
			return true
		}
	}
	return false
}

// localError is an error the SDK detects before sending anything, in the
// same shape as the daemon's: code, and a message naming the field.
func localError(op string, code codes.Code, format string, args ...any) error {
	return wrapStatus(op, status.Errorf(code, format, args...))
}

// codecError wraps a codec failure so that it matches both ErrCodec and err.
func codecError(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrCodec, what, err)
}
