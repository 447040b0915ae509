package raftstore

import "github.com/statedhq/stated/raftstore/fsm"

// SnapshotCounts returns how many Raft snapshots this node took (persisted
// by its state machine) and installed (restored into its state: sent by
// the leader, or its own newest one when it started behind it) since the
// store was opened. Cheap: for metrics.
func (s *Store) SnapshotCounts() fsm.SnapshotCounts { return s.fsm.SnapshotCounts() }

// ApplyCounts are the batches of entries this node's state machine
// applied since it started, and the entries in them; cheap.
func (s *Store) ApplyCounts() fsm.ApplyCounts { return s.fsm.ApplyCounts() }
