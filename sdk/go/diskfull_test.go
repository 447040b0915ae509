package stated

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/internal/commithook"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestACommitRefusedForANearlyFullDiskIsErrDiskFullAndNotSentAgain: a
// leader below its --min-free-disk (here 1 PiB, more than any disk has)
// refuses commits with RESOURCE_EXHAUSTED and a DiskFull detail. The
// Client reports ErrDiskFull (and ErrResourceExhausted), and does not
// send the commit again alone, as it does for a message too large.
func TestACommitRefusedForANearlyFullDiskIsErrDiskFullAndNotSentAgain(t *testing.T) {
	d := daemontest.Start(t, func(c *daemon.Config) { c.MinFreeDiskBytes = 1 << 50 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var commits atomic.Int32
	count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if method == statedv1.State_Commit_FullMethodName || method == statedv1.State_CommitBatch_FullMethodName {
			commits.Add(1)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	c, err := Dial(ctx, d.SocketPath(), WithBlock(), WithDialOptions(grpc.WithChainUnaryInterceptor(count), grpc.WithChainStreamInterceptor(commithook.Stream(count))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Txn().CounterAdd("ns", []byte("n"), 1).Commit(ctx)
	if !errors.Is(err, ErrDiskFull) || !errors.Is(err, ErrResourceExhausted) || errors.Is(err, ErrOutboxFull) {
		t.Fatalf("commit: %v; want ErrDiskFull and ErrResourceExhausted", err)
	}
	if n := commits.Load(); n != 1 {
		t.Errorf("%d commit calls for one refused commit; want 1", n)
	}
	if n, err := c.GetCounter(ctx, "ns", []byte("n")); err != nil || n != 0 {
		t.Errorf("counter %d, %v after the refused add; want 0", n, err)
	}
}
