package stated

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/internal/commithook"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// calls counts a Client's commit calls by method, and the requests of its
// CommitStreams.
type calls struct {
	mu       sync.Mutex
	unary    map[string]int
	streams  int // CommitStreams opened
	requests int // requests sent on them
}

func newCalls() *calls { return &calls{unary: map[string]int{}} }

func (k *calls) options() Option {
	unary := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		k.mu.Lock()
		k.unary[method]++
		k.mu.Unlock()
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	stream := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if method == statedv1.State_CommitStream_FullMethodName {
			k.mu.Lock()
			k.streams++
			k.mu.Unlock()
		}
		return streamer(ctx, desc, cc, method, opts...)
	}
	counted := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		k.mu.Lock()
		k.requests++
		k.mu.Unlock()
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	return WithDialOptions(grpc.WithChainUnaryInterceptor(unary), grpc.WithChainStreamInterceptor(stream, commithook.Stream(counted)))
}

func (k *calls) String() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return fmt.Sprintf("Commit %d, CommitBatch %d, CommitStreams %d with %d requests",
		k.unary[statedv1.State_Commit_FullMethodName], k.unary[statedv1.State_CommitBatch_FullMethodName], k.streams, k.requests)
}

// dialCounted dials addr with opts, counting the Client's commit calls
// and streams; the Client is closed when the test ends.
func dialCounted(t *testing.T, ctx context.Context, addr string, opts ...Option) (*Client, *calls) {
	t.Helper()
	k := newCalls()
	c, err := Dial(ctx, addr, append([]Option{WithBlock(), k.options()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, k
}

// addConcurrently adds 1 to counter ns/n each times from each of
// goroutines goroutines, each add a commit of its own.
func addConcurrently(t *testing.T, ctx context.Context, c *Client, goroutines, each int) {
	t.Helper()
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				if _, err := c.Txn().CounterAdd("ns", []byte("n"), 1).Commit(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestCommitsGoOnOneCommitStream: a Client's small commits, alone or
// concurrent, go as the requests of one CommitStream, not as calls, and
// each applies once; a commit of more than 16 writes goes as its own
// Commit call.
func TestCommitsGoOnOneCommitStream(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, k := dialCounted(t, ctx, d.SocketPath())
	const goroutines, each = 32, 20
	addConcurrently(t, ctx, c, goroutines, each)
	big := c.Txn()
	for i := range 17 {
		big.Put("ns", fmt.Appendf(nil, "big/%d", i), []byte("v"))
	}
	if _, err := big.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := c.GetCounter(ctx, "ns", []byte("n"), WithConsistency(ConsistencyLinearizable))
	if err != nil || n != int64(goroutines*each) {
		t.Fatalf("counter %d, %v; want %d", n, err, goroutines*each)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	t.Logf("%d commits: %d requests", goroutines*each, k.requests)
	if k.streams != 1 || k.requests == 0 || k.requests > goroutines*each ||
		k.unary[statedv1.State_Commit_FullMethodName] != 1 || k.unary[statedv1.State_CommitBatch_FullMethodName] != 0 {
		t.Fatalf("Commit %d, CommitBatch %d, CommitStreams %d with %d requests; want the 17-write commit as the one Commit call, and the small commits on one stream",
			k.unary[statedv1.State_Commit_FullMethodName], k.unary[statedv1.State_CommitBatch_FullMethodName], k.streams, k.requests)
	}
}

// TestAStreamedCommitWhoseAnswerIsLostIsAppliedOnce: the answer of a
// request that applied is lost as its stream breaks. The Client sends the
// commit again on a new stream, where its session answers it as a
// duplicate of the first: the counter moves once.
func TestAStreamedCommitWhoseAnswerIsLostIsAppliedOnce(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var armed atomic.Bool
	var lost atomic.Int32
	lose := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if err == nil && armed.CompareAndSwap(true, false) {
			lost.Add(1)
			return status.Error(codes.Unavailable, "test: the stream broke before the answer came")
		}
		return err
	}
	c, k := dialCounted(t, ctx, d.SocketPath(), WithDialOptions(grpc.WithChainStreamInterceptor(commithook.Stream(lose))))
	if _, err := c.Txn().CounterAdd("ns", []byte("n"), 1).Commit(ctx); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	res, err := c.Txn().CounterAdd("ns", []byte("n"), 1).Commit(ctx)
	if err != nil {
		t.Fatalf("the commit whose answer was lost: %v", err)
	}
	if lost.Load() != 1 || !res.Duplicate {
		t.Fatalf("answers lost %d, the retry's result %+v; want one lost, and the retry answered as a duplicate", lost.Load(), res)
	}
	n, err := c.GetCounter(ctx, "ns", []byte("n"), WithConsistency(ConsistencyLinearizable))
	if err != nil || n != 2 {
		t.Fatalf("counter %d, %v; want 2 (the second add applied once)", n, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.streams != 2 {
		t.Fatalf("%d CommitStreams, want 2: the broken one and the one the retry went on", k.streams)
	}
}

// TestACommitAfterTheDaemonRestartedGoesOnANewStreamAtOnce: the Client's
// stream ends while it is idle (the daemon restarted). The next commit
// finds it ended before its request went out and sends it on a new
// stream: it succeeds at its first attempt, with retries off.
func TestACommitAfterTheDaemonRestartedGoesOnANewStreamAtOnce(t *testing.T) {
	t.Parallel()
	cfg := daemontest.Config(t, "node1")
	d1 := daemontest.Start(t, func(c *daemon.Config) { c.DataDir, c.SocketPath = cfg.DataDir, cfg.SocketPath })
	raftAddr := d1.Store().RaftAddr()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, k := dialCounted(t, ctx, cfg.SocketPath, WithoutRetries())
	if _, err := c.Txn().CounterAdd("ns", []byte("n"), 1).Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	d2 := daemontest.Start(t, func(c *daemon.Config) { c.DataDir, c.SocketPath, c.RaftAddr = cfg.DataDir, cfg.SocketPath, raftAddr })
	daemontest.WaitLeader(t, d2)
	// The Client connects again on its own; wait for that with reads,
	// which do not touch the stream.
	for {
		if _, err := c.GetCounter(ctx, "ns", []byte("n")); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the Client did not connect to the restarted daemon")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := c.Txn().CounterAdd("ns", []byte("n"), 1).Commit(ctx); err != nil {
		t.Fatalf("the first commit after the restart, retries off: %v (%s)", err, k)
	}
	n, err := c.GetCounter(ctx, "ns", []byte("n"), WithConsistency(ConsistencyLinearizable))
	if err != nil || n != 2 {
		t.Fatalf("counter %d, %v; want 2", n, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.streams != 2 {
		t.Fatalf("%d CommitStreams, want 2: one before the restart, one after", k.streams)
	}
}

// TestACommitStreamIsOpenedAgainWithTheLineageTheClientLearnt: a stream
// sends the Client's lineage once, when it opens. One opened before the
// Client knew its lineage (here by hand, with the lineage Dial's session
// open taught it held back) is not used once it does: the next commit
// goes on a new stream. Any change of the lineage does the same: with
// another cluster's lineage in its place, the next commit goes on a new
// stream, which the daemon refuses as another cluster's, where the old
// one would have carried it.
func TestACommitStreamIsOpenedAgainWithTheLineageTheClientLearnt(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, k := dialCounted(t, ctx, d.SocketPath(), WithoutRetries())
	// Dial opened the session and learnt the lineage: open the stream as
	// it would have been opened before that.
	lin := c.Lineage()
	c.lineage.v.Store(nil)
	if _, err := c.batch.openStream(); err != nil { // no call in flight: the test may
		t.Fatal(err)
	}
	c.lineage.v.Store(&lin)
	if _, err := c.Txn().CounterAdd("ns", []byte("n"), 1).Commit(ctx); err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	streams, requests := k.streams, k.requests
	k.mu.Unlock()
	if lin == "" || streams != 2 || requests != 1 || c.batch.stream == nil || c.batch.stream.lineage != lin {
		t.Fatalf("lineage %q, %d CommitStreams with %d requests; want the commit on a second stream, opened with the lineage", lin, streams, requests)
	}

	other := "another-cluster"
	c.lineage.v.Store(&other)
	if _, err := c.Txn().CounterAdd("ns", []byte("n"), 1).Commit(ctx); !errors.Is(err, ErrOtherCluster) {
		t.Fatalf("a commit under another lineage: %v; want ErrOtherCluster, from a stream opened with it", err)
	}
	c.lineage.v.Store(&lin)
	n, err := c.GetCounter(ctx, "ns", []byte("n"), WithConsistency(ConsistencyLinearizable))
	if err != nil || n != 1 {
		t.Fatalf("counter %d, %v; want 1: the refused commit applied nothing", n, err)
	}
}

// olderDaemon serves the State service without CommitStream, as a daemon
// of an older release does, passing the calls it has to a real daemon;
// once upgraded is set, it serves CommitStream too, as the daemon
// upgraded in place does.
type olderDaemon struct {
	statedv1.UnimplementedStateServer
	to       statedv1.StateClient
	upgraded *atomic.Bool
}

// CommitStream passes each request to a stream of the real daemon and its
// answer back, once upgraded; before, it is what an older daemon answers.
func (o olderDaemon) CommitStream(s grpc.BidiStreamingServer[statedv1.CommitStreamRequest, statedv1.CommitStreamResponse]) error {
	if o.upgraded == nil || !o.upgraded.Load() {
		return status.Error(codes.Unimplemented, "unknown method CommitStream for service stated.v1.State")
	}
	up, err := o.to.CommitStream(s.Context())
	if err != nil {
		return err
	}
	for {
		req, err := s.Recv()
		if err != nil {
			return nil // the Client closed its stream
		}
		if err := up.Send(req); err != nil {
			return err
		}
		resp, err := up.Recv()
		if err != nil {
			return err
		}
		if err := s.Send(resp); err != nil {
			return err
		}
	}
}

// serveOlder serves an olderDaemon in front of d on a socket of its own,
// whose path it returns.
func serveOlder(t *testing.T, d *daemon.Daemon, upgraded *atomic.Bool) string {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+d.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	srv := grpc.NewServer()
	statedv1.RegisterStateServer(srv, olderDaemon{to: statedv1.NewStateClient(conn), upgraded: upgraded})
	sock := filepath.Join(t.TempDir(), "older.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return sock
}

func (o olderDaemon) OpenSession(ctx context.Context, r *statedv1.OpenSessionRequest) (*statedv1.OpenSessionResponse, error) {
	return o.to.OpenSession(ctx, r)
}

func (o olderDaemon) Commit(ctx context.Context, r *statedv1.CommitRequest) (*statedv1.CommitResponse, error) {
	return o.to.Commit(ctx, r)
}

func (o olderDaemon) CommitBatch(ctx context.Context, r *statedv1.CommitBatchRequest) (*statedv1.CommitBatchResponse, error) {
	return o.to.CommitBatch(ctx, r)
}

func (o olderDaemon) Get(ctx context.Context, r *statedv1.GetRequest) (*statedv1.GetResponse, error) {
	return o.to.Get(ctx, r)
}

// TestTheClientFallsBackToCallsOnADaemonWithoutCommitStream: against a
// daemon of an older release, which answers CommitStream UNIMPLEMENTED,
// the Client tries a stream once, then sends its commits as Commit and
// CommitBatch calls; every commit applies once.
func TestTheClientFallsBackToCallsOnADaemonWithoutCommitStream(t *testing.T) {
	t.Parallel()
	sock := serveOlder(t, daemontest.Start(t), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, k := dialCounted(t, ctx, sock)
	const goroutines, each = 16, 10
	addConcurrently(t, ctx, c, goroutines, each)
	n, err := c.GetCounter(ctx, "ns", []byte("n"))
	if err != nil || n != int64(goroutines*each) {
		t.Fatalf("counter %d, %v; want %d", n, err, goroutines*each)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.streams != 1 || k.unary[statedv1.State_Commit_FullMethodName]+k.unary[statedv1.State_CommitBatch_FullMethodName] == 0 {
		t.Fatalf("Commit %d, CommitBatch %d, CommitStreams %d; want one stream tried, then calls",
			k.unary[statedv1.State_Commit_FullMethodName], k.unary[statedv1.State_CommitBatch_FullMethodName], k.streams)
	}
}

// TestTheClientTriesTheStreamAgainOnceItsDaemonServesIt: a Client whose
// daemon answered CommitStream Unimplemented sends calls, without trying
// a stream for each commit, until its retry interval (a minute; shorter
// here) has passed. The daemon is upgraded meanwhile: the next commit
// tries a stream, which it serves, and the commits from then on go on it.
func TestTheClientTriesTheStreamAgainOnceItsDaemonServesIt(t *testing.T) {
	t.Parallel()
	upgraded := new(atomic.Bool)
	sock := serveOlder(t, daemontest.Start(t), upgraded)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, k := dialCounted(t, ctx, sock)
	const retry = 500 * time.Millisecond
	c.batch.streamRetry = retry // before any commit: nothing else reads it yet
	const goroutines, each = 8, 10
	start := time.Now()
	addConcurrently(t, ctx, c, goroutines, each)
	took := time.Since(start)
	k.mu.Lock()
	streams, calls := k.streams, k.unary[statedv1.State_Commit_FullMethodName]+k.unary[statedv1.State_CommitBatch_FullMethodName]
	k.mu.Unlock()
	// One try, and one more per retry interval the commits took.
	if tries := 1 + int(took/retry); streams < 1 || streams > tries || calls == 0 {
		t.Fatalf("before the upgrade: %d CommitStreams tried in %v, %d calls; want at most %d tries, and calls", streams, took, calls, tries)
	}

	upgraded.Store(true)
	time.Sleep(retry + 100*time.Millisecond)
	addConcurrently(t, ctx, c, goroutines, each)
	n, err := c.GetCounter(ctx, "ns", []byte("n"))
	if err != nil || n != 2*goroutines*each {
		t.Fatalf("counter %d, %v; want %d", n, err, 2*goroutines*each)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	after := k.unary[statedv1.State_Commit_FullMethodName] + k.unary[statedv1.State_CommitBatch_FullMethodName]
	if k.streams != streams+1 || k.requests == 0 || after != calls {
		t.Fatalf("after the upgrade: %d CommitStreams (%d before), %d requests, %d calls (%d before); want one stream more, carrying every commit",
			k.streams, streams, k.requests, after, calls)
	}
}
