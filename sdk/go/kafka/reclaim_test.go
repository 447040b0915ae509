package kafka

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statedhq/stated/daemon/daemontest"
	stated "github.com/statedhq/stated/sdk/go"
)

// TestReclaimFencedAfterDefaultsPastTheSessionTimeout: the default delay
// before a fenced partition is claimed again is twice the group's session
// timeout (90 s with franz-go's default of 45 s), at least 1 minute, so
// that a zombie has learned it is out of the group before its partition
// is claimed back; a delay set in Config is kept.
func TestReclaimFencedAfterDefaultsPastTheSessionTimeout(t *testing.T) {
	t.Parallel()
	c, err := stated.Dial(context.Background(), "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		set  time.Duration
		opts []kgo.Opt
		want time.Duration
	}{
		{0, nil, 90 * time.Second},
		{0, []kgo.Opt{kgo.SessionTimeout(90 * time.Second)}, 3 * time.Minute},
		{0, []kgo.Opt{kgo.SessionTimeout(10 * time.Second)}, time.Minute},
		{5 * time.Second, []kgo.Opt{kgo.SessionTimeout(90 * time.Second)}, 5 * time.Second},
		{-1, nil, -1},
	} {
		p, err := New(Config{State: c, Group: "g", Topics: []string{"t"}, ReclaimFencedAfter: tc.set,
			KafkaOptions: append([]kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, tc.opts...),
			Handler:      func(context.Context, *stated.Txn, *kgo.Record) error { return nil }})
		if err != nil {
			t.Fatal(err)
		}
		got := p.cfg.ReclaimFencedAfter
		p.close()
		if got != tc.want {
			t.Errorf("ReclaimFencedAfter %v with %d options: %v, want %v", tc.set, len(tc.opts), got, tc.want)
		}
	}
}

// TestAFencedPartitionIsReclaimedWhenThePollHasNoDeadline: with
// KafkaCommitInterval negative and no window callbacks, a poll has no
// deadline of its own. A partition fenced by a claim of a client that is
// not in the Kafka group (it claimed and went away) is paused, and
// reclaimFenced runs only after a poll returns: a poll over nothing but
// paused partitions would never return, and the partition stayed fenced,
// its records unprocessed, until the next rebalance. The poll now ends
// when the first fenced partition is due.
func TestAFencedPartitionIsReclaimedWhenThePollHasNoDeadline(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := daemontest.Start(t)
	kc := newEvents(t, 1)
	produce := func(n int) {
		t.Helper()
		cl, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.DefaultProduceTopic("events"))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		for range n {
			if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("e")}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	c, err := stated.Dial(ctx, "unix://"+d.SocketPath(), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	other, err := stated.Dial(ctx, "unix://"+d.SocketPath(), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	counts := stated.NewCounter(c, "counts")
	fenced := make(chan struct{}, 10)
	p, err := New(Config{
		State: c, Group: "g", Topics: []string{"events"},
		KafkaOptions:        testKafkaOptions(kc),
		KafkaCommitInterval: -1,
		ReclaimFencedAfter:  time.Second,
		OnFenced:            func(*stated.FencedError) { fenced <- struct{}{} },
		Handler: func(_ context.Context, txn *stated.Txn, r *kgo.Record) error {
			counts.In(txn).Add("n", 1)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, p)
	defer stop()
	offset := func() int64 {
		offs, err := c.GetOffsets(ctx, "g")
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range offs {
			if o.Topic == "events" && o.Partition == 0 {
				return o.Offset
			}
		}
		return 0
	}
	produce(5)
	waitFor(t, "offset 5", func() (bool, error) { return offset() == 5, nil })

	// A claim by a client outside the group: a claimant that went away.
	if _, err := other.Claim(ctx, "g", []stated.TopicPartition{{Topic: "events", Partition: 0}}); err != nil {
		t.Fatal(err)
	}
	produce(5)
	select {
	case <-fenced:
	case <-time.After(20 * time.Second):
		t.Fatal("the processor was not fenced")
	}
	deadline := time.Now().Add(15 * time.Second)
	for offset() != 10 {
		if time.Now().After(deadline) {
			t.Fatalf("15s after the fencing, with ReclaimFencedAfter 1s, the partition is still not reclaimed (offset %d, stats fenced %v, waiting %v)",
				offset(), p.Stats().Fenced, p.Stats().Waiting)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCloseReleasesTheClaimsOfAProcessorThatNeverRan: New joins the group
// and claims what Kafka assigns; an application that fails before Run
// closes the Processor, which leaves the group and releases its claims,
// so that another processor takes the partition over at once. Run after
// Close fails; Close after Run returned does nothing.
func TestCloseReleasesTheClaimsOfAProcessorThatNeverRan(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := daemontest.Start(t)
	kc := newEvents(t, 1)
	c, err := stated.Dial(ctx, "unix://"+d.SocketPath(), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := Config{
		State: c, Group: "g", Topics: []string{"events"},
		KafkaOptions: testKafkaOptions(kc),
		Handler:      func(context.Context, *stated.Txn, *kgo.Record) error { return nil },
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	claims := func(released bool) func() (bool, error) {
		return func() (bool, error) {
			g, err := c.GetGroup(ctx, "g")
			if err != nil {
				return false, err
			}
			return len(g.Claims) == 1 && g.Claims[0].Released == released, nil
		}
	}
	waitFor(t, "the partition claimed by the processor that has not run", claims(false))
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "its claim released by Close", claims(true))
	if err := p.Run(ctx); !errors.Is(err, errClosed) {
		t.Fatalf("Run after Close returned %v, want %v", err, errClosed)
	}

	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, q)
	waitFor(t, "the partition claimed by the next processor", claims(false))
	if err := q.Close(); err == nil {
		t.Error("Close while Run runs succeeded")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Errorf("Close after Run returned: %v", err)
	}
}
