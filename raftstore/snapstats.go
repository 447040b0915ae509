package raftstore

import "github.com/statedhq/stated/raftstore/fsm"

// SnapshotCounts returns how many Raft snapshots this node took (persisted
// by its state machine) and installed (restored into its state: sent by
// the leader, or its own newest one when it started behind it) since the
// store was opened. Cheap: for metrics.
func (s *Store) SnapshotCounts() fsm.SnapshotCounts { return s.fsm.SnapshotCounts() }

// StorageStats reports the state's Pebble database: memory, disk, the
// LSM tree's shape, flushes, compactions and write stalls. Cheap: for
// metrics.
func (s *Store) StorageStats() fsm.StorageStats { return s.fsm.StorageStats() }
