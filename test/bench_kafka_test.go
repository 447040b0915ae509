package test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statedhq/stated/daemon/daemontest"
	stated "github.com/statedhq/stated/sdk/go"
	"github.com/statedhq/stated/sdk/go/kafka"
)

// The Kafka benchmarks consume b.N records (run them with a fixed count,
// e.g. -benchtime 200000x) from a 4-partition kfake topic, counting per
// key over 100 keys and committing once per poll. They report records/s
// from the first record handled to the last one committed, so the group
// join is not counted.

const benchKeys = 100

func benchTopic(b *testing.B) *kafkaEnv {
	k := newKafka(b, "bench", 4)
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.brokers...), kgo.DefaultProduceTopic(k.topic), kgo.ProducerLinger(0))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	for sent := 0; sent < b.N; {
		n := min(50_000, b.N-sent)
		recs := make([]*kgo.Record, n)
		for i := range recs {
			recs[i] = &kgo.Record{Key: fmt.Appendf(nil, "k%03d", (sent+i)%benchKeys), Value: make([]byte, 100)}
		}
		for _, r := range cl.ProduceSync(ctx, recs...) {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
			k.ends[r.Record.Partition] = max(k.ends[r.Record.Partition], r.Record.Offset+1)
		}
		sent += n
	}
	return k
}

// rate tracks records handled between the first one and the end.
type rate struct {
	first   atomic.Int64 // UnixNano of the first record
	handled atomic.Int64
}

func (r *rate) record() {
	if r.handled.Add(1) == 1 {
		r.first.Store(time.Now().UnixNano())
	}
}

func (r *rate) report(b *testing.B) {
	el := time.Since(time.Unix(0, r.first.Load()))
	b.ReportMetric(float64(b.N)/el.Seconds(), "records/s")
}

// BenchmarkKafkaProcessor runs sdk/go/kafka against a single stated node
// on its unix socket: each poll's counter adds and offsets commit in one
// stated transaction. per-record adds one mutation per record (Handler);
// per-key sums a poll's records per key first (BatchHandler), one
// mutation per key and poll.
func BenchmarkKafkaProcessor(b *testing.B) {
	b.Run("per-record", func(b *testing.B) {
		benchProcessor(b, func(counts *stated.Counter, r *rate) (kafka.Handler, kafka.BatchHandler) {
			return func(_ context.Context, txn *stated.Txn, rec *kgo.Record) error {
				r.record()
				counts.In(txn).Add(string(rec.Key), 1)
				return nil
			}, nil
		})
	})
	b.Run("per-key", func(b *testing.B) {
		benchProcessor(b, func(counts *stated.Counter, r *rate) (kafka.Handler, kafka.BatchHandler) {
			return nil, func(_ context.Context, txn *stated.Txn, recs []*kgo.Record) error {
				sums := map[string]int64{}
				for _, rec := range recs {
					r.record()
					sums[string(rec.Key)]++
				}
				for k, n := range sums {
					counts.In(txn).Add(k, n)
				}
				return nil
			}
		})
	})
}

func benchProcessor(b *testing.B, handlers func(*stated.Counter, *rate) (kafka.Handler, kafka.BatchHandler)) {
	k := benchTopic(b)
	d := daemontest.Start(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := stated.Dial(ctx, d.SocketPath(), stated.WithBlock())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var r rate
	h, bh := handlers(stated.NewCounter(c, "counts"), &r)
	p, err := kafka.New(kafka.Config{
		State: c, Group: "bench", Topics: []string{k.topic},
		KafkaOptions: []kgo.Opt{kgo.SeedBrokers(k.brokers...)},
		Handler:      h, BatchHandler: bh,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	pctx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- p.Run(pctx) }()
	for {
		if r.handled.Load() >= int64(b.N) {
			if done, err := k.drained(ctx, c, "bench"); err != nil {
				b.Fatal(err)
			} else if done {
				break
			}
		}
		select {
		case err := <-errc:
			b.Fatalf("processor stopped: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	r.report(b)
	b.StopTimer()
	stop()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkKafkaPlainFranzGo is the same consumer without stated: counts
// in a map in memory, offsets committed to the Kafka group after each
// poll (CommitUncommittedOffsets, synchronous).
func BenchmarkKafkaPlainFranzGo(b *testing.B) {
	k := benchTopic(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.brokers...), kgo.ConsumerGroup("plain"), kgo.ConsumeTopics(k.topic),
		kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll())
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	counts := map[string]int64{}
	var r rate
	b.ResetTimer()
	for r.handled.Load() < int64(b.N) {
		fetches := cl.PollRecords(ctx, 5000)
		if errs := fetches.Errors(); len(errs) > 0 {
			b.Fatal(errs[0].Err)
		}
		fetches.EachRecord(func(rec *kgo.Record) {
			r.record()
			counts[string(rec.Key)]++
		})
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			b.Fatal(err)
		}
		cl.AllowRebalance()
	}
	r.report(b)
	b.StopTimer()
	var total int64
	for _, n := range counts {
		total += n
	}
	if total != int64(b.N) {
		b.Fatalf("counted %d records, want %d", total, b.N)
	}
}
