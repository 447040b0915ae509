package stated_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

func testCtx30s(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestCommitsWaitingForASessionFailWithErrClosedWhenTheClientCloses: a
// Client dialled (without WithBlock, the default) while its daemon is not
// up has commits waiting for its session; the service shuts down and
// closes the Client. Calls in flight fail with ErrClosed (Close's doc);
// some failed with ErrUnavailable: Close ended the background open, and
// the waiting commits ran an open of their own on the connection not yet
// closed.
func TestCommitsWaitingForASessionFailWithErrClosedWhenTheClientCloses(t *testing.T) {
	dir, err := os.MkdirTemp("", "rv")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := testCtx30s(t)
	bad, total := 0, 0
	var example error
	for iter := 0; iter < 40; iter++ {
		c, err := stated.Dial(ctx, filepath.Join(dir, "none.sock"))
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 10)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = c.Txn().Put("n", []byte("k"), []byte("v")).Commit(ctx)
			}()
		}
		time.Sleep(time.Duration(50+iter*10) * time.Millisecond)
		c.Close()
		wg.Wait()
		for _, err := range errs {
			total++
			if !errors.Is(err, stated.ErrClosed) {
				bad++
				example = err
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d commits in flight at Close did not fail with ErrClosed; e.g. %v (matches ErrUnavailable: %v)", bad, total, example, errors.Is(example, stated.ErrUnavailable))
	}
}

// hangOnce makes the first call of a method hang until its ctx ends, as a
// connection that went silent would.
type hangOnce struct{ unaryHung, streamHung atomic.Bool }

func (h *hangOnce) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if method == statedv1.State_Get_FullMethodName && h.unaryHung.CompareAndSwap(false, true) {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (h *hangOnce) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if method == statedv1.State_Scan_FullMethodName && h.streamHung.CompareAndSwap(false, true) {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return streamer(ctx, desc, cc, method, opts...)
}

// TestAScanWhoseFirstAttemptHangsIsRetriedAfterTheAttemptTimeout: reads
// retry like other calls (an attempt that runs out of WithAttemptTimeout
// is sent again), and the attempt timeout "does not apply to the stream
// of a Scan once it has started". A Scan whose first attempt hung, before
// its stream started, waited for the caller's whole ctx (forever without
// a deadline), where a Get was retried.
func TestAScanWhoseFirstAttemptHangsIsRetriedAfterTheAttemptTimeout(t *testing.T) {
	d := daemontest.Start(t)
	h := &hangOnce{}
	dctx, cancel0 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel0()
	c, err := stated.Dial(dctx, d.SocketPath(), stated.WithBlock(), stated.WithAttemptTimeout(200*time.Millisecond),
		stated.WithDialOptions(grpc.WithChainUnaryInterceptor(h.unary), grpc.WithChainStreamInterceptor(h.stream)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testCtx30s(t)
	if _, err := c.Txn().Put("n", []byte("k"), []byte("v")).Commit(ctx); err != nil {
		t.Fatal(err)
	}
	gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, found, err := c.Get(gctx, "n", []byte("k")); err != nil || !found {
		t.Fatalf("get whose first attempt hung: %v %v", found, err)
	}
	sctx, cancel2 := context.WithTimeout(ctx, 3*time.Second)
	defer cancel2()
	st := time.Now()
	n := 0
	for _, err := range c.Scan(sctx, stated.ScanQuery{Namespace: "n"}) {
		if err != nil {
			t.Errorf("scan whose first attempt hung failed after %v (attempt timeout 200ms): %v; DeadlineExceeded %v",
				time.Since(st).Round(time.Millisecond), err, errors.Is(err, context.DeadlineExceeded))
			break
		}
		n++
	}
	if n != 1 {
		t.Errorf("scan yielded %d entries", n)
	}
}

// TestDialWaitingForADaemonSaysWhatTheLastAttemptMet: WithWaitForDaemon's
// doc: "When ctx ends first, Dial fails with ErrUnavailable, saying what
// the last attempt met." The error said only that no daemon answered.
func TestDialWaitingForADaemonSaysWhatTheLastAttemptMet(t *testing.T) {
	dir, _ := os.MkdirTemp("", "rv")
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	_, err := stated.Dial(ctx, filepath.Join(dir, "none.sock"), stated.WithWaitForDaemon(200*time.Millisecond))
	t.Logf("dial: %v", err)
	if !errors.Is(err, stated.ErrUnavailable) {
		t.Fatalf("not ErrUnavailable: %v", err)
	}
	if !strings.Contains(err.Error(), "no such file or directory") {
		t.Errorf("the error does not say what the last attempt met (connect: no such file or directory): %v", err)
	}
}
