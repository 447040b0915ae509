package stated

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// withDefaultRetries turns on the retries Dial gives every Client.
func withDefaultRetries() Option {
	return func(o *clientOptions) { o.retry = defaultRetryPolicy() }
}

// failFirst returns a commit hook that fails the first n attempts with err.
func failFirst(n int32, err error) func(context.Context) error {
	var calls atomic.Int32
	return func(context.Context) error {
		if calls.Add(1) <= n {
			return err
		}
		return nil
	}
}

func TestCommitRetriesUnavailableWithTheSameClientIDAndSequence(t *testing.T) {
	f := &fakeState{indexes: []uint64{7}, commitHook: failFirst(2, status.Error(codes.Unavailable, "stated: not leader; leader is n2"))}
	c := newFakeClient(f, withDefaultRetries())
	res, err := c.Txn().Put("ns", []byte("k"), []byte("v")).Commit(context.Background())
	if err != nil || res.Index != 7 {
		t.Fatalf("commit = %v, %v; want index 7", res, err)
	}
	if len(f.commits) != 3 {
		t.Fatalf("%d attempts, want 3", len(f.commits))
	}
	for i, r := range f.commits {
		if r.GetClientId() != "test-client" || r.GetSequence() != 1 {
			t.Errorf("attempt %d sent client %q sequence %d, want test-client 1", i, r.GetClientId(), r.GetSequence())
		}
	}
}

func TestAnAttemptThatRunsOutOfTimeIsRetried(t *testing.T) {
	var calls atomic.Int32
	f := &fakeState{indexes: []uint64{3}, commitHook: func(ctx context.Context) error {
		if calls.Add(1) == 1 {
			<-ctx.Done() // the daemon hangs
			return status.FromContextError(ctx.Err()).Err()
		}
		return nil
	}}
	c := newFakeClient(f, withDefaultRetries(), WithAttemptTimeout(50*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Txn().Put("ns", []byte("k"), []byte("v")).Commit(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if len(f.commits) != 2 || f.commits[0].GetSequence() != f.commits[1].GetSequence() {
		t.Errorf("attempts = %d, want 2 with one sequence", len(f.commits))
	}
}

// TestCommitNeverRetriesARefusal; ResourceExhausted, which may be an
// answer too large after the commit applied, is
// TestACommitAnsweredResourceExhaustedIsSentAgainAloneToLearnItsOutcome.
func TestCommitNeverRetriesARefusal(t *testing.T) {
	for _, code := range []codes.Code{codes.InvalidArgument, codes.FailedPrecondition} {
		t.Run(code.String(), func(t *testing.T) {
			f := &fakeState{commitErr: status.Error(code, "refused")}
			c := newFakeClient(f, withDefaultRetries())
			_, err := c.Txn().Put("ns", []byte("k"), []byte("v")).Commit(context.Background())
			if status.Code(err) != code || len(f.commits) != 1 {
				t.Errorf("err = %v after %d attempts; want %s after 1", err, len(f.commits), code)
			}
		})
	}
}

func TestWithoutRetriesACommitIsOneAttempt(t *testing.T) {
	f := &fakeState{commitErr: status.Error(codes.Unavailable, "down")}
	c := newFakeClient(f, withDefaultRetries(), WithoutRetries())
	_, err := c.Txn().Put("ns", []byte("k"), []byte("v")).Commit(context.Background())
	if !errors.Is(err, ErrUnavailable) || len(f.commits) != 1 {
		t.Errorf("err = %v after %d attempts; want ErrUnavailable after 1", err, len(f.commits))
	}
}

func TestRetriesEndWithTheCallersContext(t *testing.T) {
	f := &fakeState{commitErr: status.Error(codes.Unavailable, "no leader")}
	c := newFakeClient(f, withDefaultRetries())
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Txn().Put("ns", []byte("k"), []byte("v")).Commit(ctx)
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("err = %v, want the last attempt's ErrUnavailable", err)
	}
	if len(f.commits) < 3 {
		t.Errorf("%d attempts in 300ms; want backoff from 20ms", len(f.commits))
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("returned after %s; the context ended after 300ms", el)
	}
}

// TestACallThatTimesOutAfterARefusalSaysWhatTheDaemonAnswered: the
// caller's ctx ends during an attempt (the daemon is slow to answer it)
// after the daemon refused the attempts before. The error is still the
// deadline's, and it carries the refusal: a user whose call keeps meeting
// "no leader is known" must not read only that time ran out.
func TestACallThatTimesOutAfterARefusalSaysWhatTheDaemonAnswered(t *testing.T) {
	const refusal = "stated: not leader; no leader is known (election in progress?); retry"
	var calls atomic.Int32
	f := &fakeState{commitHook: func(ctx context.Context) error {
		if calls.Add(1) <= 2 {
			return status.Error(codes.Unavailable, refusal)
		}
		<-ctx.Done() // the third attempt hangs until the caller's deadline
		return status.FromContextError(ctx.Err()).Err()
	}}
	c := newFakeClient(f, withDefaultRetries())
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := c.Txn().Put("ns", []byte("k"), []byte("v")).Commit(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("err = %v (code %s); want the caller's deadline", err, status.Code(err))
	}
	if !strings.Contains(err.Error(), refusal) {
		t.Errorf("err = %q; it does not say what the daemon answered before", err)
	}
	last := LastRefusal(err)
	if !errors.Is(last, ErrUnavailable) || status.Convert(last).Message() != refusal {
		t.Errorf("LastRefusal = %v; want the Unavailable refusal %q", last, refusal)
	}

	// A call whose only attempt ran out of time has no refusal to report.
	f2 := &fakeState{commitHook: func(ctx context.Context) error {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	_, err = newFakeClient(f2, withDefaultRetries()).Txn().Put("ns", []byte("k"), []byte("v")).Commit(ctx2)
	if !errors.Is(err, context.DeadlineExceeded) || LastRefusal(err) != nil {
		t.Errorf("err = %v, LastRefusal = %v; want the deadline and no refusal", err, LastRefusal(err))
	}
	if LastRefusal(nil) != nil || LastRefusal(ErrUnavailable) != nil {
		t.Error("LastRefusal of an error that is no timed-out retried call is not nil")
	}
}

func TestReadsRetryUnavailable(t *testing.T) {
	var calls atomic.Int32
	f := &fakeState{}
	c := newClient(nil, &flakyGets{fakeState: f, failures: 2, calls: &calls}, clientOptions{clientID: "x", retry: defaultRetryPolicy()})
	if _, _, err := c.Get(context.Background(), "ns", []byte("k")); err != nil {
		t.Fatalf("get: %v", err)
	}
	if calls.Load() != 3 {
		t.Errorf("%d attempts, want 3", calls.Load())
	}
}

func TestDialAcceptsACommaSeparatedListOfAddresses(t *testing.T) {
	c, err := Dial(context.Background(), "127.0.0.1:1, /tmp/stated-x.sock", WithAddresses("localhost:3"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.Close()
	for _, bad := range []string{"127.0.0.1:1,dns:///x:2", "127.0.0.1:1,nonsense"} {
		if _, err := Dial(context.Background(), bad); err == nil {
			t.Errorf("Dial(%q) succeeded", bad)
		}
	}
	if got, err := endpointOf("/tmp/a b.sock"); err != nil || got != "unix:/tmp/a b.sock" {
		t.Errorf("endpointOf = %q, %v", got, err)
	}
}
