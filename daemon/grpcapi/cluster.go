package grpcapi

import (
	"context"
	"log/slog"
	"net"
	"strconv"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/raftstore/fsm"
)

// ClusterStore is what the Cluster service needs from the replicated
// store; *raftstore.Store satisfies it.
type ClusterStore interface {
	// Join adds m as a voter (leader only) and returns the cluster id.
	// It refuses with raftstore.ErrMemberConflict or ErrClusterMismatch
	// and is idempotent for a member already present at the same addresses.
	Join(ctx context.Context, m raftstore.Member, clusterID string) (string, error)
	// Remove removes a member (leader only).
	Remove(ctx context.Context, id string) error
	// Members lists the Raft configuration with each member's gRPC address.
	Members() ([]raftstore.Member, string, error)
	ClusterID() string
	Status() raftstore.Status
	// Counts counts the node's bookkeeping and keyed state.
	Counts(ctx context.Context) (fsm.Counts, error)
	NodeID() string
	Leadership
}

// ClusterServer implements statedv1.ClusterServer over a ClusterStore.
// Join and Remove change the Raft configuration and so run on the leader:
// a follower forwards them. Members and NodeStatus answer from this node.
type ClusterServer struct {
	statedv1.UnimplementedClusterServer
	store  ClusterStore
	logger *slog.Logger
	fwd    forwarding
}

// NewCluster returns a ClusterServer serving store.
func NewCluster(store ClusterStore, opts ...Option) *ClusterServer {
	o := newOptions(opts)
	return &ClusterServer{store: store, logger: o.logger, fwd: newForwarding(store, o)}
}

// Join adds the requesting node to the cluster as a voter.
func (s *ClusterServer) Join(ctx context.Context, r *statedv1.JoinRequest) (*statedv1.JoinResponse, error) {
	if err := validateJoin(r); err != nil {
		return nil, statusOf(ctx, s.logger, err)
	}
	conn, fctx, err := s.fwd.leaderConn(ctx)
	if err != nil {
		return nil, statusOf(ctx, s.logger, err)
	}
	if conn != nil {
		resp, err := statedv1.NewClusterClient(conn).Join(fctx, r)
		return resp, statusOf(ctx, s.logger, forwardedError(err))
	}
	m := raftstore.Member{ID: r.GetNodeId(), RaftAddr: r.GetRaftAddr(), GRPCAddr: r.GetGrpcAddr(), Voter: true, Incarnation: r.GetIncarnation()}
	clusterID, err := s.store.Join(ctx, m, r.GetClusterId())
	if err != nil {
		return nil, statusOf(ctx, s.logger, err)
	}
	s.logger.Info("grpcapi: node joined", "node_id", m.ID, "raft_addr", m.RaftAddr, "grpc_addr", m.GRPCAddr)
	return &statedv1.JoinResponse{ClusterId: clusterID, LeaderId: s.store.NodeID()}, nil
}

// Remove removes a member from the cluster.
func (s *ClusterServer) Remove(ctx context.Context, r *statedv1.RemoveRequest) (*statedv1.RemoveResponse, error) {
	if r.GetNodeId() == "" {
		return nil, statusOf(ctx, s.logger, invalid("node_id", "empty"))
	}
	conn, fctx, err := s.fwd.leaderConn(ctx)
	if err != nil {
		return nil, statusOf(ctx, s.logger, err)
	}
	if conn != nil {
		resp, err := statedv1.NewClusterClient(conn).Remove(fctx, r)
		return resp, statusOf(ctx, s.logger, forwardedError(err))
	}
	if err := s.store.Remove(ctx, r.GetNodeId()); err != nil {
		return nil, statusOf(ctx, s.logger, err)
	}
	s.logger.Info("grpcapi: node removed", "node_id", r.GetNodeId())
	return &statedv1.RemoveResponse{}, nil
}

// Members lists the members as this node's Raft configuration has them.
func (s *ClusterServer) Members(ctx context.Context, _ *statedv1.MembersRequest) (*statedv1.MembersResponse, error) {
	members, leaderID, err := s.store.Members()
	if err != nil {
		return nil, statusOf(ctx, s.logger, err)
	}
	resp := &statedv1.MembersResponse{ClusterId: s.store.ClusterID(), LeaderId: leaderID}
	for _, m := range members {
		resp.Members = append(resp.Members, &statedv1.Member{
			NodeId:   m.ID,
			RaftAddr: m.RaftAddr,
			GrpcAddr: m.GRPCAddr,
			Voter:    m.Voter,
			Leader:   m.ID == leaderID,
		})
	}
	return resp, nil
}

// NodeStatus reports this node's Raft state and bookkeeping counts.
func (s *ClusterServer) NodeStatus(ctx context.Context, _ *statedv1.NodeStatusRequest) (*statedv1.NodeStatusResponse, error) {
	st := s.store.Status()
	c, err := s.store.Counts(ctx)
	if err != nil {
		return nil, statusOf(ctx, s.logger, err)
	}
	return &statedv1.NodeStatusResponse{
		Counts: &statedv1.StateCounts{
			Sessions: c.Sessions, SessionLanes: c.SessionLanes, TtlPending: c.TTLPending,
			StateKeys: c.StateKeys, StateBytes: c.StateBytes, LegacyRetryRecords: c.LegacyRetryRecords,
			WindowNamespaces: c.WindowNamespaces, OpenWindows: c.OpenWindows, PendingEmissions: c.PendingEmissions,
			EndedSessions: c.EndedSessions,
		},
		NodeId:         st.NodeID,
		ClusterId:      st.ClusterID,
		LineageId:      s.store.Lineage(),
		Role:           st.Role,
		Term:           st.Term,
		LastLogIndex:   st.LastLogIndex,
		CommitIndex:    st.CommitIndex,
		AppliedIndex:   st.AppliedIndex,
		LeaderId:       st.LeaderID,
		LeaderGrpcAddr: st.LeaderGRPCAddr,
	}, nil
}

// validateJoin checks a JoinRequest's fields; addresses must be host:port
// with a port.
func validateJoin(r *statedv1.JoinRequest) error {
	if r.GetNodeId() == "" {
		return invalid("node_id", "empty")
	}
	if len(r.GetNodeId()) > 255 {
		return invalid("node_id", "%d bytes, limit 255", len(r.GetNodeId()))
	}
	for _, f := range []struct{ field, s string }{{"node_id", r.GetNodeId()}, {"raft_addr", r.GetRaftAddr()}, {"grpc_addr", r.GetGrpcAddr()}, {"incarnation", r.GetIncarnation()}} {
		if err := validUTF8(f.field, f.s); err != nil {
			return err
		}
	}
	for _, a := range []struct{ field, addr string }{{"raft_addr", r.GetRaftAddr()}, {"grpc_addr", r.GetGrpcAddr()}} {
		if a.addr == "" {
			return invalid(a.field, "empty")
		}
		_, port, err := net.SplitHostPort(a.addr)
		if err != nil {
			return invalid(a.field, "%q is not host:port: %v", a.addr, err)
		}
		if port == "" {
			return invalid(a.field, "%q has no port", a.addr)
		}
		// A named port ("http") is left to the dialer; a number must be
		// one a node can listen on.
		if n, err := strconv.Atoi(port); err == nil && (n < 1 || n > 65535) {
			return invalid(a.field, "%q: port %d is not 1..65535", a.addr, n)
		}
	}
	if len(r.GetIncarnation()) > 64 {
		return invalid("incarnation", "%d bytes, limit 64", len(r.GetIncarnation()))
	}
	return nil
}
