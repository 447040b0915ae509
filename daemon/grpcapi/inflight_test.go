package grpcapi

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// commitOf is a commit request of about n bytes encoded.
func commitOf(n int) *statedv1.CommitRequest {
	return &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_PUT,
		Namespace: "ns", Key: []byte("k"), Value: make([]byte, n)}}}
}

// TestLargeRequestsBeyondTheBudgetWaitAndSmallOnesNever: requests of
// 1 MiB or more are admitted while they fit in the budget; the next waits
// until one ends or its deadline passes, and then fails naming the flag;
// a request smaller than 1 MiB passes while the budget is full; one larger
// than the whole budget is admitted alone.
func TestLargeRequestsBeyondTheBudgetWaitAndSmallOnesNever(t *testing.T) {
	ctx := context.Background()
	l := newLargeRequests(5 << 20)
	r1, err := l.admit(ctx, commitOf(2<<20))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := l.admit(ctx, commitOf(2<<20))
	if err != nil {
		t.Fatal(err)
	}

	// 4 MiB in flight: 2 MiB more does not fit.
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = l.admit(wctx, commitOf(2<<20))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "--max-inflight-request-bytes") {
		t.Fatalf("a third 2 MiB request under a 5 MiB budget: %v, want DeadlineExceeded naming --max-inflight-request-bytes", err)
	}
	st := statusOf(wctx, slog.New(slog.DiscardHandler), err)
	if status.Code(st) != codes.DeadlineExceeded {
		t.Fatalf("answered %v, want DeadlineExceeded", st)
	}
	small, err := l.admit(wctx, commitOf(512<<10))
	if err != nil {
		t.Fatalf("a 512 KiB request while the budget is full: %v, want admitted", err)
	}
	small()

	// A waiting request goes on once one in flight ends.
	admitted := make(chan func())
	go func() {
		r3, err := l.admit(ctx, commitOf(2<<20))
		if err != nil {
			t.Error(err)
			close(admitted)
			return
		}
		admitted <- r3
	}()
	select {
	case <-admitted:
		t.Fatal("a third 2 MiB request was admitted with 4 MiB of a 5 MiB budget in flight")
	case <-time.After(50 * time.Millisecond):
	}
	r1()
	r3, ok := <-admitted
	if !ok {
		t.FailNow()
	}
	r2()
	r3()

	// Larger than the budget: alone, once nothing else is in flight.
	big, err := l.admit(ctx, commitOf(8<<20))
	if err != nil {
		t.Fatal(err)
	}
	wctx2, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if _, err := l.admit(wctx2, commitOf(1<<20)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a 1 MiB request beside one larger than the budget: %v, want it to wait", err)
	}
	big()
	again, err := l.admit(ctx, commitOf(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	again()
}

// TestNoBudgetAdmitsEverything: a Server without WithLargeRequestBudget
// (tests, and embedders that bound requests themselves) never waits.
func TestNoBudgetAdmitsEverything(t *testing.T) {
	l := newLargeRequests(0)
	for range 100 {
		if _, err := l.admit(context.Background(), commitOf(2<<20)); err != nil {
			t.Fatal(err)
		}
	}
}
