package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	stated "github.com/statedhq/stated/sdk/go"
	"github.com/statedhq/stated/sdk/go/kafka"
)

// demoProcessorCommand is the counter the demo runs as a child process:
// the same processor as examples/counter (sdk/go/kafka adding one to the
// counter of each record's key, committed together with the offsets), in
// this binary so that the demo needs nothing but itself. Hidden: it is a
// part of the demo, not a command of its own.
func (c *cli) demoProcessorCommand() *cobra.Command {
	var addr, brokers, topic, group, ns string
	var maxPoll int
	var session time.Duration
	var verbose bool
	cmd := &cobra.Command{
		Use:    "processor",
		Short:  "The demo's counter: counts Kafka records per key in stated, exactly once",
		Hidden: true,
		Args:   cobra.NoArgs,
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, _ []string) error {
		for _, f := range []struct{ name, v string }{{"stated", addr}, {"brokers", brokers}, {"topic", topic}, {"group", group}, {"namespace", ns}} {
			if f.v == "" {
				return &exitError{code: exitUsage, err: fmt.Errorf("demo processor: --%s is required", f.name)}
			}
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		level := slog.LevelWarn
		if verbose {
			level = slog.LevelInfo
		}
		logger := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: level}))

		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		client, err := stated.Dial(dctx, addr, stated.WithBlock())
		cancel()
		if err != nil {
			return fmt.Errorf("dial stated at %s: %w", addr, err)
		}
		defer client.Close()
		counts := stated.NewCounter(client, ns)
		p, err := kafka.New(kafka.Config{
			State:  client,
			Group:  group,
			Topics: []string{topic},
			// A killed processor's partitions move to the next one after
			// the session timeout; the rebalance timeout follows it (see
			// examples/counter's groupTimeouts for why not longer).
			KafkaOptions: []kgo.Opt{kgo.SeedBrokers(strings.Split(brokers, ",")...),
				kgo.SessionTimeout(session), kgo.HeartbeatInterval(session / 5), kgo.RebalanceTimeout(session)},
			MaxPollRecords: maxPoll,
			Logger:         logger,
			Handler: func(_ context.Context, txn *stated.Txn, r *kgo.Record) error {
				counts.In(txn).Add(string(r.Key), 1)
				return nil
			},
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "demo processor: counting %s into namespace %q as group %q\n", topic, ns, group)
		err = p.Run(ctx)
		if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
			return nil
		}
		return err
	})
	f := cmd.Flags()
	f.StringVar(&addr, "stated", "", "stated addresses, comma-separated")
	f.StringVar(&brokers, "brokers", "", "Kafka brokers, comma-separated")
	f.StringVar(&topic, "topic", "", "topic to count")
	f.StringVar(&group, "group", "", "Kafka consumer group, and the group of the offsets in stated")
	f.StringVar(&ns, "namespace", "", "stated namespace of the per-key counters")
	f.IntVar(&maxPoll, "max-poll-records", 200, "records per poll and per stated commit")
	f.DurationVar(&session, "session-timeout", time.Second, "Kafka group session (and rebalance) timeout")
	f.BoolVar(&verbose, "v", false, "log the processor's decisions")
	return cmd
}
