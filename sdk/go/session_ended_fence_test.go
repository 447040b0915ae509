package stated

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestAZombieWhoseOpenWasReplacedBySuccessorIsFencedAndDoesNotFenceIt: process
// A (a zombie) opens a session; its first attempt applies but the answer is
// lost. Meanwhile its successor B, a new process with the same fixed client
// id, dials and opens its own session, replacing A's. A's retry is refused
// as ended (REASON_ENDED, CurrentSessionId = B's session). The package
// documentation says "A process restarted with a fixed client id therefore
// fences its own zombie": A should end up fenced, B should keep committing.
// A review found the SDK's new-id loop (an open refused as ended opens a
// new id) opening a third session for A, which fenced B; the refusal
// names the client id's current session, and one that is not A's own
// fences A instead.
func TestAZombieWhoseOpenWasReplacedBySuccessorIsFencedAndDoesNotFenceIt(t *testing.T) {
	d := daemontest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const id = "fixed-id"
	var (
		mu    sync.Mutex
		first uint64
		b     *Client
	)
	hook := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if method != statedv1.State_OpenSession_FullMethodName {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if first == 0 && err == nil {
			first = req.(*statedv1.OpenSessionRequest).GetSessionId()
			// The successor starts now and opens its session.
			var derr error
			b, derr = Dial(ctx, d.SocketPath(), WithBlock(), WithClientID(id))
			if derr != nil {
				return derr
			}
			return status.Error(codes.Unavailable, "test: the answer of an applied open was lost")
		}
		return err
	}
	a, err := Dial(ctx, d.SocketPath(), WithBlock(), WithLazySession(), WithClientID(id),
		WithDialOptions(grpc.WithChainUnaryInterceptor(hook)))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, aerr := a.Txn().Put("ns", []byte("a"), []byte("zombie")).Commit(ctx)
	mu.Lock()
	succ := b
	mu.Unlock()
	if succ == nil {
		t.Fatal("the successor was not started")
	}
	defer succ.Close()
	_, berr := succ.Txn().Put("ns", []byte("b"), []byte("successor")).Commit(ctx)
	t.Logf("zombie A: session %d, commit err %v", a.SessionID(), aerr)
	t.Logf("successor B: session %d, commit err %v", succ.SessionID(), berr)
	if berr != nil {
		t.Errorf("the successor's commit failed (fenced=%v): %v; the zombie whose open it replaced opened a new session and fenced it",
			errors.Is(berr, ErrSessionFenced), berr)
	}
	if !errors.Is(aerr, ErrSessionFenced) {
		t.Errorf("the zombie's commit: %v; want ErrSessionFenced, its session replaced by its successor's", aerr)
	}
}
