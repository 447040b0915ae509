package raftstore

import "errors"

var (
	// ErrNotLeader is returned by writes and linearizable reads on a node
	// that is not the Raft leader.
	ErrNotLeader = errors.New("raftstore: not leader")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("raftstore: closed")
	// ErrOutcomeUnknown is returned, with the reason (a context's error,
	// or ErrClosed when Raft shut down), by a write whose entry was
	// proposed and may still have committed: a retry with the same
	// client id and sequence learns which.
	ErrOutcomeUnknown = errors.New("raftstore: commit outcome unknown")
	// ErrClusterMismatch is returned when a data directory or a joining
	// node belongs to another node or cluster.
	ErrClusterMismatch = errors.New("raftstore: belongs to another node or cluster")
	// ErrMemberConflict is returned by Join when the node id is a member at
	// another address, or the address is used by another member.
	ErrMemberConflict = errors.New("raftstore: member conflict")
	// ErrUnknownMember is returned by Remove for a node that is not a
	// member.
	ErrUnknownMember = errors.New("raftstore: unknown member")
	// ErrUnreachable is returned by Join when the leader cannot reach the
	// joining node's Raft address.
	ErrUnreachable = errors.New("raftstore: the joining node's raft address cannot be reached")
	// ErrLastVoter is returned by Remove for the cluster's only voter.
	ErrLastVoter = errors.New("raftstore: the last voter cannot be removed")
	// ErrNoOtherVoter is returned by TransferLeadership in a cluster
	// whose only voter is this node.
	ErrNoOtherVoter = errors.New("raftstore: no other voter to hand leadership to")
	// ErrStateWithoutLog is returned by Open when the data dir holds
	// state that has applied entries but no Raft log.
	ErrStateWithoutLog = errors.New("raftstore: state without a Raft log")
	// ErrRestoredStateJoins is returned by Open when the data dir holds
	// state restored from a checkpoint, which starts a new cluster, and
	// no Raft state, and the node was not told to bootstrap: it would
	// join a cluster, whose log would then apply on top of the restored
	// state.
	ErrRestoredStateJoins = errors.New("raftstore: restored state cannot join a cluster")
	// ErrLogStoreMismatch is returned by Open when the data dir's Raft
	// log is another kind of store than Config.LogStore asks for.
	ErrLogStoreMismatch = errors.New("raftstore: Raft log store mismatch")
	// ErrDataDirInUse is returned by InstallRestoredState when a running
	// node holds the data dir's state.
	ErrDataDirInUse = errors.New("raftstore: data dir in use")
)
