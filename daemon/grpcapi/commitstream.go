package grpcapi

import (
	"context"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// CommitStream serves CommitBatch calls sent as the messages of one
// stream (the Go SDK sends its coalesced commits this way): each request
// is served by CommitBatch, with its commits authorized against the
// stream's token, bounded by its own timeout, and answered with its id.
// A message costs a round trip on an open HTTP/2 stream instead of a
// unary call's stream set-up, headers and trailers.
//
// Requests are served one at a time, in order, by the goroutine that
// reads them, so that a request is handled with no hand-off between
// goroutines. The handler's own goroutine only waits for the stream to
// end or the server to drain (Drain): a draining server ends the stream
// with UNAVAILABLE once the request being served is answered, so that the
// daemon's graceful stop does not wait for clients to hang up. A request
// read after that is not served; its client sees the stream end without
// its answer, as it would see a call cut off, and sends it again.
func (s *Server) CommitStream(stream statedv1.State_CommitStreamServer) error {
	var (
		mu       sync.Mutex // held while a request is served
		draining bool       // under mu: serve no more
		done     = make(chan error, 1)
	)
	ctx := stream.Context()
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				done <- err
				return
			}
			mu.Lock()
			if draining {
				mu.Unlock()
				return
			}
			resp := s.serveStreamed(ctx, req)
			err = stream.Send(resp)
			mu.Unlock()
			if err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if err == io.EOF { // the client closed its side
			return nil
		}
		return err
	case <-s.drain.ch:
		mu.Lock()
		draining = true
		mu.Unlock()
		return status.Error(codes.Unavailable, "grpcapi: this node is stopping: commit through another node, or again once it is back")
	}
}

// serveStreamed serves one request of a CommitStream as a CommitBatch call.
func (s *Server) serveStreamed(ctx context.Context, req *statedv1.CommitStreamRequest) *statedv1.CommitStreamResponse {
	start := time.Now()
	if t := req.GetTimeoutMicros(); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(t)*time.Microsecond)
		defer cancel()
	}
	batch := req.GetBatch()
	if batch == nil {
		batch = &statedv1.CommitBatchRequest{}
	}
	resp, err := s.CommitBatch(ctx, batch)
	if s.observe != nil {
		s.observe(ctx, batch, resp, err, time.Since(start))
	}
	out := &statedv1.CommitStreamResponse{Id: req.GetId()}
	if err != nil {
		out.Error = errorResult(err).GetError()
	} else {
		out.Batch = resp
	}
	return out
}

// drainSignal is closed once, when the server drains.
type drainSignal struct {
	once sync.Once
	ch   chan struct{}
}

func newDrainSignal() drainSignal { return drainSignal{ch: make(chan struct{})} }

// Drain ends every CommitStream (each once its request in service is
// answered) and every one opened later, with UNAVAILABLE. Call it before
// the gRPC server's GracefulStop, which waits for streams to end.
func (s *Server) Drain() { s.drain.once.Do(func() { close(s.drain.ch) }) }

// BatchObserver is told of each CommitBatch call served on a
// CommitStream: its request, its response or error, and how long it took.
type BatchObserver func(ctx context.Context, req *statedv1.CommitBatchRequest, resp *statedv1.CommitBatchResponse, err error, took time.Duration)

// WithBatchObserver makes the server tell obs of each request served on
// a CommitStream (the metrics of a unary call come from its interceptor).
func WithBatchObserver(obs BatchObserver) Option {
	return func(o *options) { o.observe = obs }
}
