package stated

import (
	"context"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// Member is a node of a stated cluster as the Raft configuration has it.
type Member struct {
	NodeID   string
	RaftAddr string
	// GRPCAddr is the gRPC address the node advertised; "" until the
	// cluster has recorded it.
	GRPCAddr string
	Voter    bool
	Leader   bool
}

// Members is the membership of a cluster as one daemon knows it.
type Members struct {
	ClusterID string
	// LeaderID is "" while no leader is known.
	LeaderID string
	Members  []Member
}

// NodeStatus is the Raft state of one daemon.
type NodeStatus struct {
	NodeID    string
	ClusterID string
	// LineageID is the cluster's lineage (see Client.Lineage): ClusterID
	// unless the cluster was restored from a checkpoint.
	LineageID string
	// Role is "leader", "follower", "candidate" or "shutdown".
	Role           string
	Term           uint64
	LastLogIndex   uint64
	CommitIndex    uint64
	AppliedIndex   uint64
	LeaderID       string
	LeaderGRPCAddr string
	// Counts is the bookkeeping the daemon holds.
	Counts StateCounts
}

// StateCounts is what a daemon's state holds besides what it serves: the
// bookkeeping that must stay bounded under any load, and the keyed state's
// size.
type StateCounts struct {
	// Sessions and SessionLanes are the open client sessions and their
	// lanes (one lane per commit a Client had in flight at once).
	Sessions     uint64 `json:"sessions"`
	SessionLanes uint64 `json:"session_lanes"`
	// TTLPending is the number of entries with a TTL that expiry has not
	// deleted yet.
	TTLPending uint64 `json:"ttl_pending"`
	// StateKeys and StateBytes are the keyed state's entries and bytes.
	StateKeys  uint64 `json:"state_keys"`
	StateBytes uint64 `json:"state_bytes"`
	// LegacyRetryRecords are per-commit retry records left by a stated
	// from before client sessions; expiry deletes them within an hour.
	LegacyRetryRecords uint64 `json:"legacy_retry_records,omitempty"`
	// WindowNamespaces, OpenWindows and PendingEmissions count window
	// state: namespaces defined, windows not closed yet and emissions not
	// acknowledged yet.
	WindowNamespaces uint64 `json:"window_namespaces"`
	OpenWindows      uint64 `json:"open_windows"`
	PendingEmissions uint64 `json:"pending_emissions"`
	// EndedSessions are the records of ended sessions (expired, replaced
	// by a newer open of their client id, or dropped by a restore) kept so
	// that a late open of one is refused; expiry deletes each after its
	// retention (a day at least).
	EndedSessions uint64 `json:"ended_sessions"`
}

// Members returns the cluster's members as the daemon the Client talks to
// knows them. It is an operator's call; services need not use it.
func (c *Client) Members(ctx context.Context) (Members, error) {
	if err := c.checkOpen("members"); err != nil {
		return Members{}, err
	}
	var resp *statedv1.MembersResponse
	err := c.withRetries(ctx, func(ctx context.Context) error {
		var err error
		resp, err = c.cluster.Members(ctx, &statedv1.MembersRequest{})
		return err
	})
	if err != nil {
		return Members{}, c.rpcErr("members", err)
	}
	out := Members{ClusterID: resp.GetClusterId(), LeaderID: resp.GetLeaderId()}
	for _, m := range resp.GetMembers() {
		out.Members = append(out.Members, Member{
			NodeID:   m.GetNodeId(),
			RaftAddr: m.GetRaftAddr(),
			GRPCAddr: m.GetGrpcAddr(),
			Voter:    m.GetVoter(),
			Leader:   m.GetLeader(),
		})
	}
	return out, nil
}

// NodeStatus returns the Raft state of the daemon the Client talks to.
func (c *Client) NodeStatus(ctx context.Context) (NodeStatus, error) {
	if err := c.checkOpen("node status"); err != nil {
		return NodeStatus{}, err
	}
	var r *statedv1.NodeStatusResponse
	err := c.withRetries(ctx, func(ctx context.Context) error {
		var err error
		r, err = c.cluster.NodeStatus(ctx, &statedv1.NodeStatusRequest{})
		return err
	})
	if err != nil {
		return NodeStatus{}, c.rpcErr("node status", err)
	}
	return NodeStatus{
		NodeID:         r.GetNodeId(),
		ClusterID:      r.GetClusterId(),
		LineageID:      r.GetLineageId(),
		Role:           r.GetRole(),
		Term:           r.GetTerm(),
		LastLogIndex:   r.GetLastLogIndex(),
		CommitIndex:    r.GetCommitIndex(),
		AppliedIndex:   r.GetAppliedIndex(),
		LeaderID:       r.GetLeaderId(),
		LeaderGRPCAddr: r.GetLeaderGrpcAddr(),
		Counts: StateCounts{
			Sessions: r.GetCounts().GetSessions(), SessionLanes: r.GetCounts().GetSessionLanes(),
			TTLPending: r.GetCounts().GetTtlPending(), StateKeys: r.GetCounts().GetStateKeys(),
			StateBytes: r.GetCounts().GetStateBytes(), LegacyRetryRecords: r.GetCounts().GetLegacyRetryRecords(),
			WindowNamespaces: r.GetCounts().GetWindowNamespaces(), OpenWindows: r.GetCounts().GetOpenWindows(),
			PendingEmissions: r.GetCounts().GetPendingEmissions(), EndedSessions: r.GetCounts().GetEndedSessions(),
		},
	}, nil
}

// RemoveMember removes the node nodeID from the cluster. The daemon
// forwards the call to the leader. An unknown node fails with an error for
// which status.Code returns codes.NotFound. It is sent once, never
// retried: a retry of a removal that took effect would fail NotFound.
func (c *Client) RemoveMember(ctx context.Context, nodeID string) error {
	if err := c.checkOpen("remove member"); err != nil {
		return err
	}
	_, err := c.cluster.Remove(ctx, &statedv1.RemoveRequest{NodeId: nodeID})
	return c.rpcErr("remove member", err)
}
