package raftstore

import "errors"

var (
	// ErrNotLeader is returned by writes and linearizable reads on a node
	// that is not the Raft leader.
	ErrNotLeader = errors.New("raftstore: not leader")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("raftstore: closed")
	// ErrClusterMismatch is returned by Open when the data directory
	// belongs to another node or cluster.
	ErrClusterMismatch = errors.New("raftstore: data directory belongs to another node")
)
