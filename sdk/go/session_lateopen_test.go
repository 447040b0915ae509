package stated

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

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
