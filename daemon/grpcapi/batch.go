package grpcapi

import (
	"context"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon/authz"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// MaxCommitsPerBatch is the most commits one CommitBatch may carry.
const MaxCommitsPerBatch = 1024

// CommitBatch serves several independent commits in one call: a follower
// forwards the whole batch to the leader, and the leader checks,
// authorizes and proposes each commit as Commit does, all at once, so
// that Raft appends them together while each stays its own entry with its
// own session sequence and its own outcome.
func (s *Server) CommitBatch(ctx context.Context, r *statedv1.CommitBatchRequest) (*statedv1.CommitBatchResponse, error) {
	if n := len(r.GetCommits()); n > MaxCommitsPerBatch {
		return nil, s.toStatus(ctx, invalid("commits", "%d commits; at most %d", n, MaxCommitsPerBatch))
	}
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
	var wg sync.WaitGroup
	for i := range commits {
		if i == len(commits)-1 {
			results[i] = s.batchElement(ctx, commits[i])
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = s.batchElement(ctx, commits[i])
		}()
	}
	wg.Wait()
	return &statedv1.CommitBatchResponse{Results: results}, nil
}

// batchElement is what Commit on the leader answers r, as a batch result.
func (s *Server) batchElement(ctx context.Context, r *statedv1.CommitRequest) *statedv1.CommitBatchResult {
	if err := authz.AuthorizeCommit(ctx, r); err != nil {
		return errorResult(err)
	}
	if err := validateCommit(r); err != nil {
		return errorResult(s.toStatus(ctx, err))
	}
	resp, err := s.commitHere(ctx, r)
	if err != nil {
		return errorResult(err)
	}
	return &statedv1.CommitBatchResult{Response: resp}
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
