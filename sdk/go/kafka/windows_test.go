package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statedhq/stated/daemon/daemontest"
	stated "github.com/statedhq/stated/sdk/go"
)

// windowEnv is a real daemon and an in-process Kafka whose topic holds
// clicks with event times, counted in tumbling windows.
type windowEnv struct {
	t       *testing.T
	sock    string
	brokers []string
	topic   string
	ns      string
	// want is each window's count by "key@start(ms)", from what was
	// produced.
	want map[string]int64
	ends map[int32]int64
	last time.Time
}

const windowSize = 10 * time.Second

var windowBase = time.UnixMilli(1_700_000_000_000).Truncate(windowSize)

func newWindowEnv(t *testing.T, pending int64) *windowEnv {
	t.Helper()
	d := daemontest.Start(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "clicks"), kfake.GroupMinSessionTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	e := &windowEnv{t: t, sock: d.SocketPath(), brokers: c.ListenAddrs(), topic: "clicks", ns: "clicks",
		want: map[string]int64{}, ends: map[int32]int64{}}
	cl := e.dial(context.Background())
	defer cl.Close()
	err = cl.DefineWindows(context.Background(), stated.WindowSpec{
		Namespace: e.ns, Shape: stated.Tumbling, Size: windowSize, Grace: 0, MaxOutOfOrder: 0,
		// No source goes idle during the test: windows close by data alone.
		IdleTimeout: time.Hour, Aggregate: stated.Count, Emit: stated.EmitFinal, Late: stated.LateDrop,
		MaxPendingEmissions: pending,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *windowEnv) dial(ctx context.Context) *stated.Client {
	e.t.Helper()
	c, err := stated.Dial(ctx, "unix://"+e.sock, stated.WithBlock())
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// produce writes n clicks of 5 keys, each 700ms after the last, so that
// every partition's event times only grow and no click is late.
func (e *windowEnv) produce(ctx context.Context, n int) {
	e.t.Helper()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		if e.last.IsZero() {
			e.last = windowBase
		} else {
			e.last = e.last.Add(700 * time.Millisecond)
		}
		key := fmt.Sprintf("k%d", i%5)
		recs[i] = &kgo.Record{Key: []byte(key), Value: []byte("click"), Timestamp: e.last}
		e.want[fmt.Sprintf("%s@%d", key, e.last.Truncate(windowSize).UnixMilli())]++
	}
	e.write(ctx, recs)
}

// produceLate writes n clicks of the first window's time, whose window
// has closed: they are late, and dropped.
func (e *windowEnv) produceLate(ctx context.Context, n int) {
	e.t.Helper()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Key: []byte("k0"), Value: []byte("late click"), Timestamp: windowBase}
	}
	e.write(ctx, recs)
}

func (e *windowEnv) write(ctx context.Context, recs []*kgo.Record) {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.DefaultProduceTopic(e.topic))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	for _, r := range cl.ProduceSync(ctx, recs...) {
		if r.Err != nil {
			e.t.Fatal(r.Err)
		}
		e.ends[r.Record.Partition] = max(e.ends[r.Record.Partition], r.Record.Offset+1)
	}
}

// config is a processor whose handler adds each click to its window; the
// processor makes its partition the source.
func (e *windowEnv) config(c *stated.Client) Config {
	return Config{
		State: c, Group: "g", Topics: []string{e.topic},
		KafkaOptions: []kgo.Opt{kgo.SeedBrokers(e.brokers...), kgo.SessionTimeout(time.Second),
			kgo.HeartbeatInterval(200 * time.Millisecond), kgo.RebalanceTimeout(3 * time.Second)},
		RetryBackoff: 20 * time.Millisecond,
		Handler: func(_ context.Context, txn *stated.Txn, r *kgo.Record) error {
			// No FromSource: the processor sets the record's partition as
			// the Txn's default source.
			txn.AddWindow(e.ns, r.Key, r.Timestamp, stated.NoValue())
			return nil
		},
	}
}

