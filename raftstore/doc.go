// Package raftstore is stated's replicated store: a hashicorp/raft node whose
// log and stable store are raft-boltdb (bbolt) or raft-wal (Config.LogStore)
// and whose state machine is package fsm over Pebble. A data dir keeps the
// log store it was created with: Open refuses to open it with the other one
// (ErrLogStoreMismatch) rather than start an empty log beside it.
//
// A Store accepts commits on the leader, stamps them with the leader's time,
// proposes them as one Raft entry each, and returns once the local state
// machine has applied them. Reads go to the local Pebble after a read
// barrier (local, session or linearizable).
//
// Durability: the Raft log is fsynced before a commit is acknowledged;
// Pebble is not. On Open, if the state machine is behind the newest Raft
// snapshot (a crash during restore, or unsynced Pebble writes lost with the
// machine), the snapshot is restored before Raft starts, because Raft only
// replays the entries after its newest snapshot. "Behind" compares the
// applied index the snapshot holds, not its Raft index, which also counts
// entries the state machine never sees.
//
// Open first completes or rolls back a restore swap a crash interrupted
// (InstallRestoredState, RecoverDataDir), and refuses state that has
// applied entries but no Raft log (ErrStateWithoutLog): a log bootstrapped
// on it would have its first entries skipped as already applied.
//
// raftstore knows nothing of gRPC, Kafka or blob storage.
package raftstore
