package stated

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// lateOpen holds back the OpenSession attempts of the first open (as
// a partitioned node that forwards them only later would), so that the
// open fails on the client; deliver sends the held request afterwards.
type lateOpen struct {
	mu   sync.Mutex
	hold bool
	held *statedv1.OpenSessionRequest
	cc   *grpc.ClientConn
}

func (l *lateOpen) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if method == statedv1.State_OpenSession_FullMethodName {
		l.mu.Lock()
		hold := l.hold
		if hold {
			l.held = req.(*statedv1.OpenSessionRequest)
			l.cc = cc
		}
		l.mu.Unlock()
		if hold {
			<-ctx.Done()
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// TestALateOpenOfTheClientsOwnSessionDoesNotStrandIt: an open attempt
// the Client gave up on (its caller's ctx ended) may apply after a later
// open succeeded (a slow forward), and supersede the Client's current
// session with the abandoned one. The Client counts that id as its own
// (no fence) and opens a new session for its next commit; it used to keep
// the superseded one, and every later commit failed ErrSessionExpired
// until the abandoned session's idle timeout.
func TestALateOpenOfTheClientsOwnSessionDoesNotStrandIt(t *testing.T) {
	d := daemontest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lo := &lateOpen{hold: true}
	c, err := Dial(ctx, d.SocketPath(), WithBlock(), WithLazySession(), WithClientID("late-open"),
		WithDialOptions(grpc.WithChainUnaryInterceptor(lo.unary)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// 1. The first commit's open is held back; its ctx ends.
	short, scancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = c.Txn().Put("ns", []byte("k0"), []byte("v")).Commit(short)
	scancel()
	if err == nil {
		t.Fatal("first commit succeeded with its open held back")
	}
	t.Logf("first commit (open held back): %v", err)
	lo.mu.Lock()
	lo.hold = false
	held, cc := lo.held, lo.cc
	lo.mu.Unlock()
	if held == nil {
		t.Fatal("no open was held")
	}

	// 2. The next commit opens another session and commits.
	if _, err := c.Txn().Put("ns", []byte("k1"), []byte("v")).Commit(ctx); err != nil {
		t.Fatalf("second commit: %v", err)
	}
	s3 := c.SessionID()

	// 3. The held open arrives late and applies: the client id's session
	//    is now the Client's own earlier id.
	late, err := statedv1.NewStateClient(cc).OpenSession(ctx, held)
	if err != nil {
		t.Fatalf("late open: %v", err)
	}
	t.Logf("sessions: held open %d applied late over the Client's current %d", late.GetSessionId(), s3)

	// 4. The Client must go on committing (ErrSessionExpired: "The next
	//    commit opens a new session").
	var errs []error
	for i := range 3 {
		_, err := c.Txn().Put("ns", []byte(fmt.Sprint("k", 2+i)), []byte("v")).Commit(ctx)
		errs = append(errs, err)
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("commit %d after the late open: %v (expired=%v fenced=%v, code %v); session still %d",
				i, err, errors.Is(err, ErrSessionExpired), errors.Is(err, ErrSessionFenced), status.Code(err), c.SessionID())
		}
	}
}

// endedRetry answers the first attempt of the first open as lost after it
// applied, once that session expired and the daemon's expiry deleted it,
// so that the SDK's retry of the open is refused as ended.
type endedRetry struct {
	mu      sync.Mutex
	first   uint64 // the session id of the first attempt
	refused error  // the daemon's answer to the retry of first
	wait    func() // returns once first's session is deleted
}

func (e *endedRetry) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	if method != statedv1.State_OpenSession_FullMethodName {
		return err
	}
	r := req.(*statedv1.OpenSessionRequest)
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.first == 0 && err == nil:
		e.first = r.GetSessionId()
		e.wait()
		return status.Error(codes.Unavailable, "test: the answer of an applied open was lost")
	case r.GetSessionId() == e.first && err != nil:
		e.refused = err
	}
	return err
}

// TestAnOpenWhoseSessionEndedBeforeItsRetryOpensANewSession: an open's
// first attempt applies and its answer is lost; the session expires (an
// idle timeout shorter than the open's retries) and the daemon deletes it
// before the SDK's retry applies, which the daemon refuses as ended
// (INVALID_ARGUMENT naming session.id, with a SessionRefused REASON_ENDED
// detail and no current session). The SDK opens a new session with a new
// id, and the commit waiting for the open succeeds; it used to fail with
// ErrInvalidArgument. (An ended session replaced by another Client's is
// TestAZombieWhoseOpenWasReplacedBySuccessorIsFencedAndDoesNotFenceIt.)
func TestAnOpenWhoseSessionEndedBeforeItsRetryOpensANewSession(t *testing.T) {
	d := daemontest.Start(t, func(c *daemon.Config) {
		c.SessionIdleTimeout, c.ExpiryInterval = time.Second, 100*time.Millisecond
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	er := &endedRetry{}
	er.wait = func() {
		for ctx.Err() == nil {
			if n, err := d.Store().Counts(ctx); err == nil && n.Sessions == 0 && n.EndedSessions > 0 {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	c, err := Dial(ctx, d.SocketPath(), WithBlock(), WithLazySession(), WithClientID("ended-retry"),
		WithDialOptions(grpc.WithChainUnaryInterceptor(er.unary)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if _, err := c.Txn().CounterAdd("ns", []byte("n"), 1).Commit(ctx); err != nil {
		t.Fatalf("commit whose open's first session ended before its retry: %v (invalid argument: %v)", err, errors.Is(err, ErrInvalidArgument))
	}
	er.mu.Lock()
	first, refused := er.first, er.refused
	er.mu.Unlock()
	st := status.Convert(refused)
	if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "session.id") {
		t.Fatalf("the retry of ended session %d was answered %v, want INVALID_ARGUMENT naming session.id", first, refused)
	}
	var detail *statedv1.SessionRefused
	for _, d := range st.Details() {
		if sr, ok := d.(*statedv1.SessionRefused); ok {
			detail = sr
		}
	}
	if detail == nil || detail.GetReason() != statedv1.SessionRefused_REASON_ENDED || detail.GetSessionId() != first ||
		detail.GetClientId() != "ended-retry" || detail.GetCurrentSessionId() != 0 {
		t.Fatalf("refusal detail %v, want REASON_ENDED for session %d of ended-retry, no current session", detail, first)
	}
	if s := c.SessionID(); s == 0 || s == first {
		t.Fatalf("session %d after the commit, want a new one (not %d)", s, first)
	}
	n, err := c.GetCounter(ctx, "ns", []byte("n"), WithConsistency(ConsistencyLinearizable))
	if err != nil || n != 1 {
		t.Fatalf("counter %d, %v; want 1", n, err)
	}
}