// recordingCallback records each window it is handed in stated, in the
// callback's transaction: the counter "key@start" of namespace
// "delivered" counts how many times the window reached the application.
func recordingCallback(calls *atomic.Int64) WindowClosedFunc {
	return func(_ context.Context, txn *stated.Txn, ems []stated.Emission) error {
		calls.Add(1)
		for _, em := range ems {
			if em.Kind != stated.EmissionFinal {
				return fmt.Errorf("emission %d is a %s, want final", em.ID, em.Kind)
			}
			txn.CounterAdd("delivered", fmt.Appendf(nil, "%s@%d", em.Key, em.Start.UnixMilli()), 1)
			txn.CounterAdd("counted", fmt.Appendf(nil, "%s@%d", em.Key, em.Start.UnixMilli()), em.Count)
		}
		return nil
	}
}

// run starts p and returns a function that stops it and returns Run's
// result.
func run(t *testing.T, p *Processor) (stop func() error) {
	t.Helper()
	stop, _ = runErr(t, p)
	return stop
}

// start creates a processor of cfg with fn as the callback of the
// test's namespace and runs it; stop ends it and returns Run's result.
func (e *windowEnv) start(t *testing.T, cfg Config, fn WindowClosedFunc) (p *Processor, stop func() error) {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.OnWindowClosed(e.ns, fn)
	return p, run(t, p)
}

// noPending reports whether the test's namespace has no emission left
// to acknowledge.
func (e *windowEnv) noPending(ctx context.Context, c *stated.Client) func() (bool, error) {
	return func() (bool, error) {
		n, err := pending(ctx, c, e.ns)
		return n == 0, err
	}
}

// waitFor polls cond until it holds, for at most a minute.
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a minute: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *windowEnv) drained(ctx context.Context, c *stated.Client) func() (bool, error) {
	return func() (bool, error) {
		offs, err := c.GetOffsets(ctx, "g")
		if err != nil {
			return false, err
		}
		done := 0
		for _, o := range offs {
			if o.Offset >= e.ends[o.Partition] {
				done++
			}
		}
		return done == len(e.ends), nil
	}
}

func pending(ctx context.Context, c *stated.Client, ns string) (int, error) {
	ems, err := c.Emissions(ctx, ns, 0, 10000)
	return len(ems), err
}

// counters returns the counters of namespace ns by key.
func counters(ctx context.Context, t *testing.T, c *stated.Client, ns string) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	for e, err := range c.Scan(ctx, stated.ScanQuery{Namespace: ns}) {
		if err != nil {
			t.Fatal(err)
		}
		got[string(e.Key)] = e.Counter
	}
	return got
}

// checkEachWindowDeliveredOnce checks that recordingCallback saw every
// produced window exactly once, with its full count, and no other window.
func (e *windowEnv) checkEachWindowDeliveredOnce(ctx context.Context, check *stated.Client) {
	e.t.Helper()
	delivered, counted := counters(ctx, e.t, check, "delivered"), counters(ctx, e.t, check, "counted")
	for w, n := range e.want {
		if delivered[w] != 1 || counted[w] != n {
			e.t.Errorf("window %s: delivered %d times with count %d; want once with %d", w, delivered[w], counted[w], n)
		}
	}
	if len(delivered) != len(e.want) {
		e.t.Errorf("%d windows delivered, want %d", len(delivered), len(e.want))
	}
}

// closeAll advances every partition's watermark past the last click, so
// that every window closes; the emissions go to the outbox, for the
// running processor to find.
func (e *windowEnv) closeAll(ctx context.Context, c *stated.Client) {
	e.t.Helper()
	txn := c.Txn()
	for part := range e.ends {
		txn.AdvanceWatermark(e.ns, fmt.Sprintf("%s/%d", e.topic, part), e.last.Add(windowSize))
	}
	if _, err := txn.Commit(ctx); err != nil {
		e.t.Fatal(err)
	}
}

