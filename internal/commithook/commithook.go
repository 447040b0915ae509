// Package commithook lets a test's unary client interceptor, written for
// the Commit and CommitBatch calls, see the requests the Go SDK sends on
// a CommitStream as those calls, so that one hook covers both ways a
// commit travels (for tests that lose an answer, hold an attempt or count
// them).
package commithook

import (
	"context"

	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// Stream returns the stream client interceptor that shows hook each
// request of a CommitStream as a call: a request of one commit as a
// Commit call (its CommitRequest and CommitResponse), one of several as a
// CommitBatch call, in the stream's context. The hook's invoker sends the
// request and reads its answer. When the hook returns the invoker's
// outcome, the stream's reader gets the answer as it came; an error of
// the hook's own (an answer it loses) is what the reader gets instead,
// as from a stream that broke. A request that could not be sent fails
// SendMsg, as without the hook. Other streams pass through.
func Stream(hook grpc.UnaryClientInterceptor) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || method != statedv1.State_CommitStream_FullMethodName {
			return s, err
		}
		return &hooked{ClientStream: s, ctx: ctx, cc: cc, hook: hook}, nil
	}
}

type hooked struct {
	grpc.ClientStream
	ctx  context.Context
	cc   *grpc.ClientConn
	hook grpc.UnaryClientInterceptor
	// the answer the next RecvMsg returns, or its error
	answer *statedv1.CommitStreamResponse
	err    error
}

func (s *hooked) SendMsg(m any) error {
	req, ok := m.(*statedv1.CommitStreamRequest)
	if !ok {
		return s.ClientStream.SendMsg(m)
	}
	var (
		answer          *statedv1.CommitStreamResponse
		invErr, sendErr error
		called          bool
	)
	invoker := func(_ context.Context, _ string, _, reply any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
		called = true
		invErr = func() error {
			if sendErr = s.ClientStream.SendMsg(req); sendErr != nil {
				return sendErr
			}
			answer = new(statedv1.CommitStreamResponse)
			if err := s.ClientStream.RecvMsg(answer); err != nil {
				answer = nil
				return err
			}
			if e := answer.GetError(); e != nil {
				return statusOf(e)
			}
			switch r := reply.(type) {
			case *statedv1.CommitResponse:
				res := answer.GetBatch().GetResults()
				if len(res) != 1 {
					return nil
				}
				if e := res[0].GetError(); e != nil {
					return statusOf(e)
				}
				proto.Merge(r, res[0].GetResponse())
			case *statedv1.CommitBatchResponse:
				proto.Merge(r, answer.GetBatch())
			}
			return nil
		}()
		return invErr
	}
	var err error
	if commits := req.GetBatch().GetCommits(); len(commits) == 1 {
		err = s.hook(s.ctx, statedv1.State_Commit_FullMethodName, commits[0], new(statedv1.CommitResponse), s.cc, invoker)
	} else {
		err = s.hook(s.ctx, statedv1.State_CommitBatch_FullMethodName, req.GetBatch(), new(statedv1.CommitBatchResponse), s.cc, invoker)
	}
	switch {
	case sendErr != nil:
		// The request never left: the stream's sender sees that, as
		// without the hook.
		s.answer, s.err = nil, nil
		return sendErr
	case !called:
		s.answer, s.err = nil, err // never sent
	case answer != nil && (err == nil || err == invErr):
		s.answer, s.err = answer, nil
	case err == nil:
		s.answer, s.err = nil, invErr
	default:
		s.answer, s.err = nil, err
	}
	return nil
}

func (s *hooked) RecvMsg(m any) error {
	if s.answer == nil && s.err == nil {
		return s.ClientStream.RecvMsg(m)
	}
	answer, err := s.answer, s.err
	s.answer, s.err = nil, nil
	if err != nil {
		return err
	}
	proto.Merge(m.(proto.Message), answer)
	return nil
}

func statusOf(e *statedv1.CommitError) error {
	return grpcstatus.ErrorProto(&status.Status{Code: e.GetCode(), Message: e.GetMessage(), Details: e.GetDetails()})
}
