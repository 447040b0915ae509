package kafka

// The processor at Kafka's edges (from a review): partitions added while
// it runs, transactions, a topic deleted and recreated, a log start moved
// past stated's offset, and a rebalance while a slow handler's batch is
// in flight. Every loop is bounded in count and time.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	stated "github.com/statedhq/stated/sdk/go"
)

// edgeEnv is a stated node, a kfake broker and a checking client.
type edgeEnv struct {
	t     *testing.T
	ctx   context.Context
	d     *daemon.Daemon
	kc    *kfake.Cluster
	check *stated.Client
	adm   *kadm.Client
}

func newEdgeEnv(t *testing.T, ctx context.Context, partitions int32) *edgeEnv {
	t.Helper()
	e := &edgeEnv{t: t, ctx: ctx, d: daemontest.Start(t), kc: newEvents(t, partitions)}
	e.check = e.dial()
	acl, err := kgo.NewClient(kgo.SeedBrokers(e.kc.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(acl.Close)
	e.adm = kadm.NewClient(acl)
	return e
}

func (e *edgeEnv) dial() *stated.Client {
	e.t.Helper()
	c, err := stated.Dial(e.ctx, "unix://"+e.d.SocketPath(), stated.WithBlock())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// produce writes n records to topic/part with a fresh client (so that it
// sees partitions added and topics recreated since the last call).
func (e *edgeEnv) produce(topic string, part int32, n int) {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.kc.ListenAddrs()...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Partition: part, Value: []byte("e")}
	}
	for _, r := range cl.ProduceSync(e.ctx, recs...) {
		if r.Err != nil {
			e.t.Fatalf("produce to %s/%d: %v", topic, part, r.Err)
		}
	}
}

// ends returns the log end offset of each partition of topic.
func (e *edgeEnv) ends(topic string) map[int32]int64 {
	e.t.Helper()
	l, err := e.adm.ListEndOffsets(e.ctx, topic)
	if err == nil {
		err = l.Error()
	}
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[int32]int64{}
	l.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

func (e *edgeEnv) offsets(group string) map[int32]int64 {
	e.t.Helper()
	offs, err := e.check.GetOffsets(e.ctx, group, stated.WithConsistency(stated.ConsistencyLinearizable))
	if err != nil {
		e.t.Fatal(err)
	}
	m := map[int32]int64{}
	for _, o := range offs {
		m[o.Partition] = o.Offset
	}
	return m
}

// counts returns the per-partition counters ("p0", "p1", ...).
func (e *edgeEnv) counts() map[string]int64 { return counters(e.ctx, e.t, e.check, "counts") }

// waitCond polls cond every 50 ms for at most d; it reports whether cond
// held.
func waitCond(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// edgeLog keeps the processor's log lines as text.
type edgeLog struct{ b syncBuffer }

func (l *edgeLog) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(&l.b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lines returns the lines at WARN or above, or containing any of words.
func (l *edgeLog) lines(words ...string) []string {
	var out []string
	for _, ln := range strings.Split(l.b.String(), "\n") {
		if strings.Contains(ln, "level=WARN") || strings.Contains(ln, "level=ERROR") {
			out = append(out, ln)
			continue
		}
		for _, w := range words {
			if w != "" && strings.Contains(ln, w) {
				out = append(out, ln)
				break
			}
		}
	}
	return out
}

// countingConfig counts each record under "p<partition>" in "counts".
func (e *edgeEnv) countingConfig(c *stated.Client, topic string, log *edgeLog, extra ...kgo.Opt) Config {
	opts := append(testKafkaOptions(e.kc), kgo.MetadataMinAge(100*time.Millisecond), kgo.MetadataMaxAge(time.Second))
	opts = append(opts, extra...)
	cfg := Config{
		State: c, Group: "g", Topics: []string{topic},
		KafkaOptions:        opts,
		KafkaCommitInterval: -1,
		WaitLogInterval:     2 * time.Second,
		Handler: func(_ context.Context, txn *stated.Txn, r *kgo.Record) error {
			txn.CounterAdd("counts", fmt.Appendf(nil, "p%d", r.Partition), 1)
			return nil
		},
	}
	if log != nil {
		cfg.Logger = log.logger()
	}
	return cfg
}

// runErr runs p; the returned channel gets Run's error when it returns,
// and stop (also run at the test's end) returns it too, whether or not the
// channel was read.
func runErr(t *testing.T, p *Processor) (stop func() error, done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{})
	errc := make(chan error, 1)
	var runErr error
	go func() {
		runErr = p.Run(ctx)
		close(finished)
		errc <- runErr
	}()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case <-finished:
				err = runErr
			case <-time.After(30 * time.Second):
				err = errors.New("Run did not return within 30s of its context's end")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop, errc
}

// 1a. Partitions added while a processor runs (StartOffset default: the
// earliest offset): every record of the new partitions, including those
// produced before the group noticed them, is counted exactly once.
func TestPartitionsAddedWhileRunningAreCountedOnceFromTheirStart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEdgeEnv(t, ctx, 2)
	e.produce("events", 0, 10)
	e.produce("events", 1, 10)
	p, err := New(e.countingConfig(e.dial(), "events", nil))
	if err != nil {
		t.Fatal(err)
	}
	run(t, p)
	waitFor(t, "the first 20 records counted", func() (bool, error) {
		c := e.counts()
		return c["p0"] == 10 && c["p1"] == 10, nil
	})
	if _, err := e.adm.CreatePartitions(ctx, 2, "events"); err != nil {
		t.Fatal(err)
	}
	added := time.Now()
	e.produce("events", 2, 7)
	e.produce("events", 3, 5)
	waitFor(t, "the added partitions' records counted", func() (bool, error) {
		c := e.counts()
		return c["p2"] >= 7 && c["p3"] >= 5, nil
	})
	t.Logf("added partitions picked up %s after CreatePartitions (MetadataMaxAge 1s)", time.Since(added).Round(time.Millisecond))
	for part := int32(0); part < 4; part++ {
		e.produce("events", part, 3)
	}
	ends := e.ends("events")
	waitFor(t, "stated's offsets at the end of every partition", func() (bool, error) {
		o := e.offsets("g")
		for part, end := range ends {
			if o[part] != end {
				return false, nil
			}
		}
		return true, nil
	})
	time.Sleep(time.Second)
	want := map[string]int64{"p0": 13, "p1": 13, "p2": 10, "p3": 8}
	if got := e.counts(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("counts %v, want %v (stated offsets %v, ends %v)", got, want, e.offsets("g"), ends)
	}
}

// 2. A transactional producer writes while the processor runs: an open
// transaction's records wait, an aborted one's never count, a committed
// one's count once.
func TestTransactionsAbortedAndCommittedWhileRunningCountOnce(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEdgeEnv(t, ctx, 2)
	c := e.dial()
	counts := stated.NewCounter(c, "tx")
	p, err := New(Config{
		State: c, Group: "g", Topics: []string{"events"},
		KafkaOptions: testKafkaOptions(e.kc), KafkaCommitInterval: -1,
		Handler: func(_ context.Context, txn *stated.Txn, r *kgo.Record) error {
			counts.In(txn).Add(string(r.Key), 1)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	run(t, p)
	waitFor(t, "the processor owning both partitions", func() (bool, error) { return p.Stats().Owned == 2, nil })
	prod, err := kgo.NewClient(kgo.SeedBrokers(e.kc.ListenAddrs()...), kgo.DefaultProduceTopic("events"),
		kgo.TransactionalID("edge-producer"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	get := func(k string) int64 {
		n, err := counts.Get(ctx, k, stated.WithConsistency(stated.ConsistencyLinearizable))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	txnProduce := func(key string, perPart int) {
		for part := int32(0); part < 2; part++ {
			for range perPart {
				if err := prod.ProduceSync(ctx, &kgo.Record{Key: []byte(key), Partition: part, Value: []byte("v")}).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for round := range 3 {
		if err := prod.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		txnProduce("aborted", 4)
		time.Sleep(500 * time.Millisecond)
		if n := get("aborted"); n != 0 {
			t.Fatalf("round %d: records of an open transaction counted %d times before its end", round, n)
		}
		if err := prod.EndTransaction(ctx, kgo.TryAbort); err != nil {
			t.Fatal(err)
		}
		if err := prod.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		txnProduce("committed", 3)
		time.Sleep(500 * time.Millisecond)
		if n := get("committed"); n != int64(round*6) {
			t.Fatalf("round %d: committed count %d before the transaction's commit, want %d", round, n, round*6)
		}
		if err := prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
		want := int64((round + 1) * 6)
		waitFor(t, "the committed transaction counted", func() (bool, error) { return get("committed") == want, nil })
	}
	time.Sleep(time.Second)
	if n := get("aborted"); n != 0 {
		t.Fatalf("aborted records counted %d times", n)
	}
	if n := get("committed"); n != 18 {
		t.Fatalf("committed records counted %d times, want 18", n)
	}
	// What lag tools and the recovery report see: stated's offset stops
	// at the last committed record + 1, the commit marker after it is
	// never "processed".
	t.Logf("stated offsets %v, log ends %v (the difference is the last transaction marker)", e.offsets("g"), e.ends("events"))
}

// 3a. The topic is deleted and recreated (same name, fewer records than
// stated's offset) while the processor runs. franz-go does not follow a
// recreated topic's new id: its fetches fail with UNKNOWN_TOPIC_ID for
// good. The processor used to poll again at once, forever, logging each
// error (over 100,000 lines in 20 s) and reporting no wait; now it backs
// off, logs the error at most every 5 s, shows the wait in Stats, and
// after 10 s stops Run with ErrTopicRecreated naming the partition.
func TestATopicRecreatedWhileRunningStopsRunWithErrTopicRecreated(t *testing.T) {
	t.Parallel() // mostly waits: for Kafka's metadata, and for the processor to stop
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEdgeEnv(t, ctx, 1)
	e.produce("events", 0, 20)
	var log edgeLog
	p, err := New(e.countingConfig(e.dial(), "events", &log))
	if err != nil {
		t.Fatal(err)
	}
	stop, done := runErr(t, p)
	waitFor(t, "the first 20 records counted", func() (bool, error) { return e.counts()["p0"] == 20, nil })
	if _, err := e.adm.DeleteTopics(ctx, "events"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // past a metadata refresh of the group
	if _, err := e.adm.CreateTopic(ctx, 1, 1, nil, "events"); err != nil {
		t.Fatal(err)
	}
	recreated := time.Now()
	e.produce("events", 0, 5)
	sawWait := false
	var runErr error
	ended := waitCond(40*time.Second, func() bool {
		for _, w := range p.Stats().Waiting {
			sawWait = sawWait || w.Kind == WaitKafkaFetch && strings.Contains(w.Detail, "UNKNOWN_TOPIC_ID")
		}
		select {
		case runErr = <-done:
			return true
		default:
			return false
		}
	})
	if !ended {
		stop()
		t.Fatalf("Run still runs 40 s after its topic was deleted and recreated (count %d); its log:\n%s", e.counts()["p0"], strings.Join(log.lines("events"), "\n"))
	}
	t.Logf("Run returned after %s: %v", time.Since(recreated).Round(time.Millisecond), runErr)
	if !errors.Is(runErr, ErrTopicRecreated) || !strings.Contains(runErr.Error(), `topic "events" partition 0`) {
		t.Fatalf("Run returned %v; want ErrTopicRecreated naming topic events partition 0", runErr)
	}
	if !sawWait {
		t.Errorf("Stats never showed a %s wait naming UNKNOWN_TOPIC_ID while the fetches failed", WaitKafkaFetch)
	}
	if n := len(log.lines("events")); n > 30 {
		t.Errorf("%d log lines at WARN or naming the topic in the ~10 s before Run stopped; want the repeated fetch error logged at most every 5 s", n)
	}
	if got := e.counts()["p0"]; got != 20 {
		t.Errorf("count %d after the topic was recreated, want 20: no record of the new topic is processed from the old topic's offsets", got)
	}
}

// 3b. The topic is deleted and recreated while no processor runs; stated
// holds offset 20, the new topic's log ends at 5. A processor started
// then used to consume from offset 20 and skip the new topic's first 20
// records without a word; now Run stops with ErrOffsetPastLogEnd naming
// the partition, stated's offset and the end, and processes nothing.
func TestATopicRecreatedBehindStatedsOffsetStopsRunWithErrOffsetPastLogEnd(t *testing.T) {
	t.Parallel() // mostly waits: for Kafka's metadata, and for the processor to stop
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEdgeEnv(t, ctx, 1)
	e.produce("events", 0, 20)
	p, err := New(e.countingConfig(e.dial(), "events", nil))
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, p)
	waitFor(t, "the first 20 records counted", func() (bool, error) { return e.counts()["p0"] == 20, nil })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.adm.DeleteTopics(ctx, "events"); err != nil {
		t.Fatal(err)
	}
	if !waitCond(10*time.Second, func() bool {
		_, err := e.adm.CreateTopic(ctx, 1, 1, nil, "events")
		return err == nil
	}) {
		t.Fatal("could not create the topic again within 10s")
	}
	e.produce("events", 0, 5)

	var log edgeLog
	p2, err := New(e.countingConfig(e.dial(), "events", &log))
	if err != nil {
		t.Fatal(err)
	}
	_, done := runErr(t, p2)
	var runErr2 error
	select {
	case runErr2 = <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("Run still runs 30 s after it claimed a partition whose end (5) is below stated's offset (20); count %d; its log:\n%s", e.counts()["p0"], strings.Join(log.lines("events"), "\n"))
	}
	if !errors.Is(runErr2, ErrOffsetPastLogEnd) || !strings.Contains(runErr2.Error(), `topic "events" partition 0: stated holds offset 20, the partition ends at 5`) {
		t.Fatalf("Run returned %v; want ErrOffsetPastLogEnd naming events/0, stated's offset 20 and the end 5", runErr2)
	}
	if got := e.counts()["p0"]; got != 20 {
		t.Fatalf("count %d, want 20: the processor processed records of the recreated topic from the old topic's offset", got)
	}
	if o := e.offsets("g")[0]; o != 20 {
		t.Fatalf("stated's offset %d after the refusal, want 20 (unchanged)", o)
	}
}

// 3c. Records the processor had not processed yet are deleted
// (DeleteRecords, as retention does) past stated's offset while it is
// down. It can only resume at the new log start; the records in between
// are lost. It used to say nothing; now it warns, naming the partition
// and how many, and counts them in Stats().Lost.
func TestRecordsDeletedBeforeTheyWereProcessedAreWarnedAndCountedLost(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEdgeEnv(t, ctx, 1)
	e.produce("events", 0, 10)
	p, err := New(e.countingConfig(e.dial(), "events", nil))
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, p)
	waitFor(t, "the first 10 records counted", func() (bool, error) { return e.counts()["p0"] == 10, nil })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	e.produce("events", 0, 40) // offsets 10..49
	del := kadm.Offsets{}
	del.AddOffset("events", 0, 40, -1)
	r, err := e.adm.DeleteRecords(ctx, del)
	if err == nil {
		err = r.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	var log edgeLog
	p2, err := New(e.countingConfig(e.dial(), "events", &log))
	if err != nil {
		t.Fatal(err)
	}
	stop2, _ := runErr(t, p2)
	waitFor(t, "stated's offset at the log end", func() (bool, error) { return e.offsets("g")[0] == 50, nil })
	time.Sleep(500 * time.Millisecond)
	if lost := p2.Stats().Lost; lost != 30 {
		t.Errorf("Stats().Lost = %d, want the 30 records Kafka deleted before they were processed", lost)
	}
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	got := e.counts()["p0"]
	lines := log.lines("events")
	for i, ln := range lines {
		if i < 15 {
			t.Logf("log: %s", ln)
		}
	}
	t.Logf("count %d (10 before, 10 of offsets 40..49 after; offsets 10..39 deleted before processing)", got)
	if got != 20 {
		t.Fatalf("count %d, want 20", got)
	}
	reported := false
	for _, ln := range lines {
		if strings.Contains(ln, "level=WARN") && strings.Contains(ln, "events") && strings.Contains(ln, "partition=0") && strings.Contains(ln, "lost=30") {
			reported = true
		}
	}
	if !reported {
		t.Fatalf("the processor skipped 30 records of events/0 (offsets 10..39, deleted before it processed them) without a warning naming the partition; %d log lines at WARN or naming the topic", len(lines))
	}
}

// 4. Two processors in one group, one with a handler that sometimes
// takes longer than the rebalance timeout, while members join and leave:
// a rebalance runs while that handler's batch is in flight (and its
// member is dropped from the group), and every record counts once.
func TestASlowHandlerThroughRebalancesCountsEveryRecordOnce(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newEdgeEnv(t, ctx, 4)
	const rounds, perRound = 40, 100
	var slowCalls, fencedA atomic.Int64
	cfgFor := func(c *stated.Client, slow bool) Config {
		cfg := e.countingConfig(c, "events", nil)
		cfg.MaxPollRecords = 50
		cfg.ReclaimFencedAfter = 2 * time.Second
		if slow {
			rng := rand.New(rand.NewPCG(1, 2))
			var mu sync.Mutex
			cfg.Handler = func(_ context.Context, txn *stated.Txn, r *kgo.Record) error {
				mu.Lock()
				pause := rng.IntN(150) == 0
				mu.Unlock()
				if pause && slowCalls.Load() < 2 {
					slowCalls.Add(1)
					time.Sleep(3500 * time.Millisecond) // past RebalanceTimeout (3s)
				}
				txn.CounterAdd("counts", fmt.Appendf(nil, "p%d", r.Partition), 1)
				return nil
			}
			cfg.OnFenced = func(*stated.FencedError) { fencedA.Add(1) }
		}
		return cfg
	}
	pa, err := New(cfgFor(e.dial(), true))
	if err != nil {
		t.Fatal(err)
	}
	stopA, doneA := runErr(t, pa)
	var wg sync.WaitGroup
	wg.Add(1)
	produced := make([]atomic.Int64, 4)
	go func() {
		defer wg.Done()
		cl, err := kgo.NewClient(kgo.SeedBrokers(e.kc.ListenAddrs()...), kgo.DefaultProduceTopic("events"),
			kgo.RecordPartitioner(kgo.ManualPartitioner()))
		if err != nil {
			t.Error(err)
			return
		}
		defer cl.Close()
		for i := range rounds {
			recs := make([]*kgo.Record, perRound)
			for j := range recs {
				recs[j] = &kgo.Record{Partition: int32((i*perRound + j) % 4), Value: []byte("e")}
			}
			for _, r := range cl.ProduceSync(ctx, recs...) {
				if r.Err != nil {
					t.Error(r.Err)
					return
				}
				produced[r.Record.Partition].Add(1)
			}
			time.Sleep(150 * time.Millisecond)
		}
	}()
	// B joins, leaves, and a B' joins again, while A's handler is slow now
	// and then.
	time.Sleep(time.Second)
	pb, err := New(cfgFor(e.dial(), false))
	if err != nil {
		t.Fatal(err)
	}
	stopB, _ := runErr(t, pb)
	time.Sleep(4 * time.Second)
	if err := stopB(); err != nil {
		t.Fatalf("B: %v", err)
	}
	time.Sleep(2 * time.Second)
	pb2, err := New(cfgFor(e.dial(), false))
	if err != nil {
		t.Fatal(err)
	}
	stopB2, _ := runErr(t, pb2)
	wg.Wait()
	ends := e.ends("events")
	drained := waitCond(90*time.Second, func() bool {
		select {
		case err := <-doneA:
			t.Fatalf("A's Run returned: %v", err)
		default:
		}
		o := e.offsets("g")
		for part, end := range ends {
			if o[part] != end {
				return false
			}
		}
		return true
	})
	time.Sleep(time.Second)
	got := e.counts()
	t.Logf("slow handler calls %d, A fenced %d times; A %+v; B' %+v; counts %v; produced %v; offsets %v; ends %v",
		slowCalls.Load(), fencedA.Load(), pa.Stats(), pb2.Stats(), got, []int64{produced[0].Load(), produced[1].Load(), produced[2].Load(), produced[3].Load()}, e.offsets("g"), ends)
	if err := stopB2(); err != nil {
		t.Fatalf("B': %v", err)
	}
	if err := stopA(); err != nil {
		t.Fatalf("A: %v", err)
	}
	if !drained {
		t.Fatalf("stated's offsets did not reach the log ends within 90s: %v, ends %v", e.offsets("g"), ends)
	}
	for part := range int32(4) {
		if want := produced[part].Load(); got[fmt.Sprintf("p%d", part)] != want || ends[part] != want {
			t.Errorf("partition %d: counted %d, produced %d (log end %d)", part, got[fmt.Sprintf("p%d", part)], want, ends[part])
		}
	}
}

// 5. StartOffset AtEnd while a transaction is open on the partition:
// the processor reads committed records only, yet recorded where a
// partition starts at the high watermark (kadm's ListEndOffsets), past
// the open transaction's records, so that when the transaction committed
// after the claim its records were never counted. It now records the
// last stable offset (ListCommittedOffsets), where a read_committed
// consumer starting "at the end" starts.
func TestStartAtEndCountsATransactionOpenAtTheFirstClaim(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEdgeEnv(t, ctx, 1)
	prod, err := kgo.NewClient(kgo.SeedBrokers(e.kc.ListenAddrs()...), kgo.DefaultProduceTopic("events"),
		kgo.TransactionalID("edge-open"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := prod.ProduceSync(ctx, &kgo.Record{Partition: 0, Value: []byte("t")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	lso, err := e.adm.ListCommittedOffsets(ctx, "events")
	if err != nil {
		t.Fatal(err)
	}
	l, _ := lso.Lookup("events", 0)
	atEnd := kgo.NewOffset().AtEnd()
	cfg := e.countingConfig(e.dial(), "events", nil)
	cfg.StartOffset = &atEnd
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(t, p)
	waitFor(t, "the processor owning the partition", func() (bool, error) { return p.Stats().Owned == 1, nil })
	waitFor(t, "stated recording where the partition starts", func() (bool, error) { return len(e.offsets("g")) == 1, nil })
	recorded := e.offsets("g")[0]
	if err := prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	e.produce("events", 0, 2)
	ends := e.ends("events")
	waitFor(t, "stated's offset at the log end", func() (bool, error) { return e.offsets("g")[0] == ends[0], nil })
	time.Sleep(500 * time.Millisecond)
	if got := e.counts()["p0"]; got != 5 {
		t.Fatalf("StartOffset AtEnd with a transaction open at the first claim: stated recorded start %d (last stable offset then %d); "+
			"%d of the 5 records committed after the processor started counted (the transaction's 3 committed after the claim were skipped: %v)",
			recorded, l.Offset, got, got == 2)
	}
}

// 3d. Records deleted (retention, DeleteRecords) while the processor is
// consuming, ahead of it: franz-go resumes at the log start and reports
// no error to the poll, only a warning to its logger (v1.22.3,
// consumer.go: "The broker deleted what we were consuming ... no data
// loss to report"). The processor skipped them without a word; now the
// Kafka client's warnings reach Config.Logger, and the processor warns
// with the partition and the count, and counts them in Stats().Lost.
func TestRecordsDeletedWhileTheProcessorConsumesAreWarnedAndCountedLost(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEdgeEnv(t, ctx, 1)
	// 50 records, one batch each, so that a tiny FetchMaxBytes fetches one.
	pcl, err := kgo.NewClient(kgo.SeedBrokers(e.kc.ListenAddrs()...), kgo.DefaultProduceTopic("events"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if err := pcl.ProduceSync(ctx, &kgo.Record{Partition: 0, Value: []byte("e")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	pcl.Close()

	release := make(chan struct{})
	blocked := make(chan struct{})
	var log edgeLog
	cfg := e.countingConfig(e.dial(), "events", &log, kgo.FetchMaxBytes(1), kgo.FetchMaxPartitionBytes(1))
	cfg.MaxPollRecords = 1
	cfg.Handler = func(_ context.Context, txn *stated.Txn, r *kgo.Record) error {
		if r.Offset == 0 {
			select {
			case <-blocked:
			default:
				close(blocked)
			}
			<-release
		}
		txn.CounterAdd("counts", fmt.Appendf(nil, "p%d", r.Partition), 1)
		return nil
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop, _ := runErr(t, p)
	select {
	case <-blocked:
	case <-time.After(time.Minute):
		t.Fatal("the handler never saw offset 0")
	}
	time.Sleep(time.Second) // franz-go buffers the next fetch (offset 1) and stops
	del := kadm.Offsets{}
	del.AddOffset("events", 0, 40, -1)
	r, err := e.adm.DeleteRecords(ctx, del)
	if err == nil {
		err = r.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	close(release)
	waitFor(t, "stated's offset at the log end", func() (bool, error) { return e.offsets("g")[0] == 50, nil })
	time.Sleep(500 * time.Millisecond)
	lost := p.Stats().Lost
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	got := e.counts()["p0"]
	warned := false
	for _, ln := range log.lines() {
		if strings.Contains(ln, "lost") || strings.Contains(ln, "data loss") {
			warned = true
		}
		t.Logf("log: %s", ln)
	}
	t.Logf("count %d, Stats().Lost %d, warned %v", got, lost, warned)
	skipped := 50 - got
	if skipped == 0 {
		t.Fatal("no record was skipped: the deletion did not overtake the processor, so the test checked nothing")
	}
	if lost != skipped || !warned {
		t.Fatalf("%d records of events/0 were deleted while the processor consumed and skipped; Stats().Lost = %d, warned = %v: want them warned about and counted", skipped, lost, warned)
	}
}

// 3e. A partition whose unprocessed records were all deleted (an idle
// topic after retention: log start == log end) kept stated's offset below
// the log start, since nothing was processed to move it, and every later
// claim warned again that the same records were lost and counted them
// again. The processor now moves stated's offset up to the log start when
// it reports the gap: reported once.
func TestADeletedGapIsReportedOnceAndStatedsOffsetMovesToTheLogStart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEdgeEnv(t, ctx, 1)
	e.produce("events", 0, 10)
	p, err := New(e.countingConfig(e.dial(), "events", nil))
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, p)
	waitFor(t, "10 counted", func() (bool, error) { return e.counts()["p0"] == 10, nil })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	e.produce("events", 0, 40) // 10..49
	del := kadm.Offsets{}
	del.AddOffset("events", 0, 50, -1) // everything: log start == end == 50
	if r, err := e.adm.DeleteRecords(ctx, del); err != nil || r.Error() != nil {
		t.Fatal(err, r.Error())
	}
	warnings := 0
	for round := 0; round < 2; round++ {
		var log edgeLog
		p, err := New(e.countingConfig(e.dial(), "events", &log))
		if err != nil {
			t.Fatal(err)
		}
		stop, _ := runErr(t, p)
		waitCond(5*time.Second, func() bool { return p.Stats().Lost > 0 })
		time.Sleep(time.Second)
		lost, offset := p.Stats().Lost, e.offsets("g")[0]
		t.Logf("round %d: Stats().Lost %d, stated offset %d", round, lost, offset)
		if want := []int64{40, 0}[round]; lost != want || offset != 50 {
			t.Errorf("claim %d: Stats().Lost %d, stated's offset %d; want %d and the log start 50", round+1, lost, offset, want)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		for _, ln := range log.lines() {
			if strings.Contains(ln, "lost for good") {
				warnings++
			}
		}
	}
	if warnings > 1 {
		t.Fatalf("the same 40 deleted records were reported lost for good %d times (once per claim): stated's offset stays below the log start while nothing is processed", warnings)
	}
}
