package kafka

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/internal/commithook"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

// TestAProcessorWhoseRetryIsRefusedForTheDiskCountsEveryRecordOnce: the
// processor's commit applies on node1 and its answer is lost; leadership
// moves to node2, whose disk is below --min-free-disk. The SDK's retry is
// refused for the disk (before the session's dedup could answer it as a
// duplicate). The SDK used to return ErrDiskFull, which the processor
// took as "nothing applied": it rewound and committed the batch again in
// a new Txn once leadership was back on node1, and its records counted
// twice (80 of 40, a review). The SDK now sends such a retry again until
// its outcome is known, and every record counts once.
func TestAProcessorWhoseRetryIsRefusedForTheDiskCountsEveryRecordOnce(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var n atomic.Int32
	nodes := daemontest.StartCluster(t, 2, func(c *daemon.Config) {
		if n.Add(1) == 2 {
			c.MinFreeDiskBytes = 1 << 50
		}
	})
	node1, node2 := nodes[0], nodes[1]
	moveTo := func(to *daemon.Daemon) {
		if err := daemontest.MoveLeadership(ctx, t, nodes, to); err != nil {
			t.Error(err)
		}
	}
	var mu sync.Mutex
	lost, refusals := false, 0
	hook := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if method != statedv1.State_Commit_FullMethodName && method != statedv1.State_CommitBatch_FullMethodName {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if !lost && err == nil && len(req.(*statedv1.CommitRequest).GetOffsets()) > 0 {
			lost = true
			moveTo(node2)
			return status.Error(codes.Unavailable, "test: the answer of an applied commit was lost")
		}
		if lost && status.Code(err) == codes.ResourceExhausted {
			refusals++
			// From the second refusal on, leadership goes back to node1:
			// again if an election under load put node2 back in the lead
			// (on a CI race pass four elections in 20 s left node2
			// leading, and nothing was counted).
			if refusals >= 2 && node2.Store().IsLeader() {
				moveTo(node1)
			}
		}
		return err
	}
	c, err := stated.Dial(ctx, node1.SocketPath(), stated.WithBlock(), stated.WithDialOptions(grpc.WithChainUnaryInterceptor(hook), grpc.WithChainStreamInterceptor(commithook.Stream(hook))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	const records = 40
	kc := newEvents(t, 1)
	cl, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.DefaultProduceTopic("events"))
	if err != nil {
		t.Fatal(err)
	}
	recs := make([]*kgo.Record, records)
	for i := range recs {
		recs[i] = &kgo.Record{Value: []byte("e")}
	}
	for _, r := range cl.ProduceSync(ctx, recs...) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	cl.Close()

	counts := stated.NewCounter(c, "counts")
	p, err := New(Config{
		State: c, Group: "g", Topics: []string{"events"},
		KafkaOptions: testKafkaOptions(kc), KafkaCommitInterval: -1,
		Handler: func(_ context.Context, txn *stated.Txn, r *kgo.Record) error {
			counts.In(txn).Add("n", 1)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	ran := make(chan error, 1)
	go func() { ran <- p.Run(runCtx) }()
	var got int64
	deadline := time.Now().Add(40 * time.Second)
	for time.Now().Before(deadline) {
		got, _ = counts.Get(ctx, "n", stated.WithConsistency(stated.ConsistencyLinearizable))
		mu.Lock()
		done := refusals >= 2
		mu.Unlock()
		if done && got >= records {
			time.Sleep(2 * time.Second) // let any further commit land
			got, _ = counts.Get(ctx, "n", stated.WithConsistency(stated.ConsistencyLinearizable))
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopRun()
	<-ran
	mu.Lock()
	t.Logf("lost %v, disk-full refusals %d, counted %d of %d records", lost, refusals, got, records)
	mu.Unlock()
	if got != records {
		t.Errorf("counted %d, want %d: a batch whose first attempt applied was committed again after ErrDiskFull", got, records)
	}
}