// TestWindowEmissionsAreDeliveredAgainAfterACrashAndNeverTwiceOnceAcked:
// a processor whose application dies before acknowledging (its callback
// closes the stated client and fails) leaves the windows its commits
// closed pending in the outbox. A new processor delivers them first, then
// the rest as its own commits and the final watermark close them; every
// window reaches the application exactly once, with its full count, and a
// third processor finds nothing left to deliver.
func TestWindowEmissionsAreDeliveredAgainAfterACrashAndNeverTwiceOnceAcked(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newWindowEnv(t, 0)
	e.produce(ctx, 300)
	check := e.dial(ctx)
	defer check.Close()

	// The first processor commits batches (closing windows) but its
	// application dies before any acknowledgement.
	c1 := e.dial(ctx)
	cfg1 := e.config(c1)
	cfg1.MaxPollRecords = 40
	var died atomic.Bool
	_, stop1 := e.start(t, cfg1, func(context.Context, *stated.Txn, []stated.Emission) error {
		died.Store(true)
		c1.Close()
		return errors.New("the application died")
	})
	waitFor(t, "the first processor's commits to close windows", func() (bool, error) {
		n, err := pending(ctx, check, e.ns)
		return n > 0 && died.Load(), err
	})
	stop1()
	left, err := pending(ctx, check, e.ns)
	if err != nil {
		t.Fatal(err)
	}
	if got := counters(ctx, t, check, "delivered"); len(got) != 0 {
		t.Fatalf("delivered %v before any acknowledgement", got)
	}
	t.Logf("the first processor died with %d emissions pending", left)

	// The second delivers them, processes the rest, and delivers the
	// windows the final watermark closes.
	c2 := e.dial(ctx)
	defer c2.Close()
	var calls2 atomic.Int64
	p2, stop2 := e.start(t, e.config(c2), recordingCallback(&calls2))
	waitFor(t, "the topic drained", e.drained(ctx, check))
	e.closeAll(ctx, check)
	waitFor(t, "every window delivered", e.noPending(ctx, check))
	// The outbox is empty once the last acknowledgement applied, a moment
	// before its commit returns to p2 and p2 counts it: stopping p2 in
	// between would leave that commit's outcome unknown to p2, and
	// uncounted.
	waitFor(t, "p2 counting every emission it delivered", func() (bool, error) {
		return p2.Stats().Emissions >= int64(len(e.want)), nil
	})
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	e.checkEachWindowDeliveredOnce(ctx, check)
	if s := p2.Stats(); s.Emissions != int64(len(e.want)) {
		t.Errorf("Stats().Emissions = %d, want %d", s.Emissions, len(e.want))
	}

	// A third processor, after more clicks of the windows' time (late,
	// dropped), has nothing to deliver again.
	e.produceLate(ctx, 5)
	c3 := e.dial(ctx)
	defer c3.Close()
	var calls3 atomic.Int64
	_, stop3 := e.start(t, e.config(c3), recordingCallback(&calls3))
	waitFor(t, "the new clicks committed", e.drained(ctx, check))
	if err := stop3(); err != nil {
		t.Fatal(err)
	}
	if n := calls3.Load(); n != 0 {
		t.Fatalf("the third processor's callback ran %d times; everything was acknowledged", n)
	}
	if got := counters(ctx, t, check, "delivered"); len(got) != len(e.want) {
		t.Fatalf("%d windows delivered after the third processor, want %d", len(got), len(e.want))
	}
}

// TestAFullOutboxHoldsBatchesUntilItsEmissionsAreDelivered: windows that
// another client's commit closed wait in the outbox, which the processor
// does not read on its own (OutboxInterval < 0), until the outbox is full
// and stated refuses the processor's next batch (backpressure). The
// processor delivers the pending emissions and commits the batch again:
// it does not stop.
func TestAFullOutboxHoldsBatchesUntilItsEmissionsAreDelivered(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newWindowEnv(t, 3)
	e.produce(ctx, 100)
	check := e.dial(ctx)
	defer check.Close()
	c := e.dial(ctx)
	defer c.Close()
	cfg := e.config(c)
	cfg.OutboxInterval = -1
	var calls atomic.Int64
	_, stop := e.start(t, cfg, recordingCallback(&calls))
	waitFor(t, "the topic drained", e.drained(ctx, check))
	// The processor delivers what its last commit closed right after it.
	waitFor(t, "the processor's emissions delivered", e.noPending(ctx, check))
	e.closeAll(ctx, check) // closes more windows than the outbox may hold
	if n, err := pending(ctx, check, e.ns); err != nil || n < 3 {
		t.Fatalf("%d emissions pending (%v), want at least 3", n, err)
	}
	e.produceLate(ctx, 10) // their batch is refused while the outbox is full
	waitFor(t, "the late clicks committed", e.drained(ctx, check))
	waitFor(t, "every window delivered", e.noPending(ctx, check))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	delivered := counters(ctx, t, check, "delivered")
	for w := range delivered {
		if delivered[w] != 1 {
			t.Errorf("window %s delivered %d times", w, delivered[w])
		}
	}
	if len(delivered) != len(e.want) {
		t.Errorf("%d windows delivered, want %d", len(delivered), len(e.want))
	}
}

