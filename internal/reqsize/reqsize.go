// Package reqsize records the size of a commit request as gRPC received
// it, in the call's context, for the handlers and interceptors that need
// it: gRPC knows it, and sizing the decoded message again walks all of its
// mutations (2% of the daemon's CPU under 1000-mutation commits).
//
// Install Handler with grpc.StatsHandler; read the size with Of or Size.
package reqsize

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc/stats"
	"google.golang.org/protobuf/proto"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// Handler returns the stats.Handler that records the size of each
// State.Commit and State.CommitBatch request in its call's context.
func Handler() stats.Handler { return handler{} }

// Of is the size in bytes of the request of the call ctx belongs to, as
// received, and whether Handler recorded it.
func Of(ctx context.Context) (int64, bool) {
	if n, ok := ctx.Value(key{}).(*atomic.Int64); ok && n.Load() > 0 {
		return n.Load(), true
	}
	return 0, false
}

// Size is the size in bytes of m, the request of the call ctx belongs
// to: as received, when Handler recorded it, else m's encoded size.
func Size(ctx context.Context, m proto.Message) int64 {
	if n, ok := Of(ctx); ok {
		return n
	}
	return int64(proto.Size(m))
}

type handler struct{}

// key keys the *atomic.Int64 a call's size goes into.
type key struct{}

func (handler) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	switch info.FullMethodName {
	case statedv1.State_Commit_FullMethodName, statedv1.State_CommitBatch_FullMethodName:
		return context.WithValue(ctx, key{}, new(atomic.Int64))
	}
	return ctx
}

func (handler) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if in, ok := s.(*stats.InPayload); ok {
		if n, ok := ctx.Value(key{}).(*atomic.Int64); ok {
			n.Store(int64(in.Length))
		}
	}
}

func (handler) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (handler) HandleConn(context.Context, stats.ConnStats)                       {}
