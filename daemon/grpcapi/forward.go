package grpcapi

import (
	"context"
	"fmt"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// ForwardedKey is the gRPC metadata key that marks a call one node
// forwarded to the leader. A node that receives a forwarded call and is not
// the leader (leadership moved meanwhile) answers Unavailable instead of
// forwarding again, so a call never travels in circles between nodes that
// disagree about who leads; the client retries.
const ForwardedKey = "stated-forwarded"

// ClusterIDKey is the gRPC metadata key that carries the forwarding node's
// cluster id on a forwarded call. The node that receives it serves the
// call only if it belongs to that cluster: the leader's advertised
// address may reach a node of another cluster (the address was reused
// after the leader stopped, or a pod's IP went to another deployment),
// and that node must not apply, or answer, a call meant for this one.
const ClusterIDKey = "stated-cluster-id"

// Leadership says who leads the cluster; *raftstore.Store satisfies it.
type Leadership interface {
	// IsLeader reports whether this node is the Raft leader.
	IsLeader() bool
	// Leader returns the leader's node id and its advertised gRPC
	// address, either "" when unknown.
	Leader() (id, grpcAddr string)
	// ClusterID returns the cluster's id, "" before it is recorded.
	ClusterID() string
	// Lineage returns the cluster's lineage (LineageKey), "" before its
	// cluster id is recorded.
	Lineage() string
}

// Forwarder reaches other nodes' gRPC servers. The daemon implements it
// with a small cache of connections that it closes when it stops.
type Forwarder interface {
	// Conn returns a connection to the gRPC server at addr (host:port).
	// The caller must not close it.
	Conn(addr string) (grpc.ClientConnInterface, error)
}

// notLeaderError is a call that needs the leader on a node that cannot
// hand it on: no leader is known, there is no Forwarder, or the call was
// already forwarded once. It maps to Unavailable: the client retries.
type notLeaderError struct {
	leaderID string
	reason   string
}

func (e *notLeaderError) Error() string {
	if e.leaderID == "" {
		return "stated: not leader; no leader is known (election in progress?); retry"
	}
	return fmt.Sprintf("stated: not leader; leader is %s (%s); retry", e.leaderID, e.reason)
}

// otherClusterError is a forwarded call that reached a node of another
// cluster. It maps to Unavailable: the forwarding node's idea of where
// its leader is is out of date or wrong, and the client retries (on a
// node that knows the leader, or after the election that follows).
type otherClusterError struct {
	own, caller string
}

func (e *otherClusterError) Error() string {
	return fmt.Sprintf("stated: a node forwarded this call to its leader's address, which reaches a node of another cluster "+
		"(cluster %s; the call came from cluster %s): the leader's address was reused or is advertised wrong; retry", e.own, e.caller)
}

// forwarding decides whether a call that needs the leader is served here
// or forwarded, and opens the connection to the leader.
type forwarding struct {
	lead Leadership
	fwd  Forwarder // nil: never forward
	// logger hears of forwarded calls refused because they came from
	// another cluster, at most once per lineageLogEvery.
	logger *slog.Logger
	logged *logThrottle
}

// newForwarding returns the forwarding of a server built with o.
func newForwarding(lead Leadership, o options) forwarding {
	return forwarding{lead: lead, fwd: o.forwarder, logger: o.logger, logged: new(logThrottle)}
}

// leaderConn returns nil, nil when this node leads and serves the call
// itself; else a connection to the leader and ctx marked as forwarded
// (with this node's cluster id); else a *notLeaderError. A call forwarded
// by a node of another cluster is refused with an *otherClusterError
// before anything else: every forwarded call comes from this method on
// the sender, and its handler on the receiver calls it too.
func (f forwarding) leaderConn(ctx context.Context) (grpc.ClientConnInterface, context.Context, error) {
	if caller := forwardedFrom(ctx); caller != "" {
		if own := f.lead.ClusterID(); own != "" && caller != own {
			f.logOtherCluster(ctx, own, caller)
			return nil, ctx, &otherClusterError{own: own, caller: caller}
		}
	}
	if f.lead.IsLeader() {
		return nil, ctx, nil
	}
	id, addr := f.lead.Leader()
	switch {
	case id == "":
		return nil, ctx, &notLeaderError{}
	case isForwarded(ctx):
		return nil, ctx, &notLeaderError{leaderID: id, reason: "a forwarded call is not forwarded again"}
	case f.fwd == nil:
		return nil, ctx, &notLeaderError{leaderID: id, reason: "this node does not forward"}
	case addr == "":
		return nil, ctx, &notLeaderError{leaderID: id, reason: "its gRPC address is not known yet"}
	}
	conn, err := f.fwd.Conn(addr)
	if err != nil {
		return nil, ctx, &notLeaderError{leaderID: id, reason: fmt.Sprintf("cannot connect to %s: %v", addr, err)}
	}
	out := metadata.AppendToOutgoingContext(ctx, ForwardedKey, "1")
	if own := f.lead.ClusterID(); own != "" {
		out = metadata.AppendToOutgoingContext(out, ClusterIDKey, own)
	}
	// The leader checks the client's bearer token again (package authz):
	// carry it along.
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for _, v := range md.Get("authorization") {
			out = metadata.AppendToOutgoingContext(out, "authorization", v)
		}
	}
	return conn, out, nil
}

// logOtherCluster logs the refusal of a call forwarded by a node of
// cluster caller: that node's leader advertises an address that reaches
// this node. It is logged here because the operator of this node may be
// the first to notice; the forwarding node's client gets the refusal.
func (f forwarding) logOtherCluster(ctx context.Context, own, caller string) {
	if f.logger == nil || f.logged == nil || !f.logged.allow() {
		return
	}
	method, _ := grpc.Method(ctx)
	f.logger.Warn("refused a call forwarded by a node of another cluster: that cluster's leader advertises an address that reaches this node",
		"method", method, "caller_cluster_id", caller, "cluster_id", own)
}

// isForwarded reports whether the incoming call was forwarded by a node.
func isForwarded(ctx context.Context) bool {
	return len(metadata.ValueFromIncomingContext(ctx, ForwardedKey)) > 0
}

// forwardedFrom returns the cluster id a forwarded call carries, "" when
// it carries none (not forwarded, or by a node that had no id yet). Every
// call that needs the leader asks, on the leader too: it looks up the one
// key rather than copying the call's metadata (FromIncomingContext).
func forwardedFrom(ctx context.Context) string {
	if v := metadata.ValueFromIncomingContext(ctx, ClusterIDKey); len(v) > 0 {
		return v[0]
	}
	return ""
}

// forwardedError passes on the leader's answer: a status keeps its code and
// message (the leader already chose them), anything else is the transport's
// failure, reported as such.
func forwardedError(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	return fmt.Errorf("grpcapi: forward to the leader: %w", err)
}
