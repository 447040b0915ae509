// Package stated is the Go client of the stated daemon, which keeps the
// state of a stream-processing service replicated (Raft) and durable
// (Pebble), together with the Kafka offsets that belong to it.
//
// # Connecting
//
// Dial the daemon beside the service, on its unix socket or on TCP, and
// share the Client:
//
//	c, err := stated.Dial(ctx, "unix:///var/run/stated/stated.sock")
//	if err != nil {
//		return err
//	}
//	defer c.Close()
//
// Any member of a cluster serves every call (followers forward writes and
// linearizable reads to the leader). Give Dial several members,
// comma-separated, and the Client talks to the first that accepts a
// connection and moves to another when that one goes away:
//
//	c, err := stated.Dial(ctx, "10.0.0.1:7420,10.0.0.2:7420,10.0.0.3:7420")
//
// # State
//
// A namespace holds keys; a key may hold a value, a map (ordered sub-keys),
// a list (append order) and a counter (added to on the daemon). Keys,
// sub-keys and values are bytes. The typed handles Value, Map, List and
// Counter add string keys and a Codec for the values (Bytes, String,
// Int64, JSON, Proto, or your own):
//
//	type Order struct{ ID string; Cents int64 }
//	orders := stated.NewValue(c, "orders", stated.JSON[Order]())
//	if err := orders.Put(ctx, "o-17", Order{ID: "o-17", Cents: 1250}); err != nil {
//		return err
//	}
//	o, found, err := orders.Get(ctx, "o-17")
//
// # Transactions and offsets
//
// A Txn carries state changes and the Kafka offsets they account for, and
// the daemon applies all of it atomically in one Raft entry. Restoring a
// checkpoint therefore always yields state that matches its offsets:
//
//	totals := stated.NewCounter(c, "totals")
//	_, err = c.Update(ctx, func(t *stated.Txn) error {
//		for _, r := range records {
//			totals.In(t).Add(string(r.Key), 1)
//		}
//		t.CommitOffset("billing", "orders", partition, last.Offset+1)
//		return nil
//	})
//
// After a restart, GetOffsets says where to resume consuming.
//
// # Partition claims and fencing
//
// A consumer that owns partitions claims them (Claim): each gets a new
// epoch, and the daemon then refuses, with a *FencedError, every commit
// that moves one of their offsets without the claimant's client id and the
// current epoch (Txn.CommitClaimedOffset). A zombie (a consumer that lost
// its partitions in a rebalance without noticing) therefore cannot move
// state or offsets after the new owner has claimed them. Claim returns the
// stored offsets, which is where the new owner resumes. Package
// sdk/go/kafka does all of this for a franz-go consumer group.
//
// # Consistency
//
// Every commit returns its Raft index, and the Client remembers the highest
// (LastIndex). By default a read waits until the daemon has applied that
// index, so a Client always reads its own writes, on any replica
// (ConsistencySession). WithConsistency and WithDefaultConsistency choose
// ConsistencyLocal (no waiting) or ConsistencyLinearizable instead.
//
// # Retries
//
// A call that fails with Unavailable (the daemon is unreachable, shutting
// down, or between leaders: "not leader; leader is X") or whose attempt
// ran out of time (WithAttemptTimeout, default 5 s) is sent again, after
// an exponential, jittered backoff from 20 ms up to 1 s, until it
// succeeds or the caller's ctx ends; then the last attempt's error is
// returned. A retried commit carries the same client id and sequence
// number as the first attempt, and the daemon applies a (client id,
// sequence) once and answers a repeat with the original index, so a retry
// never applies a commit twice (within the daemon's de-duplication window
// of an hour). InvalidArgument, FailedPrecondition, ResourceExhausted,
// NotFound and cancellation are never retried. Reads retry the same way; a
// Scan retries only until its first batch arrives. RemoveMember is never
// retried. WithoutRetries makes every call a single attempt.
//
// # Errors
//
// The daemon is the one judge of names, sizes and limits; the SDK sends what
// it is given. Errors from the daemon keep their gRPC code (status.Code
// works on them) and message, which names the offending field, and match
// ErrInvalidArgument, ErrFailedPrecondition, ErrUnavailable,
// ErrResourceExhausted, context.DeadlineExceeded or context.Canceled with
// errors.Is. A commit that fails with ErrUnavailable or a context error may
// or may not have been applied.
//
// The SDK never imports the daemon's packages: it speaks only the stated.v1
// gRPC contract (package statedv1).
package stated
