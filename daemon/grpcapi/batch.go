package grpcapi

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon/authz"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/raftstore/command"
)

// MaxCommitsPerBatch is the most commits one CommitBatch may carry.
const MaxCommitsPerBatch = 1024

// CommitBatch serves several independent commits in one call: a follower
// forwards the whole batch to the leader, and the leader checks and
// authorizes each commit as Commit does, then proposes the valid ones as
// one Raft entry (raftstore.Store.CommitBatch). Each commit still applies
// atomically or not at all, with its own session sequence and its own
// outcome; one commit refused leaves the others applied. The applied
// commits of a batch share their entry's index.
func (s *Server) CommitBatch(ctx context.Context, r *statedv1.CommitBatchRequest) (*statedv1.CommitBatchResponse, error) {
	if n := len(r.GetCommits()); n > MaxCommitsPerBatch {
		return nil, s.toStatus(ctx, invalid("commits", "%d commits; at most %d", n, MaxCommitsPerBatch))
	}
	release, err := s.large.admit(ctx, r)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	defer release()
	conn, fctx, err := s.fwd.leaderConn(ctx)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if conn != nil {
		resp, err := statedv1.NewStateClient(conn).CommitBatch(fctx, r)
		return resp, s.toStatus(ctx, forwardedError(err))
	}
	commits := r.GetCommits()
	results := make([]*statedv1.CommitBatchResult, len(commits))
	valid := make([]*command.Commit, 0, len(commits))
	at := make([]int, 0, len(commits)) // valid[j] is commits[at[j]]
	for i, c := range commits {
		if err := authz.AuthorizeCommit(ctx, c); err != nil {
			results[i] = errorResult(err)
			continue
		}
		if err := validateCommit(c); err != nil {
			results[i] = errorResult(s.toStatus(ctx, err))
			continue
		}
		valid = append(valid, toCommand(c))
		at = append(at, i)
	}
	if len(valid) == 0 {
		return &statedv1.CommitBatchResponse{Results: results}, nil
	}
	// The leader's write guard refuses the call's commits as one, before
	// anything is proposed.
	err = s.checkWrite()
	var outs []raftstore.CommitOutcome
	var errs []error
	if err == nil {
		outs, errs, err = s.store.CommitBatch(ctx, valid)
	}
	if err != nil {
		// The proposal's error, answered once (an unknown one is logged)
		// for every commit in it.
		failed := errorResult(s.commitStatus(ctx, err))
		for _, i := range at {
			results[i] = failed
		}
		return &statedv1.CommitBatchResponse{Results: results}, nil
	}
	for j, i := range at {
		switch {
		case errs[j] != nil:
			results[i] = errorResult(s.commitStatus(ctx, errs[j]))
		default:
			results[i] = &statedv1.CommitBatchResult{Response: commitResponse(outs[j])}
		}
	}
	return &statedv1.CommitBatchResponse{Results: results}, nil
}

// errorResult carries err's status, details included, as a batch result.
func errorResult(err error) *statedv1.CommitBatchResult {
	st, ok := status.FromError(err)
	if !ok {
		st = status.New(codes.Unknown, err.Error())
	}
	p := st.Proto()
	return &statedv1.CommitBatchResult{Error: &statedv1.CommitError{Code: p.GetCode(), Message: p.GetMessage(), Details: p.GetDetails()}}
}
