package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statedhq/stated/daemon/daemontest"
	stated "github.com/statedhq/stated/sdk/go"
)

// TestTheProcessorCountsNoRecordOfAnAbortedTransaction: a topic written by
// a transactional producer holds the records of an aborted transaction
// beside those of committed ones. Exactly once means the aborted ones
// count zero times: the processor reads committed records only unless
// its KafkaOptions ask otherwise.
func TestTheProcessorCountsNoRecordOfAnAbortedTransaction(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := daemontest.Start(t)
	kc := newEvents(t, 1)
	prod, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.DefaultProduceTopic("events"), kgo.TransactionalID("producer"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	transaction := func(key string, n int, commit kgo.TransactionEndTry) {
		t.Helper()
		if err := prod.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for range n {
			if err := prod.ProduceSync(ctx, &kgo.Record{Key: []byte(key), Value: []byte("v")}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := prod.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
	}
	transaction("committed", 3, kgo.TryCommit)
	transaction("aborted", 4, kgo.TryAbort)
	transaction("committed", 2, kgo.TryCommit)

	c, err := stated.Dial(ctx, "unix://"+d.SocketPath(), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	counts := stated.NewCounter(c, "counts")
	p, err := New(Config{
		State: c, Group: "g", Topics: []string{"events"},
		KafkaOptions:        testKafkaOptions(kc),
		KafkaCommitInterval: -1,
		Handler: func(_ context.Context, txn *stated.Txn, r *kgo.Record) error {
			counts.In(txn).Add(string(r.Key), 1)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, p)
	// The topic's end is past the last commit marker: wait until the
	// processor's stored offset reaches it.
	waitFor(t, "the committed records counted", func() (bool, error) {
		n, err := counts.Get(ctx, "committed", stated.WithConsistency(stated.ConsistencyLinearizable))
		return n == 5, err
	})
	// Give an aborted record every chance to be counted after the last
	// committed one: the processor has polled past the whole topic.
	g, err := c.GetGroup(ctx, "g", stated.WithConsistency(stated.ConsistencyLinearizable))
	if err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n, err := counts.Get(ctx, "aborted", stated.WithConsistency(stated.ConsistencyLinearizable)); err != nil || n != 0 {
		t.Fatalf("records of the aborted transaction counted %d times (%v), want 0; stored offsets %+v", n, err, g.Offsets)
	}
	if n, err := counts.Get(ctx, "committed", stated.WithConsistency(stated.ConsistencyLinearizable)); err != nil || n != 5 {
		t.Fatalf("records of the committed transactions counted %d times (%v), want 5", n, err)
	}
}

// newEvents starts an in-process Kafka broker (kfake) with a topic
// "events" of the given partitions, for the life of the test.
func newEvents(t *testing.T, partitions int32) *kfake.Cluster {
	t.Helper()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, "events"), kfake.GroupMinSessionTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	return kc
}

// testKafkaOptions are a processor's client options for kc, with short
// group timeouts.
func testKafkaOptions(kc *kfake.Cluster) []kgo.Opt {
	return []kgo.Opt{kgo.SeedBrokers(kc.ListenAddrs()...), kgo.SessionTimeout(time.Second),
		kgo.HeartbeatInterval(200 * time.Millisecond), kgo.RebalanceTimeout(3 * time.Second)}
}
