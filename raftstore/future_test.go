package raftstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// unanswered is a raft.Future that hashicorp/raft never answers, as one
// whose entry committed just as Raft shut down.
type unanswered struct{ answer chan error }

func (u unanswered) Error() error { return <-u.answer }

// TestAWaitOnAFutureRaftNeverAnswersEndsWithItsContext: Close cancels
// watchCtx and then waits for watchLeadership; a barrier that Raft left
// unanswered at its shutdown kept watchLeadership, and so Close, waiting
// for good (seen in CI, 8 minutes). futureError ends with its context, and
// passes an answer through.
func TestAWaitOnAFutureRaftNeverAnswersEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- futureError(ctx, unanswered{answer: make(chan error)}) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("futureError after its context was cancelled = %v; want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("futureError still waits 10 s after its context was cancelled")
	}

	answered := unanswered{answer: make(chan error, 1)}
	answered.answer <- raft.ErrLeadershipLost
	if err := futureError(context.Background(), answered); !errors.Is(err, raft.ErrLeadershipLost) {
		t.Fatalf("futureError of an answered future = %v; want its answer", err)
	}
}

// TestALeadershipCheckThatReachesRaftAsItClosesEnds: hashicorp/raft, once
// Shutdown has begun, queues a VerifyLeader future or answers it
// ErrRaftShutdown at random, and nothing answers a queued one. A
// linearizable read whose check reached Raft as it shut down waited for
// good, however long its caller would wait (a gRPC call may set no
// deadline). Each of these checks must end with Raft's shutdown error,
// after Close and after a shutdown of Raft's own (a node removed from
// the configuration shuts its Raft down without Close); without the wait
// on the shutdown, about half of them wait for good.
func TestALeadershipCheckThatReachesRaftAsItClosesEnds(t *testing.T) {
	for _, c := range []struct {
		name string
		stop func(*Store) error
	}{
		{"Close", (*Store).Close},
		{"Raft's own shutdown", func(s *Store) error {
			t.Cleanup(func() { s.Close() })
			return s.raft.Shutdown().Error()
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := openStore(t, testConfig(t.TempDir()))
			if err := c.stop(s); err != nil {
				t.Fatal(err)
			}
			for i := range 32 {
				err := withinWaitLimit(t, fmt.Sprintf("leadership check %d after %s", i+1, c.name), func() error {
					return s.confirmLeadership(context.Background())
				})
				if !errors.Is(err, raft.ErrRaftShutdown) {
					t.Fatalf("leadership check %d after %s: %v; want %v", i+1, c.name, err, raft.ErrRaftShutdown)
				}
			}
		})
	}
}
