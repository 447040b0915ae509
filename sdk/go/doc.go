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
// # Counters
//
// Adds to one counter key in one Txn, as in the loop above, are sent as one
// add of their sum when that changes nothing observable: the adds have the
// same TTL and deltas of one sign (zero goes with either), their sum fits in
// an int64, and no other mutation of the key (Put, Delete, a DeletePrefix
// covering it) comes between them; otherwise a new run starts. The daemon
// refuses a commit whose add takes a counter out of int64; because the
// partial sums of a run move one way, the merged commit is refused exactly
// when the unmerged one would be, and the counters end equal either way. A
// refused field is named by its index in the Txn as built; a merged add's
// refusal names the run's first add and reports the run's sum. Txn.Len
// counts the mutations as built.
//
// The Txn merges as it is built: an add that joins its key's run only adds
// its delta to the run's first add, about 30 ns and no allocation, so a
// handler may add once per record (the Kafka processor's Handler does)
// rather than summing per key itself. The daemon's limit of 100,000
// mutations per commit applies to the Txn as built: a Txn built of more
// is refused with ErrInvalidArgument, as the daemon refuses such a commit,
// without being sent.
//
// # Windows
//
// A window namespace (DefineWindows, immutable once defined) keeps
// event-time windows in the daemon: tumbling, hopping or session, with a
// grace, a maximum out-of-orderness and an Aggregate. Txn.AddWindow adds a
// record in the same commit as the offsets it accounts for; each source
// partition (FromSource) has a watermark, and the daemon closes a window
// once the namespace's watermark passes its end plus its grace. A closed
// window becomes an Emission, returned in CommitResult.Emissions of the
// commit that closed it and kept in the namespace's outbox until a later
// Txn acknowledges it (Txn.Ack) together with what the service did with
// it; Client.Emissions reads the pending ones after a crash:
//
//	res, err := c.Update(ctx, func(t *stated.Txn) error {
//		t.AddWindow("clicks", key, eventTime, stated.NoValue(), stated.FromSource("clicks/3"))
//		t.CommitOffset("clicks-per-minute", "clicks", 3, next)
//		return nil
//	})
//	// later, with the results written:
//	_, err = c.Update(ctx, func(t *stated.Txn) error { t.Ack(res.Emissions...); return nil })
//
// CommitResult.Adds says which records were late. A full outbox refuses
// adds with ErrOutboxFull. docs/WINDOWS.md has the whole story.
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
// WithMinIndex(i) makes a read wait for index i too: a service that got i
// from another client's commit (through another replica) reads that
// commit on any replica (examples/userstore passes it in a header).
//
// # Sessions
//
// Every Client commits in a client session. Dial opens one for the
// Client's id (WithClientID, random by default) as a replicated command,
// before it returns with WithBlock and in the background otherwise; a
// commit waits for it. The session lives in the cluster's replicated state,
// so it survives reconnects, a daemon's restart and leader failover.
//
//   - Each commit in flight takes a lane of the session: an ordered stream
//     of commits with its own sequence numbers (the Client keeps one lane
//     per commit it has in flight at once, and reuses them). Every attempt
//     of a commit carries the same session, lane and sequence. The daemon
//     keeps, per lane, the highest sequence applied, a hash of its
//     mutations and offsets, and its index: a retry is answered with the
//     original index (CommitResult.Duplicate is set) and applies nothing;
//     anything else at or below that sequence is refused, never
//     acknowledged.
//   - Opening a session fences every older session of the same client id:
//     their commits fail with ErrSessionFenced (a *SessionError), and a
//     fenced Client stays fenced. A process restarted with a fixed client
//     id therefore fences its own zombie, and never has a commit taken for
//     a retry of the dead process's. The daemon forgets an expired
//     session, so a zombie not yet fenced whose successor's session
//     expired (idle past the timeout) opens a session again at its next
//     commit, fencing the successor. Every attempt of one open proposes
//     the same session id, and an open of the current session changes
//     nothing, so an attempt that applies after the retry that succeeded
//     does not fence the Client that made both. The daemon refuses an
//     attempt whose session already ended (its first attempt applied, the
//     answer was lost, and the session expired or another process's open
//     replaced it before the retry); the Client then opens the session
//     again under a new id, and the commits waiting for it go on, unless
//     another process's session replaced it: that process opened last, and
//     this Client is fenced (ErrSessionFenced).
//   - A session expires after the daemon's --session-idle-timeout (default
//     1 hour) without a commit, judged by the leader's clock written into
//     the log. The next commit on it is refused as not open; if that was
//     the commit's first attempt, the Client opens a new session and sends
//     it there, so an idle Client notices nothing. If an earlier attempt
//     of the commit may have applied before the session expired, Commit
//     returns ErrSessionExpired instead: its outcome is unknown. The same
//     holds for a commit retried since before the expiry that finds the
//     Client's next session already open (another of its commits opened
//     it): the daemon refuses it as superseded, but by the Client's own
//     session, which is no fence.
//   - A cluster restored from a checkpoint has dropped every session, so
//     its Clients' commits go as after an expiry. Its Raft log starts
//     again, below the Client's LastIndex: the new session's open tells
//     the Client, whose reads then wait for its commits in the new log.
//     A read before that first commit still waits for LastIndex, which
//     the new log may not reach before the read's ctx ends.
//   - The open answers the cluster's lineage (Client.Lineage): its id, or
//     for a cluster restored from a checkpoint the lineage of the cluster
//     the checkpoint came from. From then on every call of the Client
//     carries it, and a daemon of another cluster refuses the call with
//     ErrOtherCluster before doing anything, instead of opening a session
//     for a Client whose address came to reach it (a reused port or pod
//     IP). A restored copy of the Client's cluster serves it.
//
// WithLazySession opens the session at the first commit instead, for
// clients that mostly read.
//
// # Commit coalescing
//
// While one of a Client's commits is on its way to the daemon, the commits
// its other goroutines send wait; when it returns, all that waits goes
// together, as one request of the Client's CommitStream, which the daemon
// serves as a CommitBatch call. A lone commit goes at once, so coalescing
// adds no delay; under concurrency it spares most of the per-call cost of
// gRPC on both sides, and the stream spares each request the set-up,
// headers and trailers of a unary call (about half its round trip).
// When a request of several commits is answered, its callers get a
// moment (until none has committed again for 20 µs, 250 µs at most) to
// send their next commits before the next request leaves, so that
// goroutines committing in a loop ride one request together instead of
// taking turns in two halves; a lone commit never waits for it.
// Nothing else changes: each commit
// holds its own lane and sequence, the daemon checks, authorizes and
// applies it as a Commit (the commits of one call go to Raft as one entry
// and share its index), and each Commit call returns its own result or
// error and retries on its own. Commits sent together apply in the order
// they were queued, which concurrent callers cannot rely on. A commit of
// more than 16 writes (mutations, offsets and window adds) never waits: it
// goes at once as its own call, since its writes cost more than a call and
// waiting would only hold it back. WithCommitCoalescing(false) sends
// every commit as its own Commit call.
//
// The stream is opened at the first commit and kept. When it breaks, the
// commits whose answers it took are retried as any call cut off is (see
// Retries; their sessions make that safe), and the next request goes on a
// new stream; one that found the stream already ended, before anything of
// it was sent, goes on a new stream at once, without counting as an
// attempt. A request not answered within its callers' latest deadline and
// a second more gives the stream up (DeadlineExceeded, retried). A
// stopping daemon ends its streams once it has answered the request it is
// serving. Against a daemon without CommitStream (an older release) the
// Client sends CommitBatch calls, a lone commit as a plain Commit, and
// against one without CommitBatch plain Commits. It tries a stream again
// a minute after each Unimplemented answer, so that a Client whose daemon
// is upgraded while it runs goes back to the stream; a try costs one
// stream the daemon refuses at once, and its commits go as calls.
//
// # Retries
//
// A call that fails with Unavailable (the daemon is unreachable, shutting
// down, or between leaders: "not leader; leader is X") or whose attempt
// ran out of time (WithAttemptTimeout, default 5 s) is sent again, after
// an exponential, jittered backoff from 20 ms up to 1 s, until it
// succeeds or the caller's ctx ends; then the last attempt's error is
// returned. When the ctx ends during an attempt that came after refusals
// (Unavailable), the error is the ctx's (it matches
// context.DeadlineExceeded or context.Canceled), its message ends with
// the last refusal, and LastRefusal(err) returns that refusal: a call
// that kept meeting "no leader is known" does not read as a daemon that
// never answered. A retried commit carries the same session, lane and sequence
// as the first attempt, so a retry never applies a commit twice (see
// Sessions). InvalidArgument, FailedPrecondition, ResourceExhausted,
// NotFound and cancellation are never retried, with one exception: a
// commit answered ResourceExhausted (but for a full outbox or a nearly
// full disk on the leader) is sent again
// alone, up to twice, since the message too large may have been its
// answer, after it applied (the emissions of the windows it closed, or of
// another commit coalesced with it). The retry is answered as a
// Duplicate, without emissions; a commit itself too large is refused
// again, having applied nothing. Reads retry the same way; a
// Scan retries only until its first batch arrives. RemoveMember is never
// retried. WithoutRetries makes every call a single attempt.
//
// While the daemon cannot be reached, the Client tries to connect again
// with a backoff from 100 ms growing to DefaultReconnectBackoff (1 s;
// WithWaitForDaemon sets another bound), rather than gRPC's default, which
// grows to two minutes: a call retried through a daemon's restart goes
// through within about a second of its return. It pings the daemon after
// 10 s without a word from it and drops a connection whose ping goes
// unanswered for 3 s, so that a daemon whose host died or was cut off
// without a reset does not hold the Client's calls for the quarter of an
// hour the kernel keeps such a connection: the Client connects again, to
// another of its addresses if it was given several.
//
// # Errors
//
// The daemon is the one judge of names, sizes and limits; the SDK sends what
// it is given. Errors from the daemon keep their gRPC code (status.Code
// works on them) and message, which names the offending field, and match
// ErrInvalidArgument, ErrFailedPrecondition, ErrUnavailable,
// ErrResourceExhausted, context.DeadlineExceeded or context.Canceled with
// errors.Is; refusals by a session also match ErrSessionFenced or
// ErrSessionExpired, a commit refused for a full window outbox
// ErrOutboxFull, one refused because the leader's data disk has less
// free space than its --min-free-disk ErrDiskFull (nothing of it
// applied; it goes through once there is room), and a call refused by a daemon of another cluster
// ErrOtherCluster. A commit that fails with ErrUnavailable, a context
// error, ErrSessionExpired or ErrClosed (the Client closed while it was in
// flight) may or may not have been applied, and so may
// one fenced (ErrSessionFenced) while it was being retried: its error
// says that its outcome is unknown.
//
// The SDK never imports the daemon's packages: it speaks only the stated.v1
// gRPC contract (package statedv1).
package stated