// TestACallbackFailureLosesNoRecordAfterItsBatch: when a callback fails
// after its batch committed, the processor goes on from the records after
// that batch, delivering the pending windows again first: every window is
// delivered once, with the count of every click produced.
func TestACallbackFailureLosesNoRecordAfterItsBatch(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newWindowEnv(t, 0)
	e.produce(ctx, 200)
	check := e.dial(ctx)
	defer check.Close()
	c := e.dial(ctx)
	defer c.Close()
	cfg := e.config(c)
	cfg.MaxPollRecords = 10
	var calls, failures atomic.Int64
	record := recordingCallback(&calls)
	_, stop := e.start(t, cfg, func(ctx context.Context, txn *stated.Txn, ems []stated.Emission) error {
		if failures.Load() == 0 {
			failures.Add(1)
			return errors.New("injected failure of the first callback")
		}
		return record(ctx, txn, ems)
	})
	waitFor(t, "the topic drained", e.drained(ctx, check))
	e.closeAll(ctx, check)
	waitFor(t, "every window delivered", e.noPending(ctx, check))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if failures.Load() != 1 {
		t.Fatalf("%d callback failures, want the one injected", failures.Load())
	}
	e.checkEachWindowDeliveredOnce(ctx, check)
}

// TestEmissionsAnotherProcessorAcknowledgedAreSkipped: when another
// processor acknowledges emissions between this one reading them and
// committing its callback's transaction, the commit is refused as a whole
// (the acks find them no longer pending); the processor goes on with the
// rest instead of stopping, and nothing of the refused transaction
// applies.
func TestEmissionsAnotherProcessorAcknowledgedAreSkipped(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newWindowEnv(t, 0)
	e.produce(ctx, 200)
	check := e.dial(ctx)
	defer check.Close()
	other := e.dial(ctx) // the other processor's client
	defer other.Close()

	c := e.dial(ctx)
	defer c.Close()
	p, err := New(e.config(c))
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	record := recordingCallback(&calls)
	var stolen atomic.Int64
	p.OnWindowClosed(e.ns, func(ctx context.Context, txn *stated.Txn, ems []stated.Emission) error {
		if stolen.Load() == 0 {
			// The other processor acknowledges them first, with what it
			// did with them.
			ack := other.Txn()
			for _, em := range ems {
				ack.CounterAdd("delivered", fmt.Appendf(nil, "%s@%d", em.Key, em.Start.UnixMilli()), 1)
				ack.CounterAdd("counted", fmt.Appendf(nil, "%s@%d", em.Key, em.Start.UnixMilli()), em.Count)
			}
			if _, err := ack.Ack(ems...).Commit(ctx); err != nil {
				return err
			}
			stolen.Add(int64(len(ems)))
		}
		return record(ctx, txn, ems)
	})
	ctxRun, stopRun := context.WithCancel(ctx)
	defer stopRun()
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctxRun) }()
	stopped := func() (bool, error) {
		select {
		case err := <-errc:
			return false, fmt.Errorf("Run stopped: %v", err)
		default:
			return false, nil
		}
	}
	waitFor(t, "the topic drained", func() (bool, error) {
		if _, err := stopped(); err != nil {
			return false, err
		}
		return e.drained(ctx, check)()
	})
	e.closeAll(ctx, check)
	waitFor(t, "every window delivered", func() (bool, error) {
		if _, err := stopped(); err != nil {
			return false, err
		}
		n, err := pending(ctx, check, e.ns)
		return n == 0, err
	})
	// The outbox is empty once the last acknowledgement applied, a moment
	// before its commit returns to p and p counts it.
	waitFor(t, "p counting every emission it delivered", func() (bool, error) {
		return p.Stats().Emissions+stolen.Load() >= int64(len(e.want)), nil
	})
	stopRun()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if stolen.Load() == 0 {
		t.Fatal("the other processor acknowledged nothing")
	}
	delivered, counted := counters(ctx, t, check, "delivered"), counters(ctx, t, check, "counted")
	for w, n := range e.want {
		if delivered[w] != 1 || counted[w] != n {
			t.Errorf("window %s: delivered %d times with count %d; want once with %d", w, delivered[w], counted[w], n)
		}
	}
	if s := p.Stats(); s.Emissions+stolen.Load() != int64(len(e.want)) {
		t.Errorf("the processor delivered %d and the other %d emissions, want %d in all", s.Emissions, stolen.Load(), len(e.want))
	}
}

