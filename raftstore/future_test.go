package raftstore

import (
	"context"
	"errors"
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
