// Package fsm is stated's replicated state machine: it applies Raft log
// entries (see package command) to a Pebble database.
//
// Guarantees:
//   - Each entry is applied atomically, or, if it is rejected (an offset
//     moving backwards, a counter overflow), not at all. Every replica
//     rejects the same entries. The entries of one batch (FSM.Batching)
//     share one Pebble batch, committed with the Raft index of the last
//     of them (a checkpoint barrier commits what comes before it); each
//     reads the state through that batch, so it sees the entries before
//     it exactly as if they had been applied one by one.
//   - Apply is deterministic: it reads no clock, draws no random number and
//     never depends on map iteration order. Time arrives in the command.
//   - Pebble writes are not synced: the Raft log is the durable record. On
//     restart entries at or below the stored applied index are skipped.
//     Snapshot syncs Pebble's WAL first, so the state is never behind a Raft
//     snapshot that lets Raft compact its log.
//   - Restore replaces the whole state with the snapshot's.
//   - A changelog barrier (command.Command.Changelog) makes no local
//     checkpoint: it returns the state's cut as of itself. ReplayChangelog
//     applies the Raft log's entries from changelog segments
//     (ChangelogWriter) onto an earlier checkpoint's tables through the
//     same apply path, and refuses a result that is not the cut it was
//     given. With CaptureChangelog on (the leader, while changelog
//     checkpoints are), the apply loop also keeps each command entry it
//     applies, as its segment record, in memory, and every barrier hands
//     over what it kept since the one before (CheckpointResult.Captured):
//     a segment is then made of it in memory (CapturedChangelog.Segment),
//     not read back from the Raft log into a file.
//
// Key layout (see keys.go) keeps (namespace, key, kind, sub-key) in Pebble's
// byte order, so a namespace, a key or a key prefix is one contiguous range.
//
// The FSM must never do I/O beyond its own Pebble directory and its local
// checkpoints; changelog segments are written and read by package
// functions outside the apply path.
package fsm
