package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/fsm"
	"github.com/statedhq/stated/uploader"
)

// fieldError is a request the daemon refuses before proposing it. Field is
// the path of the offending field, e.g. "mutations[3].key".
type fieldError struct {
	Field  string
	Reason string
}

func (e *fieldError) Error() string { return e.Field + ": " + e.Reason }

func invalid(field, format string, args ...any) error {
	return &fieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// toStatus maps err to a gRPC status; see statusOf.
func (s *Server) toStatus(ctx context.Context, err error) error {
	return statusOf(ctx, s.logger, err)
}

// statusOf is the one place that maps errors to gRPC status codes. Errors
// it does not know are Internal and logged, since they are bugs or failing
// disks that an operator has to see.
func statusOf(ctx context.Context, logger *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	var fe *fieldError
	var re *fsm.RejectError
	var fence *fsm.FenceError
	var sess *fsm.SessionError
	var nl *notLeaderError
	var oc *otherClusterError
	var full *fsm.OutboxFullError
	var cfe *command.FieldError
	var endedOpen *fsm.EndedSessionError
	var diskFull *DiskFullError
	switch {
	case errors.As(err, &diskFull):
		return diskFullStatus(diskFull)
	case errors.As(err, &full):
		return outboxFullStatus(full, 0)
	case errors.As(err, &cfe):
		return status.Error(codes.InvalidArgument, cfe.Error())
	case errors.As(err, &fence):
		return fencedStatus(fence)
	case errors.As(err, &sess):
		return sessionStatus(sess)
	case errors.As(err, &fe):
		return status.Error(codes.InvalidArgument, fe.Error())
	case errors.As(err, &endedOpen):
		return endedOpenStatus(endedOpen)
	case errors.As(err, &re):
		return status.Error(codes.InvalidArgument, re.Field+": "+re.Reason)
	case errors.Is(err, fsm.ErrRejected):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.As(err, &nl):
		return status.Error(codes.Unavailable, nl.Error())
	case errors.As(err, &oc):
		return status.Error(codes.Unavailable, oc.Error())
	case errors.Is(err, raftstore.ErrUnreachable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, raftstore.ErrNotLeader):
		return status.Error(codes.Unavailable, "stated: this node is not the raft leader; retry on the leader")
	case errors.Is(err, raftstore.ErrMemberConflict), errors.Is(err, raftstore.ErrClusterMismatch), errors.Is(err, raftstore.ErrLastVoter):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, raftstore.ErrUnknownMember), errors.Is(err, uploader.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, uploader.ErrFormat), errors.Is(err, uploader.ErrPinned), errors.Is(err, uploader.ErrNewest), errors.Is(err, uploader.ErrCorrupt),
		errors.Is(err, uploader.ErrBucketAhead):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, uploader.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, raftstore.ErrClosed) && errors.Is(err, raftstore.ErrOutcomeUnknown):
		return status.Error(codes.Unavailable, "stated: the node is shutting down; the commit's outcome is unknown (a retry in the same session learns it)")
	case errors.Is(err, raftstore.ErrClosed), errors.Is(err, fsm.ErrClosed):
		return status.Error(codes.Unavailable, "stated: the node is shutting down")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	if st, ok := status.FromError(err); ok {
		// Already a status, e.g. from a failed stream Send: keep its code.
		return st.Err()
	}
	method, _ := grpc.Method(ctx)
	logger.Error("grpcapi: internal error", "method", method, "error", err)
	return status.Error(codes.Internal, "stated: internal error: "+err.Error())
}

// fencedStatus is FAILED_PRECONDITION with the fenced partition in the
// details, so that a client learns which partition to stop processing.
func fencedStatus(e *fsm.FenceError) error {
	st := status.New(codes.FailedPrecondition, fmt.Sprintf("%s: group %q topic %q partition %d: %s", e.Field, e.Group, e.Topic, e.Partition, e.Reason))
	if d, err := st.WithDetails(&statedv1.FencedPartition{
		Group: e.Group, Topic: e.Topic, Partition: e.Partition,
		Epoch: e.Epoch, CurrentEpoch: e.Current, Owner: e.Owner, Reason: e.Reason,
	}); err == nil {
		st = d
	}
	return st.Err()
}

// diskFullStatus is RESOURCE_EXHAUSTED with a DiskFull detail, so that a
// client tells it from a message too large.
func diskFullStatus(e *DiskFullError) error {
	st := status.New(codes.ResourceExhausted, e.Error())
	if d, err := st.WithDetails(&statedv1.DiskFull{NodeId: e.NodeID, FreeBytes: e.Free, MinFreeBytes: e.Min}); err == nil {
		st = d
	}
	return st.Err()
}

// endedOpenStatus is INVALID_ARGUMENT naming session.id, as any refused
// open, with a SessionRefused detail (REASON_ENDED) that tells a client
// its open's session ended, so that it opens a new one.
func endedOpenStatus(e *fsm.EndedSessionError) error {
	msg := e.Reject.Field + ": " + e.Reject.Reason
	st := status.New(codes.InvalidArgument, msg)
	if d, err := st.WithDetails(&statedv1.SessionRefused{
		ClientId: e.ClientID, SessionId: e.SessionID, CurrentSessionId: e.Current,
		Reason: statedv1.SessionRefused_REASON_ENDED, Message: msg,
	}); err == nil {
		st = d
	}
	return st.Err()
}

// sessionReasons maps the state machine's session refusals to the wire's.
var sessionReasons = map[fsm.SessionReason]statedv1.SessionRefused_Reason{
	fsm.SessionSuperseded: statedv1.SessionRefused_REASON_SUPERSEDED,
	fsm.SessionNotOpen:    statedv1.SessionRefused_REASON_NOT_OPEN,
	fsm.SequenceReused:    statedv1.SessionRefused_REASON_SEQUENCE_REUSED,
	fsm.SequenceStale:     statedv1.SessionRefused_REASON_SEQUENCE_STALE,
}

// sessionStatus is FAILED_PRECONDITION with a SessionRefused detail, so
// that a client tells a fenced session from an expired one.
func sessionStatus(e *fsm.SessionError) error {
	st := status.New(codes.FailedPrecondition, "session: "+e.Message)
	if d, err := st.WithDetails(&statedv1.SessionRefused{
		ClientId: e.ClientID, SessionId: e.SessionID, CurrentSessionId: e.Current,
		Reason: sessionReasons[e.Reason], Lane: e.Lane, Sequence: e.Seq, HighestSequence: e.Highest,
		Message: e.Message,
	}); err == nil {
		st = d
	}
	return st.Err()
}
