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
// The Processor neither reads nor commits Kafka's offsets for the group:
// stated is the source of truth, and Kafka's committed offsets (which lag
// tools read) are left to the daemon.
package kafka
