package stated

import (
	"cmp"
	"context"
	"io"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// The coalescer sends its calls as the messages of one CommitStream (see
// "Commit coalescing" in the package documentation): a message on an
// open stream costs about half a unary call's round trip. The coalescer
// has one call in flight at a time, so the stream carries one request,
// then its response, then the next request.

// streamAnswerGrace is how long past a request's timeout the coalescer
// waits for its answer before it gives the stream up (a daemon that hangs,
// or a connection that died without a word): the daemon answers a request
// that runs out of time itself.
const streamAnswerGrace = time.Second

// commitStream is an open CommitStream.
type commitStream struct {
	s       statedv1.State_CommitStreamClient
	cancel  context.CancelFunc
	lineage string // what the stream was opened with
	next    uint64 // the next request's id
}

// sendStreamed sends live as one request of the coalescer's CommitStream,
// opening it first if need be. It reports false, having delivered
// nothing, when the daemon does not serve CommitStream (an older daemon):
// live then goes as a call, and so do the calls of the next
// streamRetryAfter.
func (q *coalescer) sendStreamed(live []*queuedCommit) bool {
	batch := &statedv1.CommitBatchRequest{Commits: make([]*statedv1.CommitRequest, len(live))}
	for i, qc := range live {
		batch.Commits[i] = qc.req
	}
	for attempt := 1; ; attempt++ {
		st, err := q.openStream()
		if status.Code(err) == codes.Unimplemented {
			q.streamlessNow()
			return false
		}
		if err != nil {
			deliver(live, nil, err)
			return true
		}
		req := &statedv1.CommitStreamRequest{Id: st.next, Batch: batch}
		st.next++
		wait := time.Duration(-1) // no bound but the stream's
		if d, ok := latestDeadline(live); ok {
			left := max(time.Until(d), time.Microsecond)
			req.TimeoutMicros = max(left.Microseconds(), 1)
			wait = left + streamAnswerGrace
		}
		resp, sent, err := st.roundTrip(req, wait)
		if status.Code(err) == codes.Unimplemented && req.GetId() == 1 {
			// The stream's first request: the daemon does not know the
			// method.
			q.dropStream(st)
			q.streamlessNow()
			return false
		}
		if err != nil && !sent && attempt == 1 {
			// The stream had ended before the request went out (its
			// connection was lost while it was idle, the daemon
			// restarted): nothing was sent, so send it on a new one.
			q.dropStream(st)
			continue
		}
		if err == nil && resp.GetId() != req.GetId() {
			err = status.Errorf(codes.Internal, "stated: commit stream: the answer to request %d came with id %d", req.GetId(), resp.GetId())
		}
		if err != nil {
			// The stream is broken: the requests not answered were not
			// applied, or their sessions say so when sent again.
			q.dropStream(st)
			deliver(live, nil, err)
			return true
		}
		if e := resp.GetError(); e != nil {
			_, err := resultOf(&statedv1.CommitBatchResult{Error: e})
			deliver(live, nil, err)
			return true
		}
		deliver(live, resp.GetBatch(), nil)
		return true
	}
}

// roundTrip sends req and reads its answer, giving the stream up when
// none comes within wait (negative: no bound). sent is false when req
// never left: the stream had ended, or gRPC refused the message.
func (st *commitStream) roundTrip(req *statedv1.CommitStreamRequest, wait time.Duration) (resp *statedv1.CommitStreamResponse, sent bool, err error) {
	var gaveUp atomic.Bool
	if wait >= 0 {
		t := time.AfterFunc(wait, func() { gaveUp.Store(true); st.cancel() })
		defer t.Stop()
	}
	fail := func(err error) error {
		if gaveUp.Load() {
			// Retried while the caller's ctx lasts, as an attempt that
			// ran out of time is.
			return status.Errorf(codes.DeadlineExceeded, "stated: commit stream: no answer within %v (request %d); the stream was given up", wait, req.GetId())
		}
		return streamErr(err)
	}
	if err := st.s.Send(req); err != nil {
		// Send reports a stream that ended as io.EOF; Recv has its status.
		if err == io.EOF {
			_, err = st.s.Recv()
		}
		return nil, false, fail(err)
	}
	resp, err = st.s.Recv()
	if err != nil {
		return nil, true, fail(err)
	}
	return resp, true, nil
}

// streamErr is the status a commit answered by a broken stream fails
// with: UNAVAILABLE (retried; its session makes the retry safe) unless
// the stream ended with a status.
func streamErr(err error) error {
	if _, ok := status.FromError(err); ok && status.Code(err) != codes.OK && status.Code(err) != codes.Unknown {
		return err
	}
	return status.Errorf(codes.Unavailable, "stated: commit stream ended: %v", err)
}

// openStream returns the coalescer's stream, opening one if there is none
// or the Client learnt its lineage since it was opened (a stream sends
// its metadata once, when it opens).
func (q *coalescer) openStream() (*commitStream, error) {
	lin := q.lineage.get()
	if q.stream != nil && q.stream.lineage == lin {
		return q.stream, nil
	}
	if q.stream != nil {
		q.dropStream(q.stream)
	}
	ctx, cancel := context.WithCancel(q.life)
	s, err := q.rpc.CommitStream(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	q.stream = &commitStream{s: s, cancel: cancel, lineage: lin, next: 1}
	return q.stream, nil
}

// streamRetryAfter is how long a Client whose daemon answered
// CommitStream Unimplemented sends calls before it tries a stream again:
// the daemon beside it may be upgraded while the Client lives. A try
// costs one stream that the daemon refuses at once; the commits it
// carried then go as calls.
const streamRetryAfter = time.Minute

// streamlessNow makes the calls of the next streamRetryAfter go as
// CommitBatch or Commit calls.
func (q *coalescer) streamlessNow() {
	q.mu.Lock()
	q.streamlessUntil = time.Now().Add(cmp.Or(q.streamRetry, streamRetryAfter))
	q.mu.Unlock()
}

// dropStream closes st, the coalescer's stream.
func (q *coalescer) dropStream(st *commitStream) {
	st.cancel()
	if q.stream == st {
		q.stream = nil
	}
}

// deliver answers each commit of live: with resp's result for it, or with
// err.
func deliver(live []*queuedCommit, resp *statedv1.CommitBatchResponse, err error) {
	if err == nil && len(resp.GetResults()) != len(live) {
		err = status.Errorf(codes.Internal, "stated: commit batch: %d results for %d commits", len(resp.GetResults()), len(live))
	}
	for i, qc := range live {
		if err != nil {
			qc.err = err
		} else {
			qc.resp, qc.err = resultOf(resp.GetResults()[i])
		}
		close(qc.done)
	}
}

// latestDeadline is the latest of live's callers' deadlines; false when
// one of them has none.
func latestDeadline(live []*queuedCommit) (time.Time, bool) {
	var latest time.Time
	for _, qc := range live {
		d, ok := qc.ctx.Deadline()
		if !ok {
			return time.Time{}, false
		}
		if d.After(latest) {
			latest = d
		}
	}
	return latest, true
}
