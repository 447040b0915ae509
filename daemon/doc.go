// Package daemon wires a stated node together: it opens the replicated
// store (raftstore) in the data directory, serves the gRPC API (grpcapi),
// the standard gRPC health service and server reflection on a unix socket
// and optionally TCP, and runs the leader's background work: deleting
// expired entries and idle sessions, ticking window namespaces, and
// coordinating checkpoint epochs (checkpoint.go) with their upload to the
// bucket (uploader) and the commit of their offsets to Kafka (kafka.go).
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
// # Clusters
//
// A node bootstraps a new cluster when its data dir has no Raft state and
// Config.Join is empty. With Join and no Raft state it opens its store
// without bootstrapping, asks the Join addresses (gRPC Cluster.Join, in
// turn, retried with backoff for Config.JoinTimeout) to add it as a voter,
// and serves only once it has applied the metadata entry that recorded its
// own membership, so that it never serves state older than its join. A
// node with Raft state is a member already and ignores Join. A refused join
// (FailedPrecondition: id or address taken, another cluster's data) or
// Join addresses that are not stated nodes fail Start with the reason.
//
// Config.BootstrapNodeID lets every member run with one Join list (a
// Kubernetes StatefulSet): the node it names asks the other Join
// addresses whether a cluster exists, bootstraps one only if none does,
// and joins otherwise; Config.AdvertiseRaftAddr keeps a DNS name in the
// Raft configuration, so that a pod that comes back with another IP is
// still reached.
//
// A follower forwards the calls only the leader can serve (commits, joins,
// removals, linearizable reads) over gRPC to the leader's advertised
// address, which Raft replicates as cluster metadata; connections are
// cached per address and closed by Close. Local and session reads are
// served on every node. See grpcapi for the forwarding rules.
//
// Restores and the recovery report are in daemon/recovery. With
// Config.MetricsAddr the daemon serves Prometheus metrics from a registry
// of its own (metrics.go, daemon/metrics): gRPC interceptors, and
// collectors that read the store's, the checkpoint coordinator's and the
// Kafka committer's counters at scrape time.
package daemon
