package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon/daemontest"
	stated "github.com/statedhq/stated/sdk/go"
)

// closeManyWindows defines window namespace "w" with 2,000 open windows
// fed by source "s", so that the next record of "s" an hour later closes
// them all: the answer to its commit carries 2,000 emissions.
func closeManyWindows(ctx context.Context, t *testing.T, big *stated.Client) time.Time {
	t.Helper()
	const size = 10 * time.Second
	base := time.UnixMilli(1_700_000_000_000).Truncate(size)
	err := big.DefineWindows(ctx, stated.WindowSpec{
		Namespace: "w", Shape: stated.Tumbling, Size: size, IdleTimeout: time.Hour,
		Aggregate: stated.Count, Emit: stated.EmitFinal, Late: stated.LateDrop,
	})
	if err != nil {
		t.Fatal(err)
	}
	txn := big.Txn()
	for i := range 2000 {
		txn.AddWindow("w", fmt.Appendf(nil, "a-rather-long-key-%06d", i), base, stated.NoValue(), stated.FromSource("s"))
	}
	if _, err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return base.Add(time.Hour)
}

// TestACommitWhoseAnswerIsTooLargeSaysItsOutcome: a small commit that
// closes 2,000 windows applies, but its answer (the emissions) is larger
// than the Client's message size. The Client must not report it as a
// commit refused for its size: it learns the outcome (a retry of the same
// lane and sequence is a duplicate, with a small answer) and reports it
// applied, the emissions left in the outbox.
func TestACommitWhoseAnswerIsTooLargeSaysItsOutcome(t *testing.T) {
	ctx := testContext(t)
	big, c, late := clientsPastManyWindows(ctx, t)
	res, err := c.Txn().CounterAdd("n", []byte("k"), 1).AddWindow("w", []byte("x"), late, stated.NoValue(), stated.FromSource("s")).Commit(ctx)
	n, gerr := big.GetCounter(ctx, "n", []byte("k"), stated.WithConsistency(stated.ConsistencyLinearizable))
	if gerr != nil || n != 1 {
		t.Fatalf("counter = %d, %v; want 1 (the commit applied once)", n, gerr)
	}
	if err != nil {
		t.Fatalf("commit: %v; it applied, and the error does not say so", err)
	}
	if !res.Duplicate {
		t.Fatalf("commit: %+v, want it answered as the duplicate of the attempt that applied", res)
	}
}

// TestCoalescedCommitsWhoseBatchAnswerIsTooLargeSayTheirOutcome: two
// commits coalesced into one CommitBatch call, one of which closes 2,000
// windows: the call's answer is too large for the Client, though both
// commits applied. Neither may be reported as refused for its size.
func TestCoalescedCommitsWhoseBatchAnswerIsTooLargeSayTheirOutcome(t *testing.T) {
	ctx := testContext(t)
	big, c, late := clientsPastManyWindows(ctx, t)
	// Eight commits at once, so that some share a call.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			txn := c.Txn().CounterAdd("n", []byte("k"), 1)
			if i == 0 {
				txn.AddWindow("w", []byte("x"), late, stated.NoValue(), stated.FromSource("s"))
			}
			_, errs[i] = txn.Commit(ctx)
		})
	}
	wg.Wait()
	n, err := big.GetCounter(ctx, "n", []byte("k"), stated.WithConsistency(stated.ConsistencyLinearizable))
	if err != nil {
		t.Fatal(err)
	}
	var failed []string
	for i, err := range errs {
		if err != nil {
			failed = append(failed, fmt.Sprintf("commit %d: %v", i, err))
		}
	}
	if int(n)+len(failed) != len(errs) {
		t.Fatalf("counter = %d with %d commits failed, of %d: a commit reported failed applied\n%s",
			n, len(failed), len(errs), strings.Join(failed, "\n"))
	}
	for _, err := range errs {
		if errors.Is(err, stated.ErrResourceExhausted) {
			t.Fatalf("a commit failed with %v", err)
		}
	}
}

// clientsPastManyWindows starts a daemon and prepares 2,000 windows
// (closeManyWindows) through big, a Client of the default message size;
// c is a Client whose messages are at most 32 KiB, less than the answer
// of a commit at late, which closes them all.
func clientsPastManyWindows(ctx context.Context, t *testing.T) (big, c *stated.Client, late time.Time) {
	t.Helper()
	d := daemontest.Start(t)
	big, err := stated.Dial(ctx, d.SocketPath(), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { big.Close() })
	late = closeManyWindows(ctx, t, big)
	c, err = stated.Dial(ctx, d.SocketPath(), stated.WithBlock(), stated.WithMaxMessageSize(32<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return big, c, late
}
