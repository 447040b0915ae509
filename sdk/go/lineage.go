package stated

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// lineageKey is the gRPC metadata key of the Client's lineage (the
// daemon's grpcapi.LineageKey).
const lineageKey = "stated-lineage"

// lineage is the lineage of the cluster the Client's first session was
// opened in (see Client.Lineage); the Client's connection sends it on
// every call once known, and a daemon of another cluster refuses the call
// (ErrOtherCluster).
type lineage struct{ v atomic.Pointer[string] }

// get returns the lineage, "" before a session was opened.
func (l *lineage) get() string {
	if v := l.v.Load(); v != nil {
		return *v
	}
	return ""
}

// learn records id, the lineage an open session reported, unless one is
// known: a Client belongs to the cluster its first session was opened in.
// A daemon of an older release reports none.
func (l *lineage) learn(id string) {
	if id != "" {
		l.v.CompareAndSwap(nil, &id)
	}
}

// outgoing returns ctx with the lineage in its outgoing metadata, or ctx
// itself before the lineage is known.
func (l *lineage) outgoing(ctx context.Context) context.Context {
	if v := l.v.Load(); v != nil {
		return metadata.AppendToOutgoingContext(ctx, lineageKey, *v)
	}
	return ctx
}

func (l *lineage) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return invoker(l.outgoing(ctx), method, req, reply, cc, opts...)
}

func (l *lineage) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(l.outgoing(ctx), desc, cc, method, opts...)
}

// Lineage returns the lineage of the cluster this Client's first session
// was opened in, "" before one was (or with a daemon older than lineages).
// It is that cluster's id, or for a cluster restored from a checkpoint the
// lineage of the cluster the checkpoint came from: a restored copy of the
// Client's cluster serves it, an unrelated cluster refuses its calls with
// ErrOtherCluster.
func (c *Client) Lineage() string { return c.lineage.get() }

// isOtherCluster reports whether st is a daemon's refusal of a call that
// carried another cluster's lineage.
func isOtherCluster(st *status.Status) bool {
	return hasDetail[*statedv1.LineageRefused](st, codes.FailedPrecondition)
}
