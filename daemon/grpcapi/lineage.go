package grpcapi

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// LineageKey is the gRPC metadata key in which a client sends the lineage
// of the cluster its session was opened in (OpenSessionResponse.
// lineage_id), on every call after the open. A node of a cluster of
// another lineage refuses the call before its handler runs: the client's
// address reaches an unrelated cluster (an address reused after its own
// node stopped, a DNS name or pod IP that now points elsewhere), which
// would otherwise open a new session for it and apply its commits. A
// cluster restored from a checkpoint keeps the lineage of the cluster the
// checkpoint came from, so the clients of that cluster go on working
// against it.
const LineageKey = "stated-lineage"

// LineageSource is what the lineage check reads of the node;
// *raftstore.Store satisfies it.
type LineageSource interface {
	// Lineage returns the cluster's lineage, "" before it is known.
	Lineage() string
	ClusterID() string
	NodeID() string
}

// LineageCheck refuses calls that carry another cluster's lineage.
type LineageCheck struct {
	src    LineageSource
	logger *slog.Logger
	// logged throttles the refusals' log: a misdirected client refused
	// on every call is logged every lineageLogEvery at most.
	logged logThrottle
}

const lineageLogEvery = 10 * time.Second

// logThrottle lets a message repeated on every call be logged at most
// once per lineageLogEvery; the zero value logs the first.
type logThrottle struct{ last atomic.Int64 } // unix nanoseconds

// allow reports whether to log now, and if so marks it logged.
func (t *logThrottle) allow() bool {
	now := time.Now().UnixNano()
	last := t.last.Load()
	return now-last >= int64(lineageLogEvery) && t.last.CompareAndSwap(last, now)
}

// NewLineageCheck returns the check over src; refusals are logged to
// logger (nil: not logged).
func NewLineageCheck(src LineageSource, logger *slog.Logger) *LineageCheck {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &LineageCheck{src: src, logger: logger}
}

// check returns the refusal of a call whose lineage is not this node's,
// nil for a call that carries none (a client without a session yet, a
// node forwarding, a tool) or when this node does not know its own yet.
func (c *LineageCheck) check(ctx context.Context, method string) error {
	v := metadata.ValueFromIncomingContext(ctx, LineageKey)
	if len(v) == 0 || v[0] == "" {
		return nil
	}
	own := c.src.Lineage()
	if own == "" || own == v[0] {
		return nil
	}
	cluster, node := c.src.ClusterID(), c.src.NodeID()
	if c.logged.allow() {
		c.logger.Warn("refused a call from a client of another cluster: its address reaches this node",
			"method", method, "client_lineage", v[0], "lineage", own, "cluster_id", cluster)
	}
	st := status.New(codes.FailedPrecondition, fmt.Sprintf(
		"stated: this client's session was opened in a cluster of lineage %s, and this node (%s) belongs to cluster %s of lineage %s: "+
			"the client's address reaches another cluster (reused, or pointing elsewhere); nothing was done",
		v[0], node, cluster, own))
	if d, err := st.WithDetails(&statedv1.LineageRefused{
		ClientLineageId: v[0], NodeLineageId: own, NodeClusterId: cluster, NodeId: node,
	}); err == nil {
		st = d
	}
	return st.Err()
}

// Unary is the check as a unary server interceptor.
func (c *LineageCheck) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := c.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// Stream is the check as a stream server interceptor: a stream's metadata
// comes with its start.
func (c *LineageCheck) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := c.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}
