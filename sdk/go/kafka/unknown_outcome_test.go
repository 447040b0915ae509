package kafka

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	stated "github.com/statedhq/stated/sdk/go"
)

// TestAProcessorWhoseCommitsOutcomeIsUnknownCountsEveryRecordOnceWhenStartedAgain:
// the processor's stated Client is closed while its commits are in
// flight, so that the commit in flight ends with ErrClosed, an unknown
// outcome (it may have applied, and its answer was lost). Run returns
// that error instead of going on or processing the batch again; a
// processor started again with a new Client resumes from the offsets
// stated holds, which moved with the state if and only if the commit
// applied. Over several such rounds, every record counts exactly once.
func TestAProcessorWhoseCommitsOutcomeIsUnknownCountsEveryRecordOnceWhenStartedAgain(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sockDir, err := os.MkdirTemp("", "stated")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "s.sock")
	daemontest.Start(t, func(c *daemon.Config) { c.SocketPath = sock })

	const partitions, records, rounds = 3, 2400, 6
	kc := newEvents(t, partitions)
	pcl, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.DefaultProduceTopic("events"))
	if err != nil {
		t.Fatal(err)
	}
	recs := make([]*kgo.Record, records)
	for i := range recs {
		recs[i] = &kgo.Record{Partition: int32(i % partitions), Value: []byte("e")}
	}
	for _, r := range pcl.ProduceSync(ctx, recs...) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	pcl.Close()

	check, err := stated.Dial(ctx, "unix://"+sock, stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	linearizable := stated.WithConsistency(stated.ConsistencyLinearizable)
	committed := func() int64 {
		t.Helper()
		g, err := check.GetGroup(ctx, "g", linearizable)
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, o := range g.Offsets {
			n += o.Offset
		}
		return n
	}

	var handled atomic.Int64
	applied := 0
	for round := range rounds { // each closes after at most 285 records: some are left for the last processor
		before, handledBefore := committed(), handled.Load()
		c, err := stated.Dial(ctx, "unix://"+sock, stated.WithBlock())
		if err != nil {
			t.Fatal(err)
		}
		counts := stated.NewCounter(c, "counts")
		// Each round closes its Client a little later, from the handler
		// of a batch, so that the close lands while a commit is on its
		// way or in the daemon.
		closeAt := handled.Load() + int64(100+round*37)
		var closeOnce sync.Once
		p, err := New(Config{
			State: c, Group: "g", Topics: []string{"events"},
			KafkaOptions:        testKafkaOptions(kc),
			KafkaCommitInterval: -1,
			MaxPollRecords:      7,
			Handler: func(_ context.Context, txn *stated.Txn, r *kgo.Record) error {
				counts.In(txn).Add("n", 1)
				if handled.Add(1) >= closeAt {
					closeOnce.Do(func() {
						go func() {
							time.Sleep(time.Duration(round%4) * 100 * time.Microsecond)
							c.Close()
						}()
					})
				}
				return nil
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		runCtx, stop := context.WithTimeout(ctx, 30*time.Second)
		err = p.Run(runCtx)
		stop()
		c.Close()
		// The state and the offsets move together, or not at all. The
		// commit whose outcome is unknown may still be on its way to the
		// log when Run returns (closing the Client does not stop what it
		// sent), so count and offsets are read between two reads of the
		// offsets that agree: no commit applied in between.
		var after, n int64
		for try := 0; ; try++ {
			first := committed()
			var gerr error
			n, gerr = stated.NewCounter(check, "counts").Get(ctx, "n", linearizable)
			if gerr != nil {
				t.Fatal(gerr)
			}
			if after = committed(); after == first {
				break
			}
			if try == 50 {
				t.Fatalf("round %d: the offsets still moved after 50 reads, with no processor running", round)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if n != after {
			t.Fatalf("round %d: count %d, offsets %d: the state and the offsets it was committed with differ", round, n, after)
		}
		if !errors.Is(err, stated.ErrClosed) {
			t.Fatalf("round %d: Run returned %v, want an error matching ErrClosed", round, err)
		}
		if handled.Load()-handledBefore == after-before {
			applied++ // the commit that failed had applied
		}
	}

	// A last processor, left alone, finishes what the rounds left.
	c, err := stated.Dial(ctx, "unix://"+sock, stated.WithBlock())
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
			counts.In(txn).Add("n", 1)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, p)
	waitFor(t, "every record's offset committed", func() (bool, error) { return committed() == records, nil })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	n, err := counts.Get(ctx, "n", linearizable)
	if err != nil {
		t.Fatal(err)
	}
	if n != records {
		t.Fatalf("%d records counted %d times after %d rounds that ended with an unknown outcome (%d had applied), want each once", records, n, rounds, applied)
	}
	t.Logf("%d rounds ended with a commit of unknown outcome, %d of them applied; %d records handled in all for %d records", rounds, applied, handled.Load(), records)
}
