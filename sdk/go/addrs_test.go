package stated

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/internal/heldport"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// clusterServer is a daemon of the cluster of lineage id, as far as the
// lineage goes: its sessions' opens answer id, and it refuses a call that
// carries another lineage, as the daemon's LineageCheck does.
type clusterServer struct {
	commitServer
	id      string
	refused atomic.Int64
}

func (s *clusterServer) OpenSession(context.Context, *statedv1.OpenSessionRequest) (*statedv1.OpenSessionResponse, error) {
	return &statedv1.OpenSessionResponse{SessionId: 1, IdleTimeoutMillis: 3600_000, LineageId: s.id}, nil
}

func (s *clusterServer) check(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if v := metadata.ValueFromIncomingContext(ctx, lineageKey); len(v) > 0 && v[0] != s.id {
		s.refused.Add(1)
		st, err := status.New(codes.FailedPrecondition, "another cluster").WithDetails(&statedv1.LineageRefused{ClientLineageId: v[0], NodeLineageId: s.id})
		if err != nil {
			return nil, err
		}
		return nil, st.Err()
	}
	return handler(ctx, req)
}

func serveCluster(t *testing.T, l net.Listener, s *clusterServer) *grpc.Server {
	t.Helper()
	g := grpc.NewServer(grpc.UnaryInterceptor(s.check))
	statedv1.RegisterStateServer(g, s)
	go g.Serve(l)
	t.Cleanup(g.Stop)
	return g
}

// TestAClientWithSeveralAddressesLeavesOneWhereAnotherClusterAnswers: a
// Client dialled to two addresses opens its session at the first (its
// cluster, lineage "own"). That server goes away and the Client's
// connection moves to the second, where a daemon of another cluster
// answers and refuses the commit. The Client must leave that address:
// once the first serves again, its next commit goes there and succeeds.
// Without the move, pick_first would keep the connection to the second
// address and every call would be refused there.
func TestAClientWithSeveralAddressesLeavesOneWhereAnotherClusterAnswers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ownPort := heldport.Hold(t)
	otherL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	own, other := &clusterServer{id: "own"}, &clusterServer{id: "other"}
	ownSrv := serveCluster(t, ownPort.Listen(t), own)
	serveCluster(t, otherL, other)
	c, err := Dial(ctx, ownPort.Addr()+","+otherL.Addr().String(), WithBlock(), WithCommitCoalescing(false))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Txn().Commit(ctx); err != nil || c.Lineage() != "own" {
		t.Fatalf("first commit: %v, lineage %q", err, c.Lineage())
	}

	// The own server goes: the connection moves to the other cluster,
	// which refuses the commit, and the client leaves that address and
	// waits for its own (the commit runs out of time meanwhile).
	ownSrv.Stop()
	sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = c.Txn().Commit(sctx)
	scancel()
	if err == nil || other.commits.Load() != 0 || other.refused.Load() == 0 {
		t.Fatalf("with its own cluster gone: commit %v; the other cluster applied %d and refused %d; want an error, 0 and at least 1",
			err, other.commits.Load(), other.refused.Load())
	}

	// The own server serves again at its address (held meanwhile, so
	// that no other process can take it).
	serveCluster(t, ownPort.Listen(t), own)
	before := own.commits.Load()
	if _, err := c.Txn().Commit(ctx); err != nil {
		t.Fatalf("a commit once the client's own cluster answers at its first address again: %v", err)
	}
	if own.commits.Load() != before+1 || other.commits.Load() != 0 {
		t.Fatalf("own cluster applied %d more, the other %d; want 1 and 0", own.commits.Load()-before, other.commits.Load())
	}
}
