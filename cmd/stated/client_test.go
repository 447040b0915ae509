package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// passedDeadline is a context whose deadline has passed but whose timer
// has not yet cancelled it: what a context.WithTimeout looks like on a
// loaded machine between its deadline and the run of its timer's
// goroutine.
type passedDeadline struct{ context.Context }

func (passedDeadline) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }

// TestBoundReachedReadsTheDeadlineFromTheClock: the daemon's
// DeadlineExceeded can arrive before the CLI's own context says it is
// done; the --timeout was still what ended the operation, and the user
// must hear what still runs rather than "no answer from the daemon".
func TestBoundReachedReadsTheDeadlineFromTheClock(t *testing.T) {
	t.Parallel()
	deadlineErr := status.Error(codes.DeadlineExceeded, "context deadline exceeded")
	expired, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-expired.Done()
	future, cancelFuture := context.WithTimeout(context.Background(), time.Hour)
	defer cancelFuture()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
		want bool
	}{
		{"cancelled by its deadline", expired, deadlineErr, true},
		{"deadline passed, not yet cancelled", passedDeadline{context.Background()}, deadlineErr, true},
		{"deadline passed, context error", passedDeadline{context.Background()}, context.DeadlineExceeded, true},
		{"deadline ahead", future, deadlineErr, false},
		{"no deadline", context.Background(), deadlineErr, false},
		{"deadline passed, other error", passedDeadline{context.Background()}, status.Error(codes.Unavailable, "down"), false},
		{"deadline passed, no error", passedDeadline{context.Background()}, nil, false},
		{"deadline passed, plain error", expired, errors.New("disk full"), false},
	} {
		if got := boundReached(tc.ctx, tc.err); got != tc.want {
			t.Errorf("%s: boundReached = %v, want %v", tc.name, got, tc.want)
		}
	}
}
