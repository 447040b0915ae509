// Package daemon wires a stated node together: it opens the replicated
// store (raftstore) in the data directory, serves the gRPC API (grpcapi),
// the standard gRPC health service and server reflection on a unix socket
// and optionally TCP, and runs the leader's background work (deleting
// expired entries).
//
// It holds no logic of its own beyond that wiring: validation and the
// mapping of errors to gRPC codes live in grpcapi, replication and storage
// in raftstore. Start returns once the node knows a Raft leader, so a
// started daemon can take writes (on a single node) at once; Close stops
// everything it started and is safe to call twice.
//
// The unix socket doubles as a liveness lock: Start refuses to run when
// another daemon answers on it, and removes it only when nobody does (a
// crash leaves the file behind).
//
// Not yet: forwarding writes from followers to the leader (a follower
// answers Unavailable), checkpoints, Kafka and metrics.
package daemon
