package stated

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Retry defaults; see the package documentation, "Retries".
const (
	// DefaultAttemptTimeout bounds one attempt of a call the Client
	// retries, unless WithAttemptTimeout says otherwise.
	DefaultAttemptTimeout = 5 * time.Second
	retryBackoffMin       = 20 * time.Millisecond
	retryBackoffMax       = time.Second
)

// retryPolicy says whether and how the Client retries. The zero value
// makes one attempt per call.
type retryPolicy struct {
	enabled        bool
	attemptTimeout time.Duration // 0: an attempt may use the caller's whole ctx
}

func defaultRetryPolicy() retryPolicy {
	return retryPolicy{enabled: true, attemptTimeout: DefaultAttemptTimeout}
}

// WithoutRetries makes every call one attempt: an Unavailable or timed-out
// call returns its error at once.
func WithoutRetries() Option {
	return func(o *clientOptions) { o.retry = retryPolicy{} }
}

// WithAttemptTimeout bounds each attempt of a retried call (default
// DefaultAttemptTimeout); an attempt that runs out is retried while the
// caller's ctx lasts. Zero lets one attempt use the caller's whole ctx.
// It does not apply to the stream of a Scan once it has started.
func WithAttemptTimeout(d time.Duration) Option {
	return func(o *clientOptions) {
		if d >= 0 {
			o.retry.attemptTimeout = d
		}
	}
}

// retryable reports whether an attempt that failed with err may be sent
// again: the daemon was unreachable, shutting down or not (yet) able to
// reach a leader, or the attempt (not the caller) ran out of time. The
// caller's ctx must still be live.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// withRetries runs attempt until it succeeds, fails in a way that is not
// retryable, the Client is closed, or ctx ends; between attempts it waits
// an exponential, jittered backoff from 20 ms to 1 s. It returns the last
// attempt's error.
func (c *Client) withRetries(ctx context.Context, attempt func(ctx context.Context) error) error {
	return c.retryLoop(ctx, c.retry.attemptTimeout, attempt)
}

// retryLoop is withRetries with attempts bounded by attemptTimeout (0: by
// ctx only).
func (c *Client) retryLoop(ctx context.Context, attemptTimeout time.Duration, attempt func(ctx context.Context) error) error {
	return c.retryLoopAlso(ctx, attemptTimeout, attempt, nil)
}

// retryLoopAlso is retryLoop that also retries the errors also reports
// true for (nil: none), which count as refusals (LastRefusal) like
// Unavailable answers.
func (c *Client) retryLoopAlso(ctx context.Context, attemptTimeout time.Duration, attempt func(ctx context.Context) error, also func(error) bool) error {
	backoff := retryBackoffMin
	var refused *status.Status // the last attempt refused Unavailable, or as also says
	for {
		err := c.attempt(ctx, attemptTimeout, attempt)
		retryAlso := err != nil && ctx.Err() == nil && also != nil && also(err)
		if err == nil || !c.retry.enabled || c.closed.Load() || !retryable(ctx, err) && !retryAlso {
			return withRefusal(ctx, err, refused)
		}
		if st, ok := status.FromError(err); ok && (st.Code() == codes.Unavailable || retryAlso) {
			refused = st
		}
		// Full jitter over the upper half, so that clients that failed
		// together do not retry together.
		wait := backoff/2 + rand.N(backoff/2+1)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return withRefusal(ctx, err, refused)
		case <-t.C:
		}
		backoff = min(2*backoff, retryBackoffMax)
	}
}

// withRefusal returns err, the error that ended a retried call, with the
// last Unavailable answer of an earlier attempt when ctx ended during a
// later attempt: the user whose call timed out then learns what the
// daemon kept answering ("not leader; no leader is known", "another
// cluster") instead of only that time ran out. See LastRefusal.
func withRefusal(ctx context.Context, err error, refused *status.Status) error {
	if err == nil || refused == nil || !ended(ctx) {
		return err
	}
	switch status.Code(err) {
	case codes.DeadlineExceeded, codes.Canceled:
		return &refusedError{err: err, refused: refused}
	}
	return err
}

// ended reports whether ctx is done or its deadline has passed: gRPC's
// own timer can end an attempt with DeadlineExceeded before the timer
// that cancels ctx has run.
func ended(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// refusedError is a retried call whose ctx ended during an attempt after
// an earlier attempt was refused Unavailable: it is err (its code, its
// sentinel), and its message says what the refusal was.
type refusedError struct {
	err     error
	refused *status.Status
}

func (e *refusedError) Error() string {
	return e.err.Error() + refusalSuffix(e.refused)
}

func (e *refusedError) Unwrap() error { return e.err }

// GRPCStatus is err's status; status.Code sees its code.
func (e *refusedError) GRPCStatus() *status.Status { return status.Convert(e.err) }

// refusalSuffix is what an error's message adds for the refusal st (nil:
// nothing).
func refusalSuffix(st *status.Status) string {
	if st == nil {
		return ""
	}
	return "; before that the daemon answered " + st.Code().String() + ": " + st.Message()
}

// LastRefusal returns, for a call that ran out of time (context.DeadlineExceeded)
// or was canceled while the Client retried it, the error the daemon answered
// the last refused attempt with (matching ErrUnavailable): for example "not
// leader; no leader is known", or a node that forwarded the call to its
// leader's address and found another cluster there; or, for a commit
// retried after an attempt that may have applied, a leader below its
// --min-free-disk (matching ErrDiskFull). It returns nil when
// no attempt was refused before the call ended, or for any other error.
func LastRefusal(err error) error {
	var re *refusedError
	if errors.As(err, &re) {
		return wrapStatus("attempt", re.refused.Err())
	}
	var se *statusError
	if errors.As(err, &se) && se.refused != nil {
		return &statusError{op: se.op, st: se.refused, sentinel: sentinelByCode[se.refused.Code()]}
	}
	return nil
}

// attempt runs one attempt, bounded by the attempt timeout when the Client
// retries.
func (c *Client) attempt(ctx context.Context, timeout time.Duration, attempt func(ctx context.Context) error) error {
	if !c.retry.enabled || timeout <= 0 {
		return attempt(ctx)
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return attempt(actx)
}
