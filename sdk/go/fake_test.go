package stated

import (
	"context"
	"io"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// fakeState is a statedv1.StateClient that records requests and answers
// from canned responses, for tests of what the SDK sends and how it reads
// answers. Tests against a real daemon live in /test.
type fakeState struct {
	mu          sync.Mutex
	opens       []*statedv1.OpenSessionRequest
	sessionIDs  []uint64 // OpenSession answers these in turn, then 77
	lineage     string   // OpenSession answers it
	commits     []*statedv1.CommitRequest
	gets        []*statedv1.GetRequest
	scans       []*statedv1.ScanRequest
	indexes     []uint64 // Commit answers these in turn
	commitErr   error
	commitHook  func(ctx context.Context) error // if set, runs first; an error is returned
	getResp     *statedv1.GetResponse
	getErr      error
	scanBatches [][]*statedv1.Entry
	scanErr     error // returned by Recv after the batches
	scanCtx     context.Context
	// CommitBatch (coalesce_test.go) records batches and answers each
	// commit with batchResult, or fails the call with batchErr.
	batches     []*statedv1.CommitBatchRequest
	batchErr    error
	batchResult func(*statedv1.CommitRequest) *statedv1.CommitBatchResult
}

func (f *fakeState) Commit(ctx context.Context, in *statedv1.CommitRequest, _ ...grpc.CallOption) (*statedv1.CommitResponse, error) {
	f.mu.Lock()
	f.commits = append(f.commits, in)
	hook := f.commitHook
	f.mu.Unlock()
	if hook != nil {
		if err := hook(ctx); err != nil {
			return nil, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.commitErr != nil {
		return nil, f.commitErr
	}
	var idx uint64
	if len(f.indexes) > 0 {
		idx, f.indexes = f.indexes[0], f.indexes[1:]
	}
	return &statedv1.CommitResponse{Index: idx}, nil
}

func (f *fakeState) OpenSession(_ context.Context, in *statedv1.OpenSessionRequest, _ ...grpc.CallOption) (*statedv1.OpenSessionResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opens = append(f.opens, in)
	id := uint64(77)
	if len(f.sessionIDs) > 0 {
		id, f.sessionIDs = f.sessionIDs[0], f.sessionIDs[1:]
	}
	return &statedv1.OpenSessionResponse{SessionId: id, IdleTimeoutMillis: 3600_000, LineageId: f.lineage}, nil
}

func (f *fakeState) Get(_ context.Context, in *statedv1.GetRequest, _ ...grpc.CallOption) (*statedv1.GetResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets = append(f.gets, in)
	if f.getErr != nil {
		return nil, f.getErr
	}
	if f.getResp == nil {
		return &statedv1.GetResponse{}, nil
	}
	return f.getResp, nil
}

func (f *fakeState) Scan(ctx context.Context, in *statedv1.ScanRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[statedv1.ScanResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.scans = append(f.scans, in)
	f.scanCtx = ctx
	return &fakeScanStream{ctx: ctx, batches: f.scanBatches, err: f.scanErr}, nil
}

func (f *fakeState) GetOffsets(context.Context, *statedv1.GetOffsetsRequest, ...grpc.CallOption) (*statedv1.GetOffsetsResponse, error) {
	return &statedv1.GetOffsetsResponse{}, nil
}

func (f *fakeState) Claim(context.Context, *statedv1.ClaimRequest, ...grpc.CallOption) (*statedv1.ClaimResponse, error) {
	return nil, status.Error(codes.Unimplemented, "fakeState: claims are tested against a real daemon")
}

func (f *fakeState) Release(context.Context, *statedv1.ReleaseRequest, ...grpc.CallOption) (*statedv1.ReleaseResponse, error) {
	return nil, status.Error(codes.Unimplemented, "fakeState: claims are tested against a real daemon")
}

type fakeScanStream struct {
	grpc.ClientStream // nil: only Recv is used
	ctx               context.Context
	batches           [][]*statedv1.Entry
	err               error
}

func (s *fakeScanStream) Recv() (*statedv1.ScanResponse, error) {
	if err := s.ctx.Err(); err != nil {
		return nil, err
	}
	if len(s.batches) == 0 {
		if s.err != nil {
			return nil, s.err
		}
		return nil, io.EOF
	}
	b := s.batches[0]
	s.batches = s.batches[1:]
	return &statedv1.ScanResponse{Entries: b}, nil
}

// newFakeClient returns a Client that talks to f.
func newFakeClient(f *fakeState, opts ...Option) *Client {
	o := clientOptions{clientID: "test-client"}
	for _, opt := range opts {
		opt(&o)
	}
	return newClient(nil, f, o)
}

// flakyGets fails the first failures Gets with Unavailable.
type flakyGets struct {
	*fakeState
	failures int32
	calls    *atomic.Int32
}

func (f *flakyGets) Get(ctx context.Context, in *statedv1.GetRequest, opts ...grpc.CallOption) (*statedv1.GetResponse, error) {
	if f.calls.Add(1) <= f.failures {
		return nil, status.Error(codes.Unavailable, "connection refused")
	}
	return f.fakeState.Get(ctx, in, opts...)
}