// TestAPartitionWithoutRecordsYetHoldsTheWatermark: a processor with a
// window callback makes every assigned partition a watermark source when
// Kafka assigns it, so a partition whose records arrive after another
// partition's newer ones holds the namespace's watermark back instead of
// finding its windows closed (its records late and dropped).
func TestAPartitionWithoutRecordsYetHoldsTheWatermark(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newWindowEnv(t, 0)
	check := e.dial(ctx)
	defer check.Close()
	toPartition := func(part int32, from time.Time, n int) {
		t.Helper()
		cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.DefaultProduceTopic(e.topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		for i := range n {
			r := &kgo.Record{Key: []byte("k"), Partition: part, Timestamp: from.Add(time.Duration(i) * time.Second)}
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
			e.ends[part] = max(e.ends[part], r.Offset+1)
		}
	}
	toPartition(0, windowBase, 30) // 30 s of clicks on partition 0

	c := e.dial(ctx)
	defer c.Close()
	var calls atomic.Int64
	_, stop := e.start(t, e.config(c), recordingCallback(&calls))
	waitFor(t, "partition 0 committed", e.drained(ctx, check))

	toPartition(1, windowBase, 5) // partition 1's first clicks: the first window's
	waitFor(t, "partition 1 committed", e.drained(ctx, check))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	sts, err := check.WindowStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sts) != 1 || sts[0].LateDropped != 0 || sts[0].Adds != 35 {
		t.Fatalf("status %+v: want 35 adds, none late", sts)
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("the callback ran %d times: a window closed while partition 1 had sent nothing", n)
	}
	// The handler named no source: the processor made each record's
	// partition the source of its adds.
	last := map[string]time.Time{}
	for _, src := range sts[0].Sources {
		last[src.Source] = src.MaxEventTime
	}
	for part, want := range map[int32]time.Time{0: windowBase.Add(29 * time.Second), 1: windowBase.Add(4 * time.Second)} {
		if got := last[fmt.Sprintf("%s/%d", e.topic, part)]; !got.Equal(want) {
			t.Errorf("source %s/%d: greatest event time %v, want %v (sources %v)", e.topic, part, got, want, last)
		}
	}
}

// TestAPartitionClaimedBeforeTheCallbackWasRegisteredHoldsTheWatermark:
// New joins the group, so Kafka may assign, and the processor claim, its
// partitions before OnWindowClosed registered the namespace; the claims
// then made no partition a watermark source of it. Run makes every
// partition claimed before it a source, so partition 1, silent, still
// holds the watermark back while partition 0's clicks run 30 s ahead.
func TestAPartitionClaimedBeforeTheCallbackWasRegisteredHoldsTheWatermark(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newWindowEnv(t, 0)
	check := e.dial(ctx)
	defer check.Close()
	c := e.dial(ctx)
	defer c.Close()
	p, err := New(e.config(c))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both partitions claimed before Run", func() (bool, error) {
		g, err := check.GetGroup(ctx, "g")
		if err != nil {
			return false, err
		}
		live := 0
		for _, cl := range g.Claims {
			if !cl.Released {
				live++
			}
		}
		return live == 2, nil
	})
	var calls atomic.Int64
	p.OnWindowClosed(e.ns, recordingCallback(&calls))
	stop := run(t, p)

	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.DefaultProduceTopic(e.topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range 30 { // 30 s of clicks on partition 0
		r := &kgo.Record{Key: []byte("k"), Partition: 0, Timestamp: windowBase.Add(time.Duration(i) * time.Second)}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		e.ends[0] = max(e.ends[0], r.Offset+1)
	}
	waitFor(t, "partition 0 committed", e.drained(ctx, check))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	sts, err := check.WindowStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sts) != 1 {
		t.Fatalf("status %+v: want one namespace", sts)
	}
	sources := map[string]bool{}
	for _, src := range sts[0].Sources {
		sources[src.Source] = true
	}
	if p1 := e.topic + "/1"; !sources[p1] {
		t.Errorf("partition 1, claimed before OnWindowClosed, is no watermark source of %s (sources %v)", e.ns, sources)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("the callback ran %d times: a window closed while partition 1 had sent nothing", n)
	}
}
