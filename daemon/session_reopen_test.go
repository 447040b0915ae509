package daemon_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

// TestACommitRetriedPastItsSessionsExpiryDoesNotFenceItsClient: a commit
// whose first attempt applied but whose answer was lost is retried after
// its session expired and after another commit of the same Client opened
// the Client's next session. The retry is refused as superseded, by the
// Client's own newer session: the commit's outcome is unknown to the
// caller (its first attempt applied), and the Client is not fenced, since
// no other process uses its client id.
func TestACommitRetriedPastItsSessionsExpiryDoesNotFenceItsClient(t *testing.T) {
	d := daemontest.Start(t, func(c *daemon.Config) {
		c.ExpiryInterval = 100 * time.Millisecond
		c.SessionIdleTimeout = time.Second
	})
	ctx := testContext(t)
	const clientID = "svc"
	slow, retrying, retry := lostFirstAnswer(func(r *statedv1.CommitRequest) bool { return r.GetMutations()[0].GetNamespace() == "slow" })
	c, err := stated.Dial(ctx, d.SocketPath(), stated.WithClientID(clientID), stated.WithBlock(),
		stated.WithCommitCoalescing(false), stated.WithAttemptTimeout(0),
		stated.WithDialOptions(grpc.WithUnaryInterceptor(slow)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first := c.SessionID()

	slowErr := make(chan error, 1)
	go func() {
		_, err := c.Txn().CounterAdd("slow", []byte("k"), 1).Commit(ctx)
		slowErr <- err
	}()
	<-retrying
	// The session expires (its only commit applied) and is swept.
	waitSessionDeleted(ctx, t, d, clientID)
	// Another commit of the Client finds it expired, opens the Client's
	// next session and applies there.
	if _, err := c.Txn().CounterAdd("other", []byte("k"), 1).Commit(ctx); err != nil {
		t.Fatalf("a commit after the expiry: %v", err)
	}
	if c.SessionID() == first || c.SessionID() == 0 {
		t.Fatalf("session %d after the expiry, want a new one (the first was %d)", c.SessionID(), first)
	}
	close(retry)
	err = <-slowErr
	if !errors.Is(err, stated.ErrSessionExpired) || errors.Is(err, stated.ErrSessionFenced) {
		t.Fatalf("the retried commit: %v; want ErrSessionExpired (its first attempt applied, the outcome is unknown), not fenced", err)
	}
	if _, err := c.Txn().CounterAdd("other", []byte("k"), 1).Commit(ctx); err != nil {
		t.Fatalf("a commit after the retry was refused: %v; the Client fenced itself", err)
	}
	n, err := c.GetCounter(ctx, "slow", []byte("k"), stated.WithConsistency(stated.ConsistencyLinearizable))
	if err != nil || n != 1 {
		t.Fatalf("slow counter = %d, %v; want 1 (applied once)", n, err)
	}
}

// TestACommitFencedWhileRetriedIsOfUnknownOutcome: a commit whose first
// attempt applied but whose answer was lost is retried after another
// process opened a session with the same client id. The retry is refused
// as fenced; the caller learns that the commit may have applied (it did),
// not that nothing of it applied.
func TestACommitFencedWhileRetriedIsOfUnknownOutcome(t *testing.T) {
	d := daemontest.Start(t)
	ctx := testContext(t)
	const clientID = "svc"
	lost, retrying, retry := lostFirstAnswer(func(*statedv1.CommitRequest) bool { return true })
	zombie, err := stated.Dial(ctx, d.SocketPath(), stated.WithClientID(clientID), stated.WithBlock(),
		stated.WithCommitCoalescing(false), stated.WithAttemptTimeout(0),
		stated.WithDialOptions(grpc.WithUnaryInterceptor(lost)))
	if err != nil {
		t.Fatal(err)
	}
	defer zombie.Close()
	done := make(chan error, 1)
	go func() {
		_, err := zombie.Txn().CounterAdd("n", []byte("k"), 1).Commit(ctx)
		done <- err
	}()
	<-retrying
	successor, err := stated.Dial(ctx, d.SocketPath(), stated.WithClientID(clientID), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer successor.Close()
	close(retry)
	err = <-done
	if !errors.Is(err, stated.ErrSessionFenced) {
		t.Fatalf("the retried commit: %v, want ErrSessionFenced", err)
	}
	n, gerr := successor.GetCounter(ctx, "n", []byte("k"), stated.WithConsistency(stated.ConsistencyLinearizable))
	if gerr != nil || n != 1 {
		t.Fatalf("counter = %d, %v; want 1 (the first attempt applied)", n, gerr)
	}
	if !strings.Contains(err.Error(), "may or may not have applied") {
		t.Fatalf("the retried commit: %q; it applied, and the error does not say its outcome is unknown", err)
	}
}

// TestAZombieWhoseSuccessorsSessionExpiredOpensASessionAgain pins a limit
// that docs/GUARANTEES.md states: the state machine forgets an expired
// session, so a zombie not yet fenced whose successor's session expired
// finds no session at its next commit, opens one and commits, fencing the
// successor in turn.
func TestAZombieWhoseSuccessorsSessionExpiredOpensASessionAgain(t *testing.T) {
	d := daemontest.Start(t, func(c *daemon.Config) {
		c.ExpiryInterval = 100 * time.Millisecond
		c.SessionIdleTimeout = time.Second
	})
	ctx := testContext(t)
	zombie, err := stated.Dial(ctx, d.SocketPath(), stated.WithClientID("svc"), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer zombie.Close()
	successor, err := stated.Dial(ctx, d.SocketPath(), stated.WithClientID("svc"), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer successor.Close()
	waitSessionDeleted(ctx, t, d, "svc")
	if _, err := zombie.Txn().CounterAdd("n", []byte("k"), 1).Commit(ctx); err != nil {
		t.Fatalf("the zombie's commit: %v; the limit documented in GUARANTEES.md is gone, update it", err)
	}
	if _, err := successor.Txn().CounterAdd("n", []byte("k"), 1).Commit(ctx); !errors.Is(err, stated.ErrSessionFenced) {
		t.Fatalf("the successor's commit: %v, want ErrSessionFenced", err)
	}
}

// waitSessionDeleted waits until clientID has no session on d.
func waitSessionDeleted(ctx context.Context, t *testing.T, d *daemon.Daemon, clientID string) {
	t.Helper()
	for {
		if _, ok, err := d.Store().Session(clientID); err != nil {
			t.Fatal(err)
		} else if !ok {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("the session of %q was never deleted", clientID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lostFirstAnswer returns a client interceptor for the Commit calls that
// match: the first attempt applies and its answer is lost (Unavailable);
// the second closes retrying, then waits until retry is closed.
func lostFirstAnswer(match func(*statedv1.CommitRequest) bool) (ic grpc.UnaryClientInterceptor, retrying, retry chan struct{}) {
	retrying, retry = make(chan struct{}), make(chan struct{})
	attempts := 0
	ic = func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		r, ok := req.(*statedv1.CommitRequest)
		if method != statedv1.State_Commit_FullMethodName || !ok || !match(r) {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		attempts++
		if attempts == 2 {
			close(retrying)
			<-retry
		}
		if err := invoker(ctx, method, req, reply, cc, opts...); err != nil || attempts > 1 {
			return err
		}
		return status.Error(codes.Unavailable, "the answer was lost") // applied, answer lost
	}
	return ic, retrying, retry
}
