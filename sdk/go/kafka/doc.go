// Package kafka runs a franz-go consumer whose state and offsets live in
// stated, so that every record's effect on the state is applied exactly
// once, across crashes, restarts and rebalances.
//
// A Processor joins the consumer group with Kafka's auto-commit off. When
// Kafka assigns it partitions it claims them in stated, which gives each a
// new epoch and fences out every earlier owner (a zombie after a rebalance
// or a long pause), and it starts each partition at the offset stored in
// stated. For each poll it runs the handler, which adds state changes to a
// stated transaction, and commits them together with the partitions' next
// offsets, atomically. A crash at any point leaves stated either before or
// after a whole batch, and the restarted processor resumes from exactly
// the offsets of the state it finds.
//
//	p, err := kafka.New(kafka.Config{
//		State:        client, // a *stated.Client of its own
//		Group:        "billing",
//		Topics:       []string{"orders"},
//		KafkaOptions: []kgo.Opt{kgo.SeedBrokers("kafka:9092")},
//		Handler: func(ctx context.Context, txn *stated.Txn, r *kgo.Record) error {
//			totals.In(txn).Add(string(r.Key), 1)
//			return nil
//		},
//	})
//	if err != nil {
//		return err
//	}
//	return p.Run(ctx)
//
// The handler must put every effect of a record into the transaction: it
// may run more than once for one record (after a handler error, or when
// part of a batch was fenced), and only the run whose transaction commits
// counts. Effects outside stated (an HTTP call, a produce) are at least
// once.
//
// # Kafka's committed offsets
//
// The Processor never reads Kafka's committed offsets for the group, and
// never commits the position it has processed to Kafka: stated is the
// source of truth, and where a partition starts comes from stated.
//
// It does commit offsets to the Kafka group, for lag tools, and only the
// offsets of the newest completed stated checkpoint. Every
// Config.KafkaCommitInterval (5s by default; a negative interval turns it
// off), between two batches, while no rebalance can run, it reads the
// group's checkpointed offsets from its stated node (GetGroup, local
// read) and commits to Kafka, with leader epoch -1, those of the
// partitions it owns that moved past what it committed last. A failure is
// logged and retried at the next interval. So Kafka's committed offsets
// trail the checkpoints and never run ahead of a recoverable one. An idle
// processor still does it: a poll waits at most one interval. The daemon
// commits the same checkpointed offsets itself after each checkpoint when
// it is configured with Kafka brokers, but Kafka accepts them only while
// the group has no members; while processors run, theirs are the commits
// that land.
//
// # Never waiting silently
//
// Whatever the Processor waits for longer than Config.WaitLogInterval (10s
// by default) it logs as a warning ("kafka: processor waiting"), again at
// every interval while it lasts, and says when the wait ended ("kafka:
// processor no longer waiting"). Each line carries waiting_on, the
// WaitKind, and side, "kafka" or "stated", so that a stall of the broker
// (a consumer group rebalance that does not complete, partitions fenced
// and not reassigned) is told apart from a stall of stated (a commit or a
// claim that the client keeps retrying). Processor.Stats reports the same
// at any time, with counters for metrics.
package kafka
