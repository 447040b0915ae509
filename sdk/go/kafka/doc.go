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
// New joins the group at once; Run closes the Processor when it returns.
// A Processor that will not Run (the application failed in between) is
// closed with Close, which leaves the group and releases its claims.
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
// # Window state
//
// A handler adds records to window namespaces with Txn.AddWindow, in the
// batch's transaction, so each record counts once in its windows, with
// its offset. The processor makes each record's partition the source of
// the adds its Handler makes (Txn.SetDefaultSource(kafka.SourceOf(r))):
// every partition is then a watermark source of its own, and a
// partition that lags holds the namespace's watermark back until it
// catches up or goes idle. Processor.OnWindowClosed(ns, fn) hands the
// namespace's emissions (closed windows, updates, timers) to fn in a new
// transaction that also acknowledges them, so the application's use of
// an emission and its acknowledgement commit together:
//
//	p.OnWindowClosed("clicks-per-minute", func(ctx context.Context, txn *stated.Txn, ems []stated.Emission) error {
//		for _, e := range ems {
//			totals.In(txn).Add(string(e.Key), e.Count)
//		}
//		return nil
//	})
//
// The processor delivers the emissions each of its commits returns right
// after the commit, and at start, after an error and every
// Config.OutboxInterval it reads the namespace's outbox for pending ones
// (left by a crash before their acknowledgement, or closed by the
// daemon's tick when a source went idle), so every emission is delivered
// until one delivery commits, and never after. A callback that fails
// holds the processor (nothing more is consumed) until it succeeds. When
// a namespace's outbox is full, stated refuses the batches that add to
// it; the processor delivers the pending emissions and commits the batch
// again. On assignment the processor registers each partition as a
// source of every namespace with a callback (a watermark hint at 0), so
// that a partition whose first records come late is not counted late.
//
// # Never waiting silently
//
// Whatever the Processor waits for longer than Config.WaitLogInterval (10s
// by default) it logs as a warning ("kafka: processor waiting"), again at
// every interval while it lasts, and says when the wait ended ("kafka:
// processor no longer waiting"). Each line carries waiting_on, the
// WaitKind, and side, "kafka" or "stated", so that a stall of the broker
// (a consumer group rebalance that does not complete, partitions fenced
// and not reassigned, fetches that keep failing) is told apart from a
// stall of stated (a commit or a claim that the client keeps retrying).
// Processor.Stats reports the same at any time, with counters for
// metrics.
//
// # When Kafka lost what stated points at
//
// stated's offsets say where each partition goes on. When Kafka no longer
// holds those records, the processor does not go on silently: an offset
// past a claimed partition's end (the topic deleted and created again,
// acknowledged records lost by the brokers) stops Run with
// ErrOffsetPastLogEnd before any record of it is processed; a topic whose
// fetches keep failing with UNKNOWN_TOPIC_ID (deleted, or recreated under
// a new id, which the Kafka client does not follow) stops it with
// ErrTopicRecreated after 10 s; records deleted before they were
// processed (retention, DeleteRecords), found at a claim or while
// consuming, are skipped with a warning naming the partition and how
// many, counted in Stats.Lost. The Kafka client's own warnings go to
// Config.Logger too.
package kafka
