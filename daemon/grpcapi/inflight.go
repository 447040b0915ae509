package grpcapi

import (
	"context"
	"fmt"

	"golang.org/x/sync/semaphore"
	"google.golang.org/protobuf/proto"

	"github.com/statedhq/stated/internal/reqsize"
)

// largeRequestBytes is the size from which a commit request counts
// against the budget of large requests in flight (WithLargeRequestBudget).
// Smaller ones never wait for it: their cost is bounded by the calls a
// client makes, and a budget shared with them would put a one-key commit
// behind a 60 MiB one.
const largeRequestBytes = 1 << 20

// largeRequests bounds the bytes of large commit requests a node works on
// at once. A commit costs the daemon several times its size while it is
// proposed, logged and applied (the request, its Raft entry and the log
// store's copy of it, its Pebble batch, and the garbage they leave), so
// without a bound the memory of concurrent large commits grows with the
// number of clients that send them. A request beyond the budget waits,
// holding only its decoded self, bounded by its own deadline; one larger
// than the whole budget is admitted alone.
type largeRequests struct {
	limit int64 // 0: unbounded
	sem   *semaphore.Weighted
}

func newLargeRequests(limit int64) largeRequests {
	if limit <= 0 {
		return largeRequests{}
	}
	return largeRequests{limit: limit, sem: semaphore.NewWeighted(limit)}
}

// admit waits until m, if it is large, fits in the budget, and returns
// the function that gives its share back. m is already decoded: what the
// budget bounds is the work after decoding. Its size is the one gRPC
// received (reqsize), or m's encoded size where no reqsize.Handler
// recorded one.
func (l largeRequests) admit(ctx context.Context, m proto.Message) (release func(), err error) {
	if l.sem == nil {
		return func() {}, nil
	}
	n := reqsize.Size(ctx, m)
	if n < largeRequestBytes {
		return func() {}, nil
	}
	w := min(n, l.limit)
	if err := l.sem.Acquire(ctx, w); err != nil {
		return nil, fmt.Errorf("%w: waiting for room among the large requests in flight (this one %d bytes; at most %d bytes of requests of 1 MiB or more are worked on at once: --max-inflight-request-bytes)", err, n, l.limit)
	}
	return func() { l.sem.Release(w) }, nil
}
