package kafka

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/daemon/recovery"
	"github.com/statedhq/stated/internal/commithook"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
	"github.com/statedhq/stated/uploader"
)

// lostAnswer is a unary client interceptor that, once armed, loses the
// answer of the first Commit attempt (commithook shows it the requests
// of the Client's CommitStream as calls): the attempt reaches the daemon and
// applies, then it is held until release is closed and fails as
// Unavailable, as a connection cut after the apply would.
type lostAnswer struct {
	armed   atomic.Bool
	once    sync.Once
	applied chan error // the held attempt's real outcome
	release chan struct{}
}

func (l *lostAnswer) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	hold := false
	if method == statedv1.State_Commit_FullMethodName && l.armed.Load() {
		l.once.Do(func() { hold = true })
	}
	if !hold {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	l.applied <- invoker(ctx, method, req, reply, cc, opts...)
	select {
	case <-l.release:
	case <-ctx.Done():
	}
	return status.Error(codes.Unavailable, "test: the answer was lost")
}

// TestAProcessorWhoseCommitIsRetriedThroughARestoreStopsWithErrClaimReleased
// (a review's finding): the processor's commit in flight when its node is
// lost applies, its answer is lost, and the node is restored from a
// checkpoint taken before it. The Client's retry reaches the restored
// cluster, which dropped the sessions: it is refused by its session
// before its claim is checked, and the Client reports an unknown outcome
// (stated.ErrSessionExpired). The restore released the processor's claim,
// so Run returns an error matching ErrClaimReleased (and wrapping the
// Client's), as for a commit fenced by its claim; before, it returned the
// ErrSessionExpired error alone. A processor started again counts every
// record once.
func TestAProcessorWhoseCommitIsRetriedThroughARestoreStopsWithErrClaimReleased(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	sockDir, err := os.MkdirTemp("", "stated")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "s.sock")
	withBucket := func(c *daemon.Config) {
		c.CheckpointURL, c.CheckpointInterval, c.CheckpointRetain, c.SocketPath = bucket, 0, 10, sock
	}
	d1 := daemontest.Start(t, withBucket)

	kc := newEvents(t, 1)
	produce := func(n int) {
		t.Helper()
		cl, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.DefaultProduceTopic("events"))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		recs := make([]*kgo.Record, n)
		for i := range recs {
			recs[i] = &kgo.Record{Value: []byte("e")}
		}
		for _, r := range cl.ProduceSync(ctx, recs...) {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
	}

	lost := &lostAnswer{applied: make(chan error, 1), release: make(chan struct{})}
	c, err := stated.Dial(ctx, "unix://"+sock, stated.WithBlock(), stated.WithAttemptTimeout(time.Minute),
		stated.WithDialOptions(grpc.WithUnaryInterceptor(lost.intercept), grpc.WithStreamInterceptor(commithook.Stream(lost.intercept))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	check, err := stated.Dial(ctx, "unix://"+sock, stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	counts := stated.NewCounter(c, "counts")
	cfg := Config{
		State: c, Group: "g", Topics: []string{"events"},
		KafkaOptions:        steadyKafkaOptions(kc),
		KafkaCommitInterval: -1,
		Handler: func(_ context.Context, txn *stated.Txn, r *kgo.Record) error {
			counts.In(txn).Add("n", 1)
			return nil
		},
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	ran := make(chan error, 1)
	go func() { ran <- p.Run(runCtx) }()

	offset := func() (int64, error) {
		g, err := check.GetGroup(ctx, "g", stated.WithConsistency(stated.ConsistencyLinearizable))
		if err != nil {
			return 0, err
		}
		for _, o := range g.Offsets {
			if o.Topic == "events" && o.Partition == 0 {
				return o.Offset, nil
			}
		}
		return 0, nil
	}
	waitOffset := func(want int64) {
		t.Helper()
		waitFor(t, fmt.Sprintf("the group's offset %d", want), func() (bool, error) {
			o, err := offset()
			return err == nil && o == want, nil
		})
	}

	produce(10)
	waitOffset(10)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := statedv1.NewCheckpointsClient(conn).Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true}); err != nil {
		t.Fatal(err)
	}
	lost.armed.Store(true)
	produce(10)
	select {
	case err := <-lost.applied:
		if err != nil {
			t.Fatalf("the held commit did not apply: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the processor's commit never reached stated")
	}
	waitOffset(20) // lost with the node: the checkpoint holds 10

	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := uploader.OpenBucket(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	up, err := uploader.New(uploader.Config{Bucket: b})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "restored")
	if _, err := recovery.Restore(ctx, recovery.RestoreOptions{Uploader: up, DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	daemontest.Start(t, withBucket, func(c *daemon.Config) { c.DataDir, c.NodeID = dir, "restored" })
	if o, err := offset(); err != nil || o != 10 {
		t.Fatalf("the restored offset is %d (%v), want the checkpoint's 10", o, err)
	}

	close(lost.release) // the Client retries the commit on the restored cluster
	select {
	case err := <-ran:
		if !errors.Is(err, ErrClaimReleased) || !errors.Is(err, stated.ErrSessionExpired) {
			t.Fatalf("the processor whose commit was retried through the restore: Run returned %v, want ErrClaimReleased wrapping stated.ErrSessionExpired", err)
		}
		t.Logf("Run returned: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("the processor whose commit was retried through the restore is still running a minute later")
	}
	if o, err := offset(); err != nil || o != 10 {
		t.Fatalf("the offset after the refused retry is %d (%v), want the restored 10", o, err)
	}
	p, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, p)
	waitOffset(20)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	n, err := stated.NewCounter(check, "counts").Get(ctx, "n", stated.WithConsistency(stated.ConsistencyLinearizable))
	if err != nil {
		t.Fatal(err)
	}
	if n != 20 {
		t.Errorf("20 records counted %d times", n)
	}
}
