package kafka

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statedhq/stated/daemon/daemontest"
	stated "github.com/statedhq/stated/sdk/go"
)

// TestStartingAtTheEndLosesNoRecordWhenAPartitionMovesBeforeItsFirstCommit:
// a group that starts at the end of its partitions (StartOffset AtEnd)
// runs without interruption: A owns both partitions, B joins. Records
// produced to partition 1 while A owns it, but that A had not processed
// (its handler failing for a while) when Kafka moved the partition to B,
// were never processed: A had stored no offset for partition 1, so B
// claimed it without one and started at the end again, past them. The
// end A found is now recorded in stated when A claims the partition.
func TestStartingAtTheEndLosesNoRecordWhenAPartitionMovesBeforeItsFirstCommit(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d := daemontest.Start(t)
	kc := newEvents(t, 2)
	pcl, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.DefaultProduceTopic("events"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer pcl.Close()
	produce := func(part int32, n int) {
		t.Helper()
		for range n {
			if err := pcl.ProduceSync(ctx, &kgo.Record{Partition: part, Value: []byte("e")}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	dial := func() *stated.Client {
		c, err := stated.Dial(ctx, "unix://"+d.SocketPath(), stated.WithBlock())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	check := dial()
	atEnd := kgo.NewOffset().AtEnd()
	var failP1 atomic.Bool
	cfg := func(c *stated.Client, fail *atomic.Bool) Config {
		return Config{
			State: c, Group: "g", Topics: []string{"events"},
			KafkaOptions: testKafkaOptions(kc),
			StartOffset:  &atEnd,
			RetryBackoff: 2 * time.Second,
			Handler: func(_ context.Context, txn *stated.Txn, r *kgo.Record) error {
				if fail != nil && r.Partition == 1 && fail.Load() {
					return fmt.Errorf("transient failure on partition 1")
				}
				txn.CounterAdd("counts", fmt.Appendf(nil, "p%d", r.Partition), 1)
				return nil
			},
		}
	}
	offsets := func() map[int32]int64 {
		offs, err := check.GetOffsets(ctx, "g", stated.WithConsistency(stated.ConsistencyLinearizable))
		if err != nil {
			t.Fatal(err)
		}
		m := map[int32]int64{}
		for _, o := range offs {
			m[o.Partition] = o.Offset
		}
		return m
	}

	pa, err := New(cfg(dial(), &failP1))
	if err != nil {
		t.Fatal(err)
	}
	stopA := run(t, pa)
	defer stopA()
	waitFor(t, "A owning both partitions", func() (bool, error) { return pa.Stats().Owned == 2, nil })
	// The group is positioned: a first record on partition 0 is processed.
	time.Sleep(time.Second)
	produce(0, 1)
	waitFor(t, "partition 0's first record committed", func() (bool, error) { return offsets()[0] == 1, nil })

	// Partition 1 gets its first records since the group started; A's
	// handler fails on them for a while (a transient error), and B joins.
	failP1.Store(true)
	produce(1, 3)
	pb, err := New(cfg(dial(), nil))
	if err != nil {
		t.Fatal(err)
	}
	stopB := run(t, pb)
	defer stopB()
	waitFor(t, "B owning a partition", func() (bool, error) { return pb.Stats().Owned == 1 && pa.Stats().Owned == 1, nil })
	failP1.Store(false)
	produce(0, 1)
	produce(1, 1)
	time.Sleep(4 * time.Second)
	got := counters(ctx, t, check, "counts")
	g, err := check.GetGroup(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("offsets %v, counts %v, claims %+v, A %s B %s", offsets(), got, g.Claims, pa.cfg.State.ClientID(), pb.cfg.State.ClientID())
	for _, cl := range g.Claims {
		if cl.Partition == 1 && cl.Owner != pb.cfg.State.ClientID() {
			t.Skipf("precondition: Kafka moved partition 0, not 1, to B (claims %+v)", g.Claims)
		}
	}
	if got["p1"] != 4 {
		t.Fatalf("partition 1: %d of the 4 records produced while the group ran were processed (offsets in stated %v)", got["p1"], offsets())
	}
}
