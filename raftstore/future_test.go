package raftstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// unanswered is a raft.Future that hashicorp/raft never answers, as one
// whose entry committed just as Raft shut down.
type unanswered struct{ answer chan error }

func (u unanswered) Error() error { return <-u.answer }

// TestAWaitOnAFutureRaftNeverAnswersEndsWithItsContext: Close cancels
// watchCtx and then waits for watchLeadership; a barrier that Raft left
// unanswered at its shutdown kept watchLeadership, and so Close, waiting
// for good (seen in CI, 8 minutes). futureErrorUntil ends with its
// context, and passes an answer through; a store's wait also ends when
// its Raft shuts down.
func TestAWaitOnAFutureRaftNeverAnswersEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- futureErrorUntil(ctx, nil, unanswered{answer: make(chan error)}) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("futureErrorUntil after its context was cancelled = %v; want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("futureErrorUntil still waits 10 s after its context was cancelled")
	}

	answered := unanswered{answer: make(chan error, 1)}
	answered.answer <- raft.ErrLeadershipLost
	if err := futureErrorUntil(context.Background(), nil, answered); !errors.Is(err, raft.ErrLeadershipLost) {
		t.Fatalf("futureErrorUntil of an answered future = %v; want its answer", err)
	}

	// A store's wait on a future that is never answered ends, with a
	// background context, when the store's Raft shuts down.
	s := openStore(t, testConfig(t.TempDir()))
	t.Cleanup(func() { s.Close() })
	go func() { done <- s.untilClosed(context.Background(), unanswered{answer: make(chan error)}) }()
	time.Sleep(20 * time.Millisecond)
	if err := s.raft.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, raft.ErrRaftShutdown) {
			t.Fatalf("untilClosed after Raft shut down = %v; want %v", err, raft.ErrRaftShutdown)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("untilClosed still waits 10 s after Raft shut down")
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
			for i := range 16 {
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

// TestACommitInFlightAsRaftShutsDownEnds: hashicorp/raft hands a
// committed entry to its state machine goroutine, which may stop before
// it takes the entry; nothing then answers the Apply's future. A commit
// whose caller set no deadline (a gRPC call may set none) waited for
// good. Writers commit with no deadline while Raft shuts down under them,
// by Close and on its own; every commit must end, and one that ends
// without its answer must say its outcome is unknown, since its entry
// may have committed.
func TestACommitInFlightAsRaftShutsDownEnds(t *testing.T) {
	const writers, rounds = 16, 12
	for _, c := range []struct {
		name string
		stop func(*Store) error
	}{
		{"Close", (*Store).Close},
		{"Raft's own shutdown", func(s *Store) error { return s.raft.Shutdown().Error() }},
	} {
		t.Run(c.name, func(t *testing.T) {
			unknown := 0
			for round := range rounds {
				s := openStore(t, testConfig(t.TempDir()))
				t.Cleanup(func() { s.Close() })
				errs := make(chan error, writers)
				for w := range writers {
					go func() {
						for i := 0; ; i++ {
							key := fmt.Appendf(nil, "w%d-%d", w, i)
							_, _, err := s.Commit(context.Background(), &command.Commit{Mutations: []command.Mutation{{Op: command.OpPut, Namespace: "ns", Key: key, Value: []byte("v")}}})
							if err != nil {
								errs <- err
								return
							}
						}
					}()
				}
				time.Sleep(time.Duration(20+round*5) * time.Millisecond)
				if err := c.stop(s); err != nil {
					t.Fatal(err)
				}
				deadline := time.After(waitLimit)
				for w := range writers {
					select {
					case err := <-errs:
						switch {
						case errors.Is(err, ErrOutcomeUnknown):
							if !errors.Is(err, ErrClosed) {
								t.Fatalf("round %d: a commit's outcome is unknown for another reason than the shutdown: %v", round, err)
							}
							unknown++
						case errors.Is(err, ErrClosed), errors.Is(err, ErrNotLeader):
						default:
							t.Fatalf("round %d: a commit as Raft shut down failed with %v; want ErrClosed, ErrNotLeader or ErrOutcomeUnknown", round, err)
						}
					case <-deadline:
						t.Fatalf("round %d: %d of %d writers' commits still wait %s after Raft shut down", round, writers-w, writers, waitLimit)
					}
				}
			}
			t.Logf("%d of %d commits in flight ended with their outcome unknown", unknown, writers*rounds)
		})
	}
}
