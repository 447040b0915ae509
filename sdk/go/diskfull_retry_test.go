package stated

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestARetryRefusedForANearlyFullDiskIsSentAgainUntilItsOutcomeIsKnown (a
// review's finding): a commit's first attempt applies on node1 and its
// answer is lost; leadership moves to node2, whose disk is below its
// --min-free-disk (here 1 PiB). node2 refuses the retry before its
// session could answer it as a duplicate, and the SDK returned
// ErrDiskFull, which says that nothing applied: a Kafka processor then
// committed the batch again in a new Txn and counted it twice. A refusal
// for a nearly full disk after an attempt that may have applied is now
// retried like Unavailable: once leadership is back on node1, the retry
// is answered as the duplicate it is, and the counter is 1.
func TestARetryRefusedForANearlyFullDiskIsSentAgainUntilItsOutcomeIsKnown(t *testing.T) {
	var started atomic.Int32
	nodes := daemontest.StartCluster(t, 2, func(c *daemon.Config) {
		if started.Add(1) == 2 {
			c.MinFreeDiskBytes = 1 << 50
		}
	})
	node1, node2 := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	moveTo := func(to *daemon.Daemon) {
		if err := daemontest.MoveLeadership(ctx, t, nodes, to); err != nil {
			t.Error(err)
		}
	}
	var once sync.Once
	var refusals atomic.Int32
	var retrying atomic.Bool // the first commit's retries are being sent
	retrying.Store(true)
	intercept := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if method != statedv1.State_Commit_FullMethodName {
			return err
		}
		if err == nil {
			lost := false
			once.Do(func() {
				lost = true
				moveTo(node2)
			})
			if lost {
				return status.Error(codes.Unavailable, "test: the answer of an applied commit was lost")
			}
			return nil
		}
		// From the second refusal on, leadership goes back to node1:
		// again if an election under load put node2 back in the lead.
		if isDiskFull(status.Convert(err)) && refusals.Add(1) >= 2 && retrying.Load() && node2.Store().IsLeader() {
			moveTo(node1)
		}
		return err
	}
	c, err := Dial(ctx, node1.SocketPath(), WithBlock(), WithCommitCoalescing(false),
		WithDialOptions(grpc.WithChainUnaryInterceptor(intercept)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Txn().CounterAdd("ns", []byte("n"), 1).Commit(ctx)
	if err != nil {
		t.Fatalf("commit: %v (ErrDiskFull %v) after %d disk-full refusals", err, errors.Is(err, ErrDiskFull), refusals.Load())
	}
	if refusals.Load() < 2 || !res.Duplicate {
		t.Errorf("%d disk-full refusals, duplicate %v: the test did not exercise a refused retry of an applied commit", refusals.Load(), res.Duplicate)
	}
	if v, err := c.GetCounter(ctx, "ns", []byte("n"), WithConsistency(ConsistencyLinearizable)); err != nil || v != 1 {
		t.Fatalf("counter %d, %v; want 1", v, err)
	}

	// A first attempt refused for the disk applied nothing: ErrDiskFull at
	// once, not retried.
	retrying.Store(false)
	moveTo(node2)
	short, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	before := refusals.Load()
	if _, err := c.Txn().CounterAdd("ns", []byte("n"), 1).Commit(short); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("a first attempt refused for the disk: %v, want ErrDiskFull", err)
	}
	if n := refusals.Load() - before; n != 1 {
		t.Errorf("%d attempts of a commit whose first attempt was refused for the disk; want 1", n)
	}
}
