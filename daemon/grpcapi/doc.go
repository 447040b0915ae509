// Package grpcapi serves the stated.v1 State, Cluster, Checkpoints and
// Windows services over a Store.
//
// It is a thin adapter: it validates every request, converts it to a
// raftstore command or read, and maps errors to gRPC status codes in one
// place (toStatus in errors.go). Validation runs before anything is
// proposed, so a refused commit changes nothing and costs no Raft entry;
// the state machine's own refusals (an offset lower than the stored one)
// come back as InvalidArgument too, also with nothing applied, though they
// took a Raft entry (the applied index moves past it). Every
// InvalidArgument message starts with the path of the offending field, e.g.
// "mutations[3].key: empty".
//
// # Limits
//
// | what                         | limit                                                        |
// | ---------------------------- | ------------------------------------------------------------ |
// | namespace                    | 1..256 bytes, valid UTF-8, no control characters             |
// | key                          | 1..4096 bytes (DELETE_PREFIX: 0..4096, empty = whole namespace) |
// | sub_key                      | 1..4096 bytes for MAP_PUT and MAP_DELETE; empty otherwise     |
// | value                        | 0..4 MiB (4,194,304 bytes); only PUT, MAP_PUT, LIST_APPEND    |
// | delta                        | only COUNTER_ADD                                              |
// | ttl_millis                   | 0 (never) .. 100 years; only PUT, MAP_PUT, LIST_APPEND, COUNTER_ADD |
// | mutations per commit         | 100,000                                                       |
// | commits per CommitBatch      | 1,024                                                         |
// | offsets per commit           | 10,000; one per (group, topic, partition)                     |
// | group                        | 1..255 bytes                                                  |
// | topic                        | 1..249 characters of [a-zA-Z0-9._-], not "." or ".."          |
// | partition, offset            | ≥ 0; an offset never goes below the stored one                |
// | client_id                    | 0..256 bytes; sequence needs a client_id                      |
// | scan key, prefix, start, end | 0..4096 bytes                                                 |
// | window_adds / watermark_hints / acks / timers per commit | 100,000 / 10,000 / 100,000 / 100,000 |
// | window namespace             | 1..256 bytes, valid UTF-8                                     |
// | window key, timer key        | 1..4096 bytes                                                 |
// | source                       | 0..256 bytes, valid UTF-8 ("" is the default source)          |
// | event_time_ms, time_ms       | 0 .. 2^53-1                                                   |
// | float_value                  | finite (no NaN or ±Inf)                                       |
// | acks                         | id ≥ 1; one per (namespace, id); must be pending              |
// | window read page (limit)     | 0 (= 1000) .. 10,000                                          |
// | savepoint name               | 1..128 of [a-zA-Z0-9._-], not "." or ".."; a new one not "latest" nor all digits |
// | join raft_addr, grpc_addr    | host:port with a port (1..65535 when a number)                |
// | whole message                | the daemon's MaxMessageBytes (default 64 MiB): ResourceExhausted |
//
// Commit and CommitBatch requests of 1 MiB or more also share a budget of
// bytes worked on at once (WithLargeRequestBudget; the daemon's
// MaxInflightRequestBytes, default 128 MiB): one beyond it waits, and is
// answered DeadlineExceeded, unproposed, if its deadline passes first.
//
// # Forwarding
//
// Commits, Join, Remove, Windows.Define and LINEARIZABLE reads (Get, Scan,
// GetOffsets and the Windows reads) need the leader. A follower given a
// Forwarder sends them on to the leader's gRPC address (from the cluster
// metadata) and passes its answer back
// unchanged, marking the call with the metadata key ForwardedKey and its
// cluster id under ClusterIDKey. A forwarded call that lands on a node
// that is no longer the leader is not forwarded again: it fails
// Unavailable ("not leader; leader is X") and the client retries; so does
// any such call while no leader is known, and one that lands on a node of
// another cluster (the leader's address was reused), which serves nothing
// of it. A call already forwarded when the follower loses the leader (a
// partition) fails Unavailable when the connection to the leader does:
// the daemon's connections to other nodes ping after 10 s without a
// frame and close when a ping goes unanswered for 3 s, so a call without
// a deadline does not wait for the partition to heal. LOCAL and
// SESSION reads are served by whichever node receives them (SESSION first
// waits until the node has applied min_index). Members and NodeStatus
// answer from the receiving node.
//
// # Lineage
//
// OpenSession answers the cluster's lineage: its id, or for a cluster
// restored from a checkpoint the lineage of the cluster the checkpoint
// came from. A client sends it on every later call under LineageKey, and
// LineageCheck, an interceptor the daemon chains after the token check,
// refuses a call of another lineage FailedPrecondition with a
// LineageRefused detail before any handler runs: the client's address
// reaches an unrelated cluster, which must neither open a session for it
// nor apply its commits.
//
// Reads: Get reads KIND_VALUE, KIND_COUNTER or KIND_MAP (with sub_key).
// Scan of KIND_MAP or KIND_LIST needs the key of the one map or list; other
// scans take no key and bound keys with prefix, start and end.
//
// # Error codes
//
// | cause                                                    | code             |
// | -------------------------------------------------------- | ---------------- |
// | a request that breaks a limit or a rule above            | InvalidArgument  |
// | no leader known, or a forwarded call reached a follower  | Unavailable      |
// | this node lost leadership during the call                | Unavailable      |
// | a join whose node id or address is taken, or whose data is another cluster's | FailedPrecondition |
// | a join whose raft_addr the leader cannot reach           | Unavailable      |
// | removing a node that is not a member                     | NotFound         |
// | removing the only voter                                  | FailedPrecondition |
// | an offset of a partition claimed by another owner or at an older epoch (FencedPartition detail) | FailedPrecondition |
// | a commit in a session that is not open, was superseded, or reuses a sequence (SessionRefused detail) | FailedPrecondition |
// | a call of another lineage (LineageRefused detail)        | FailedPrecondition |
// | a checkpoint or savepoint that is not in the bucket      | NotFound         |
// | deleting the newest or a pinned checkpoint, or a checkpoint of another format or corrupt | FailedPrecondition |
// | a checkpoint at or below the bucket's newest (uploader.ErrBucketAhead) | FailedPrecondition |
// | the node is shutting down (a commit's outcome is then unknown if it was proposed) | Unavailable |
// | the caller's deadline passed (a commit's outcome is then unknown) | DeadlineExceeded |
// | the caller cancelled                                     | Canceled         |
// | a request larger than MaxMessageBytes                    | ResourceExhausted |
// | a commit that adds to or hints a window namespace whose outbox is full (OutboxFull detail) | ResourceExhausted |
// | anything else (logged)                                   | Internal         |
//
// Scans stream batches of at most 256 entries or about 1 MiB, and are not
// a point-in-time view across batches (see Server.Scan).
package grpcapi
