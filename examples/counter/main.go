// Command counter counts Kafka records per key, exactly once, with its
// state and offsets in stated.
//
// It consumes the topic as a member of the consumer group through the
// stated SDK's franz-go helper (sdk/go/kafka): for every poll it adds one
// to the counter of each record's key in the namespace and commits the
// counters together with the partitions' next offsets in one stated
// transaction. Kill it at any point and start it again: every key's count
// ends equal to the number of records with that key.
//
// Against a running Kafka and stated:
//
//	go run ./examples/counter --brokers localhost:9092 --stated ./stated-data/stated.sock --topic clicks
//
// With no --brokers it starts an in-process Kafka (franz-go's kfake),
// produces --demo-records records to a 4-partition topic, counts them and
// prints the counts (a stated daemon must still be running):
//
//	go run ./cmd/stated run &
//	go run ./examples/counter --demo-records 10000
//
// --session-timeout shortens the group session, so that a killed
// counter's partitions move sooner; --rebalance-timeout follows it unless
// set (see groupTimeouts for why it should not be longer). The processor
// warns whenever it waits on the Kafka group or on stated for longer than
// --wait-log-interval, and says which.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	stated "github.com/statedhq/stated/sdk/go"
	"github.com/statedhq/stated/sdk/go/kafka"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "counter:", err)
		os.Exit(1)
	}
}

func run() error {
	brokers := flag.String("brokers", "", "comma-separated Kafka brokers; empty starts an in-process kfake cluster with demo records")
	addr := flag.String("stated", "./stated-data/stated.sock", "stated daemon address(es), comma-separated: a unix socket path or host:port")
	dialTimeout := flag.Duration("dial-timeout", 30*time.Second, "how long to wait at start for stated to answer")
	group := flag.String("group", "counter", "Kafka consumer group")
	topic := flag.String("topic", "events", "topic to count")
	ns := flag.String("namespace", "counts", "stated namespace of the per-key counters")
	clientID := flag.String("client-id", "", "stated client id (default: random)")
	demo := flag.Int("demo-records", 1000, "records to produce when --brokers is empty")
	maxPoll := flag.Int("max-poll-records", 0, "records per poll and per stated commit (0: the helper's default)")
	sessionTimeout := flag.Duration("session-timeout", 0, "Kafka group session timeout: how soon a crashed member's partitions move (0: franz-go's 45s)")
	rebalanceTimeout := flag.Duration("rebalance-timeout", 0, "Kafka group rebalance timeout: how long a rebalance waits for members to join again (0: the session timeout when --session-timeout is set, else franz-go's 60s); keep it at or below the session timeout")
	waitLog := flag.Duration("wait-log-interval", 0, "warn when the processor waits this long on the Kafka group or on stated, and again at this interval (0: 10s; negative: never)")
	verbose := flag.Bool("v", false, "log the helper's decisions")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	kopts, err := groupTimeouts(logger, *sessionTimeout, *rebalanceTimeout)
	if err != nil {
		return err
	}

	var drainTo map[int32]int64
	if *brokers == "" {
		// Each demo run has a fresh topic, so it counts into a fresh
		// group and namespace unless told otherwise.
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		run := time.Now().UTC().Format("20060102-150405.000") // two runs in one second must not share a group
		if !set["group"] {
			*group += "-demo-" + run
		}
		if !set["namespace"] {
			*ns += "-demo-" + run
		}
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, *topic))
		if err != nil {
			return fmt.Errorf("start kfake: %w", err)
		}
		defer cluster.Close()
		*brokers = strings.Join(cluster.ListenAddrs(), ",")
		if drainTo, err = produceDemo(ctx, *brokers, *topic, *demo); err != nil {
			return err
		}
		fmt.Printf("kfake on %s: produced %d records to %q; counting as group %q into namespace %q\n", *brokers, *demo, *topic, *group, *ns)
	}

	// stated may come up after the counter (a sidecar in the same pod, or
	// `stated run &` a moment earlier): wait for it, within --dial-timeout.
	opts := []stated.Option{stated.WithWaitForDaemon(0)}
	if *clientID != "" {
		opts = append(opts, stated.WithClientID(*clientID))
	}
	dctx, dcancel := context.WithTimeout(ctx, *dialTimeout)
	client, err := stated.Dial(dctx, *addr, opts...)
	dcancel()
	if err != nil {
		return fmt.Errorf("dial stated at %s (waited up to --dial-timeout %s): %w", *addr, *dialTimeout, err)
	}
	defer client.Close()
	counts := stated.NewCounter(client, *ns)

	kopts = append(kopts, kgo.SeedBrokers(strings.Split(*brokers, ",")...))
	p, err := kafka.New(kafka.Config{
		State:           client,
		Group:           *group,
		Topics:          []string{*topic},
		KafkaOptions:    kopts,
		MaxPollRecords:  *maxPoll,
		WaitLogInterval: *waitLog,
		Logger:          logger,
		Handler: func(_ context.Context, txn *stated.Txn, r *kgo.Record) error {
			counts.In(txn).Add(string(r.Key), 1)
			return nil
		},
	})
	if err != nil {
		return err
	}
	if drainTo == nil {
		return p.Run(ctx)
	}

	// Demo: run until stated's offsets reach the end of every partition,
	// then print the counts.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- p.Run(runCtx) }()
	if err := waitDrained(ctx, client, *group, *topic, drainTo, errc); err != nil {
		return err
	}
	cancel()
	if err := <-errc; err != nil {
		return err
	}
	for e, err := range client.Scan(ctx, stated.ScanQuery{Namespace: *ns}) {
		if err != nil {
			return err
		}
		fmt.Printf("%s\t%d\n", e.Key, e.Counter)
	}
	return nil
}

