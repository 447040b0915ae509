package stated

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestClientLearnsItsLineageAndSendsItOnEveryCall: the Client takes the
// lineage its first session's open reports, keeps it (a later answer does
// not move it to another cluster), and its connection's interceptors add
// it to every call's metadata from then on, unary and streaming; before
// it is known they add nothing.
func TestClientLearnsItsLineageAndSendsItOnEveryCall(t *testing.T) {
	f := &fakeState{lineage: "first"}
	c := newFakeClient(f)
	defer c.Close()
	sent := func() []string {
		var got []string
		invoker := func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
			md, _ := metadata.FromOutgoingContext(ctx)
			got = md.Get(lineageKey)
			return nil
		}
		if err := c.lineage.unary(context.Background(), "/m", nil, nil, nil, invoker); err != nil {
			t.Fatal(err)
		}
		var streamed []string
		streamer := func(ctx context.Context, _ *grpc.StreamDesc, _ *grpc.ClientConn, _ string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
			md, _ := metadata.FromOutgoingContext(ctx)
			streamed = md.Get(lineageKey)
			return nil, nil
		}
		if _, err := c.lineage.stream(context.Background(), nil, nil, "/s", streamer); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(streamed) || (len(got) == 1 && got[0] != streamed[0]) {
			t.Fatalf("a unary call carries %q and a stream %q; want the same", got, streamed)
		}
		return got
	}
	if c.Lineage() != "" || len(sent()) != 0 {
		t.Fatalf("before a session: lineage %q, sent %q; want none", c.Lineage(), sent())
	}
	if _, err := c.Txn().Put("ns", []byte("k"), []byte("v")).Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c.Lineage() != "first" {
		t.Fatalf("after the session's open: lineage %q, want %q", c.Lineage(), "first")
	}
	if got := sent(); len(got) != 1 || got[0] != "first" {
		t.Fatalf("a call after the open carries %q; want [first]", got)
	}
	c.lineage.learn("second")
	c.lineage.learn("")
	if c.Lineage() != "first" {
		t.Fatalf("a later answer moved the lineage to %q; a Client stays with the cluster of its first session", c.Lineage())
	}
}

// TestAnotherClustersRefusalIsErrOtherClusterAndNotRetried: the daemon's
// refusal of a call that carried another cluster's lineage matches
// ErrOtherCluster and ErrFailedPrecondition, and the commit is not sent
// again (it cannot succeed while the address reaches that cluster); a
// FailedPrecondition without the detail is not ErrOtherCluster.
func TestAnotherClustersRefusalIsErrOtherClusterAndNotRetried(t *testing.T) {
	st, err := status.New(codes.FailedPrecondition, "stated: this client's session was opened in a cluster of lineage a, ...").
		WithDetails(&statedv1.LineageRefused{ClientLineageId: "a", NodeLineageId: "b", NodeClusterId: "b", NodeId: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeState{commitErr: st.Err()}
	c := newFakeClient(f, WithCommitCoalescing(false))
	defer c.Close()
	_, err = c.Txn().Put("ns", []byte("k"), []byte("v")).Commit(context.Background())
	if !errors.Is(err, ErrOtherCluster) || !errors.Is(err, ErrFailedPrecondition) {
		t.Fatalf("commit: %v; want ErrOtherCluster and ErrFailedPrecondition", err)
	}
	if len(f.commits) != 1 {
		t.Fatalf("the commit was sent %d times; want once", len(f.commits))
	}
	f2 := &fakeState{commitErr: status.Error(codes.FailedPrecondition, "offsets[0]: fenced")}
	c2 := newFakeClient(f2, WithCommitCoalescing(false))
	defer c2.Close()
	if _, err := c2.Txn().Put("ns", []byte("k"), []byte("v")).Commit(context.Background()); errors.Is(err, ErrOtherCluster) {
		t.Fatalf("a FailedPrecondition without the detail matched ErrOtherCluster: %v", err)
	}
}
