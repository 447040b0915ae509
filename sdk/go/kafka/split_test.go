package kafka

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statedhq/stated/daemon/daemontest"
	stated "github.com/statedhq/stated/sdk/go"
)

// TestACommitWhoseAnswerIsTooLargeIsNotCommittedAgainInHalves: a batch of
// one record from each of two partitions closes 2,000 windows, so the
// answer to its commit (the emissions) is larger than the client's
// message size while the commit itself is small. The commit applies; the
// client gets ResourceExhausted for the answer. The processor must not
// take that for a commit refused before it applied: committing the batch
// again in halves (each half ending where the applied batch ended, so its
// offsets are accepted) would count both records twice.
func TestACommitWhoseAnswerIsTooLargeIsNotCommittedAgainInHalves(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := daemontest.Start(t)
	kc := newEvents(t, 2)
	big, err := stated.Dial(ctx, "unix://"+d.SocketPath(), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	err = big.DefineWindows(ctx, stated.WindowSpec{
		Namespace: "w", Shape: stated.Tumbling, Size: windowSize, IdleTimeout: time.Hour,
		Aggregate: stated.Count, Emit: stated.EmitFinal, Late: stated.LateDrop,
	})
	if err != nil {
		t.Fatal(err)
	}
	// 2,000 open windows, both partitions sources of the namespace.
	txn := big.Txn()
	for i := range 2000 {
		for part := range 2 {
			txn.AddWindow("w", fmt.Appendf(nil, "a-rather-long-key-%06d", i), windowBase, stated.NoValue(), stated.FromSource(fmt.Sprintf("events/%d", part)))
		}
	}
	if _, err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.DefaultProduceTopic("events"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	late := windowBase.Add(time.Hour)
	for _, r := range prod.ProduceSync(ctx,
		&kgo.Record{Key: []byte("x"), Partition: 0, Timestamp: late},
		&kgo.Record{Key: []byte("x"), Partition: 1, Timestamp: late}) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}

	c, err := stated.Dial(ctx, "unix://"+d.SocketPath(), stated.WithBlock(), stated.WithMaxMessageSize(32<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var mu sync.Mutex
	var runs []string
	p, err := New(Config{
		State: c, Group: "g", Topics: []string{"events"},
		KafkaOptions:        testKafkaOptions(kc),
		KafkaCommitInterval: -1,
		BatchHandler: func(_ context.Context, txn *stated.Txn, recs []*kgo.Record) error {
			mu.Lock()
			runs = append(runs, fmt.Sprint(len(recs)))
			mu.Unlock()
			for _, r := range recs {
				txn.CounterAdd("counts", []byte("n"), 1)
				txn.AddWindow("w", r.Key, r.Timestamp, stated.NoValue(), stated.FromSource(SourceOf(r)))
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, p)
	waitFor(t, "both partitions' offsets", func() (bool, error) {
		g, err := big.GetGroup(ctx, "g")
		if err != nil {
			return false, err
		}
		n := 0
		for _, o := range g.Offsets {
			if o.Offset == 1 {
				n++
			}
		}
		return n == 2, nil
	})
	time.Sleep(500 * time.Millisecond) // let any commit again land
	stopErr := stop()
	mu.Lock()
	t.Logf("handler runs (records each): %v; Run returned %v", runs, stopErr)
	mu.Unlock()
	n, err := stated.NewCounter(big, "counts").Get(ctx, "n")
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("2 records counted %d times", n)
	}
	if len(runs) == 0 || runs[0] != "2" {
		t.Errorf("the first batch had %v records, want both, one from each partition: the test did not close the windows with one commit", runs)
	}
}

// TestABatchTooLargeToSendIsStillCommittedInHalves: a commit refused for
// its own size (it never reached the daemon) is still split and each
// record counted once, with the check of whether it applied in between.
func TestABatchTooLargeToSendIsStillCommittedInHalves(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := daemontest.Start(t)
	kc := newEvents(t, 2)
	prod, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.DefaultProduceTopic("events"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	const n = 200
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Key: fmt.Appendf(nil, "k%03d", i), Value: make([]byte, 1024)}
	}
	for _, r := range prod.ProduceSync(ctx, recs...) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	c, err := stated.Dial(ctx, "unix://"+d.SocketPath(), stated.WithBlock(), stated.WithMaxMessageSize(32<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := New(Config{
		State: c, Group: "g", Topics: []string{"events"},
		KafkaOptions:        testKafkaOptions(kc),
		KafkaCommitInterval: -1,
		Handler: func(_ context.Context, txn *stated.Txn, r *kgo.Record) error {
			txn.CounterAdd("counts", []byte("n"), 1)
			txn.Put("values", r.Key, r.Value)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, p)
	check, err := stated.Dial(ctx, "unix://"+d.SocketPath(), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	waitFor(t, "every record's offset", func() (bool, error) {
		g, err := check.GetGroup(ctx, "g")
		if err != nil {
			return false, err
		}
		var sum int64
		for _, o := range g.Offsets {
			sum += o.Offset
		}
		return sum == n, nil
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	got, err := stated.NewCounter(check, "counts").Get(ctx, "n")
	if err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Errorf("%d records counted %d times", n, got)
	}
	if !p.splitLogged {
		t.Error("no batch was split: the test did not commit a batch too large to send")
	}
}
