package stated

import (
	"context"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// Commit coalescing (see "Commit coalescing" in the package
// documentation). While a Client's commit call is in flight, the commits
// its other goroutines send wait in a queue; when the call returns, what
// waits goes in one call. A lone commit goes at once, so coalescing adds
// no delay; under load, many commits share one call's cost. Callers that
// a call of several commits answered get a chance to queue their next
// commit for the call that follows (letAnsweredRejoin). The calls go
// as the requests of one CommitStream (commitstream.go), each served as a
// CommitBatch call; against a daemon without CommitStream, as CommitBatch
// calls, a lone commit as a plain Commit. A commit of more than
// maxCoalescedWrites writes never waits: it goes as its own Commit. The
// daemon applies each commit of a batch as it applies a Commit:
// atomically, with its own session lane and sequence and its own error;
// the batch is one Raft entry. Every attempt of a retried commit goes
// through the queue again.

// maxBatch is the daemon's MaxCommitsPerBatch.
const maxBatch = 1024

// maxCoalescedWrites is the most writes (mutations, offsets and window
// adds) a commit may carry to wait in the queue. A larger commit goes at
// once as its own Commit call: its writes cost more than the call saves,
// and waiting behind the call in flight would only take it out of the
// pipeline (4 clients of 1000-mutation commits, or 8 of 100, ran at
// about 0.85× the throughput of plain calls when coalesced; see
// BENCHMARKS.md). The daemon applies a commit past this size in a Pebble
// batch of its own too.
const maxCoalescedWrites = 16

// coalesced reports whether req waits in the queue, rather than going as
// its own call, under coalescing.
func coalesced(req *statedv1.CommitRequest) bool {
	return len(req.GetMutations())+len(req.GetOffsets())+len(req.GetWindowAdds()) <= maxCoalescedWrites
}

// WithCommitCoalescing turns commit coalescing on (the default) or off.
// Off, every commit is its own Commit call.
func WithCommitCoalescing(on bool) Option {
	return func(o *clientOptions) { o.noCoalescing = !on }
}

// coalescer queues the commits of a Client's goroutines while its call is
// in flight.
type coalescer struct {
	rpc  statedv1.StateClient
	life context.Context // the Client's

	mu       sync.Mutex
	pending  []*queuedCommit
	inFlight bool
	// batchless is set once the daemon answered CommitBatch Unimplemented
	// (an older daemon): every commit then goes as a plain Commit.
	batchless bool
	// streamlessUntil is set when the daemon answered CommitStream
	// Unimplemented (an older release): calls go as CommitBatch or
	// Commit calls until then, and the next one after it clears it and
	// tries a stream again, which a daemon upgraded meanwhile serves.
	streamlessUntil time.Time
	// streamRetry is how long a Client stays on calls after an
	// Unimplemented answer (streamRetryAfter, or a test's).
	streamRetry time.Duration

	// lineage is the Client's, which a stream sends when it opens.
	lineage *lineage
	// stream is the CommitStream the calls go on, nil until one is
	// opened; only the goroutine with the call in flight uses it.
	stream *commitStream
}

// queuedCommit is one attempt of a commit waiting in the queue or in a
// call; done is closed once resp or err is set.
type queuedCommit struct {
	ctx  context.Context
	req  *statedv1.CommitRequest
	resp *statedv1.CommitResponse
	err  error
	done chan struct{}
}

// commit sends req, alone or with whatever else is queued, and returns
// its own response or error, or ctx's error if ctx ends first (the commit
// may then still be applied, as with a Commit call given up on).
func (q *coalescer) commit(ctx context.Context, req *statedv1.CommitRequest) (*statedv1.CommitResponse, error) {
	if !coalesced(req) {
		return q.rpc.Commit(ctx, req)
	}
	qc := &queuedCommit{ctx: ctx, req: req, done: make(chan struct{})}
	q.mu.Lock()
	if q.batchless {
		q.mu.Unlock()
		return q.rpc.Commit(ctx, req)
	}
	q.pending = append(q.pending, qc)
	var batch []*queuedCommit
	if !q.inFlight {
		batch = q.takeLocked()
	}
	q.mu.Unlock()
	if batch != nil {
		q.send(batch, true)
	}
	select {
	case <-qc.done:
		return qc.resp, qc.err
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// takeLocked marks a call in flight and takes up to maxBatch queued
// commits for it; nil when none is queued.
func (q *coalescer) takeLocked() []*queuedCommit {
	if len(q.pending) == 0 {
		q.inFlight = false
		return nil
	}
	n := min(len(q.pending), maxBatch)
	batch := q.pending[:n:n]
	q.pending = append([]*queuedCommit(nil), q.pending[n:]...)
	q.inFlight = true
	return batch
}

// send makes one call for batch and delivers each commit its answer, then
// hands what was queued meanwhile to a call of its own. inline is set when
// the goroutine of one of batch's callers runs it, which cannot queue
// again before it returns.
func (q *coalescer) send(batch []*queuedCommit, inline bool) {
	live := batch[:0:0]
	for _, qc := range batch {
		if err := qc.ctx.Err(); err != nil {
			// Its caller has gone: never sent, so never applied.
			qc.err = status.FromContextError(err).Err()
			close(qc.done)
			continue
		}
		live = append(live, qc)
	}
	q.mu.Lock()
	streamed := q.streamlessUntil.IsZero()
	if !streamed && !time.Now().Before(q.streamlessUntil) {
		// Time to try a stream again; a refusal sets it anew.
		q.streamlessUntil, streamed = time.Time{}, true
	}
	q.mu.Unlock()
	switch {
	case len(live) == 0:
	case streamed && q.sendStreamed(live):
	case len(live) == 1:
		qc := live[0]
		qc.resp, qc.err = q.rpc.Commit(qc.ctx, qc.req)
		close(qc.done)
	default:
		q.sendBatch(live)
	}
	if len(live) > 1 {
		answered := len(live)
		if inline {
			answered--
		}
		q.letAnsweredRejoin(answered)
	}
	q.mu.Lock()
	next := q.takeLocked()
	q.mu.Unlock()
	if next != nil {
		go q.send(next, false)
	}
}

// rejoinWait and rejoinMax bound letAnsweredRejoin.
const (
	rejoinWait = 20 * time.Microsecond
	rejoinMax  = 250 * time.Microsecond
)

// letAnsweredRejoin yields the processor, again and again, so that the
// answered callers of a call that carried several commits, runnable now,
// can queue their next commits before the queue is taken for the next
// call. It returns once all answered have queued again, once none has
// queued for rejoinWait, or after rejoinMax.
//
// A caller that commits again at once (a loop of commits, as 64
// goroutines committing one put each) would otherwise miss the next
// call, which takes only what queued during the flight, and wait for the
// one after it: the callers split into two cohorts that take turns, each
// call carries half of them, and while the daemon works on one the
// client has nothing to send. Let in, they ride the next call together,
// and each call's fixed cost (the log's sync, the round trip) is spread
// over all of them: 64 single-put clients through `stated run` made
// 1.42× the commits on one node and 1.48× on three (medians of five and
// three same-run pairs; BENCHMARKS.md). Callers busy with other work
// between commits hold the next call back by rejoinWait. A lone caller,
// whose calls carry one commit, never yields, nor does a large commit,
// which goes alone.
func (q *coalescer) letAnsweredRejoin(answered int) {
	q.mu.Lock()
	base := len(q.pending)
	q.mu.Unlock()
	start := time.Now()
	prev, grew := base, start
	for {
		runtime.Gosched()
		q.mu.Lock()
		n := len(q.pending)
		q.mu.Unlock()
		now := time.Now()
		if n != prev {
			prev, grew = n, now
		}
		if n-base >= answered || n >= maxBatch || now.Sub(grew) >= rejoinWait || now.Sub(start) >= rejoinMax {
			return
		}
	}
}

// sendBatch sends live in one CommitBatch call, bounded by the Client's
// life and the latest of the callers' deadlines (each caller stops
// waiting at its own).
func (q *coalescer) sendBatch(live []*queuedCommit) {
	ctx, cancel := batchContext(q.life, live)
	defer cancel()
	req := &statedv1.CommitBatchRequest{Commits: make([]*statedv1.CommitRequest, len(live))}
	for i, qc := range live {
		req.Commits[i] = qc.req
	}
	resp, err := q.rpc.CommitBatch(ctx, req)
	if status.Code(err) == codes.Unimplemented {
		// A daemon without CommitBatch: from now on, plain Commits.
		q.mu.Lock()
		q.batchless = true
		q.mu.Unlock()
		var wg sync.WaitGroup
		for _, qc := range live {
			wg.Add(1)
			go func() {
				defer wg.Done()
				qc.resp, qc.err = q.rpc.Commit(qc.ctx, qc.req)
				close(qc.done)
			}()
		}
		wg.Wait()
		return
	}
	deliver(live, resp, err)
}

// batchContext is the Client's life bounded by the latest deadline of
// live's callers, none if one of them has none.
func batchContext(life context.Context, live []*queuedCommit) (context.Context, context.CancelFunc) {
	if d, ok := latestDeadline(live); ok {
		return context.WithDeadline(life, d)
	}
	return context.WithCancel(life)
}

// resultOf turns one batch result into what a Commit call returns.
func resultOf(r *statedv1.CommitBatchResult) (*statedv1.CommitResponse, error) {
	if e := r.GetError(); e != nil {
		st := status.New(codes.Code(e.GetCode()), e.GetMessage())
		var details []protoadapt.MessageV1
		for _, a := range e.GetDetails() {
			if m, err := a.UnmarshalNew(); err == nil {
				details = append(details, protoadapt.MessageV1Of(m))
			}
		}
		if withDetails, err := st.WithDetails(details...); err == nil && len(details) > 0 {
			st = withDetails
		}
		return nil, st.Err()
	}
	if r.GetResponse() == nil {
		return nil, status.Error(codes.Internal, "stated: commit batch: a result with neither response nor error")
	}
	return r.GetResponse(), nil
}

// sendCommit sends one attempt of a commit, through the coalescer unless
// coalescing is off.
func (c *Client) sendCommit(ctx context.Context, req *statedv1.CommitRequest) (*statedv1.CommitResponse, error) {
	if c.batch == nil {
		return c.rpc.Commit(ctx, req)
	}
	return c.batch.commit(ctx, req)
}
