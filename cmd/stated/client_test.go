package main

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
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

// refusingState is a State server that refuses the first refusals Gets
// with Unavailable, as a follower that knows no leader does, and then
// holds every Get until its caller gives up: what a daemon that answers
// slowly after an election looks like. No real daemon can be held in
// that order on cue; the CLI's message is what this tests.
type refusingState struct {
	statedv1.UnimplementedStateServer
	refusals int32
	calls    atomic.Int32
}

func (s *refusingState) Get(ctx context.Context, _ *statedv1.GetRequest) (*statedv1.GetResponse, error) {
	if s.calls.Add(1) <= s.refusals {
		return nil, status.Error(codes.Unavailable, "stated: not leader; no leader is known (election in progress?); retry")
	}
	<-ctx.Done()
	return nil, status.FromContextError(ctx.Err()).Err()
}

// TestATimedOutCallSaysWhatTheDaemonRefusedBefore: a call the SDK
// retried until --timeout, whose last attempt got no answer, reports the
// refusal of the attempt before instead of "no answer from the daemon",
// which would send the user looking for a daemon that is not running.
func TestATimedOutCallSaysWhatTheDaemonRefusedBefore(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		refusals int32
		want     string
	}{
		{2, "did not serve the call within 1s; it refused the attempt before with: stated: not leader; no leader is known"},
		{0, "no answer from the daemon at "},
	} {
		sock := filepath.Join(t.TempDir(), "s.sock")
		lis, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer()
		state := &refusingState{refusals: tc.refusals}
		statedv1.RegisterStateServer(srv, state)
		go srv.Serve(lis)
		r := cliRun(t, nil, "kv", "get", "ns", "k", "--consistency", "local", "--addr", sock, "--timeout", "1s")
		srv.Stop()
		if r.code != exitUnreachable || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("after %d refusals (%d calls): exit %d, stderr %q; want exit %d saying %q", tc.refusals, state.calls.Load(), r.code, r.stderr, exitUnreachable, tc.want)
		}
	}
}