// groupTimeouts returns the franz-go options for the group's session and
// rebalance timeouts.
//
// A member does not heartbeat while it joins the group: from its
// JoinGroup until the rebalance completes, which the coordinator lets
// last up to the largest rebalance timeout of the members. A short
// session timeout therefore needs a rebalance timeout no longer than it.
// Otherwise a rebalance that waits for a slow or dead member outlasts the
// session timeout of the members already joined, and a coordinator that
// counts that time against them (kfake did, see
// third_party/kfake/PATCHES.md) expires them mid-join; each then hangs
// for its request timeout (rebalance timeout + 10s) before it joins
// again, and the group can stall in rebalances. So the rebalance timeout
// follows a short session timeout unless it is set too. It also bounds how
// long a batch in flight (a commit that waits for stated) may delay the
// member's rejoin before the group moves on without it.
func groupTimeouts(logger *slog.Logger, session, rebalance time.Duration) ([]kgo.Opt, error) {
	switch {
	case session < 0:
		return nil, fmt.Errorf("--session-timeout: negative (%s)", session)
	case rebalance < 0:
		return nil, fmt.Errorf("--rebalance-timeout: negative (%s)", rebalance)
	}
	var opts []kgo.Opt
	if session > 0 {
		opts = append(opts, kgo.SessionTimeout(session), kgo.HeartbeatInterval(session/5))
		if rebalance == 0 {
			rebalance = session
		}
	}
	if rebalance > 0 {
		opts = append(opts, kgo.RebalanceTimeout(rebalance))
	}
	if session > 0 && rebalance > session {
		logger.Warn("counter: --rebalance-timeout is longer than --session-timeout; members do not heartbeat while they join, so a long rebalance can expire them mid-join on some brokers",
			"session_timeout", session, "rebalance_timeout", rebalance)
	}
	return opts, nil
}

// produceDemo writes n records with 20 keys and returns each partition's
// end offset.
func produceDemo(ctx context.Context, brokers, topic string, n int) (map[int32]int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Key: fmt.Appendf(nil, "key-%02d", i%20), Value: fmt.Appendf(nil, "%d", i)}
	}
	ends := map[int32]int64{}
	for _, r := range cl.ProduceSync(ctx, recs...) {
		if r.Err != nil {
			return nil, fmt.Errorf("produce: %w", r.Err)
		}
		ends[r.Record.Partition] = max(ends[r.Record.Partition], r.Record.Offset+1)
	}
	return ends, nil
}

func waitDrained(ctx context.Context, client *stated.Client, group, topic string, ends map[int32]int64, errc <-chan error) error {
	for {
		offs, err := client.GetOffsets(ctx, group)
		if err != nil {
			return err
		}
		done := 0
		for _, o := range offs {
			if o.Topic == topic && o.Offset >= ends[o.Partition] {
				done++
			}
		}
		if done == len(ends) {
			return nil
		}
		select {
		case err := <-errc:
			if err == nil {
				err = errors.New("processor stopped before the topic was drained")
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
