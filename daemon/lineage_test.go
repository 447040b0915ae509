package daemon_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/daemon/grpcapi"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestACallCarryingAnotherClustersLineageIsRefusedAndDoesNothing: the
// wire contract of the lineage check. A session's open answers the
// cluster's lineage; a call that carries another lineage is refused with
// FailedPrecondition and a LineageRefused detail before its handler runs
// (a commit applies nothing, a stream serves nothing), and a call that
// carries this cluster's lineage, or none, is served.
func TestACallCarryingAnotherClustersLineageIsRefusedAndDoesNothing(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	ctx := testContext(t)
	c := statedv1.NewStateClient(dial(t, d.TCPAddr()))
	open, err := c.OpenSession(ctx, &statedv1.OpenSessionRequest{ClientId: "c"})
	if err != nil {
		t.Fatal(err)
	}
	own := open.GetLineageId()
	if own == "" || own != d.Store().ClusterID() {
		t.Fatalf("a session opened with lineage %q; want the cluster id %q of a cluster never restored", own, d.Store().ClusterID())
	}
	put := func(key string) *statedv1.CommitRequest {
		return &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{
			Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "ns", Key: []byte(key), Value: []byte("v"),
		}}}
	}
	other := metadata.AppendToOutgoingContext(ctx, grpcapi.LineageKey, "0123456789abcdef")
	refused := func(what string, err error) {
		t.Helper()
		st := status.Convert(err)
		if st.Code() != codes.FailedPrecondition {
			t.Errorf("%s with another lineage: %v; want FailedPrecondition", what, err)
			return
		}
		for _, det := range st.Details() {
			if lr, ok := det.(*statedv1.LineageRefused); ok {
				if lr.GetClientLineageId() != "0123456789abcdef" || lr.GetNodeLineageId() != own || lr.GetNodeClusterId() != own || lr.GetNodeId() == "" {
					t.Errorf("%s: detail %+v; want the call's lineage and this node's", what, lr)
				}
				return
			}
		}
		t.Errorf("%s: refused without a LineageRefused detail: %v", what, err)
	}
	_, err = c.Commit(other, put("refused"))
	refused("a commit", err)
	_, err = c.CommitBatch(other, &statedv1.CommitBatchRequest{Commits: []*statedv1.CommitRequest{put("refused-batch")}})
	refused("a batch", err)
	_, err = c.OpenSession(other, &statedv1.OpenSessionRequest{ClientId: "c"})
	refused("a session's open", err)
	_, err = statedv1.NewClusterClient(dial(t, d.TCPAddr())).NodeStatus(other, &statedv1.NodeStatusRequest{})
	refused("a node status", err)
	scan, err := c.Scan(other, &statedv1.ScanRequest{Namespace: "ns"})
	if err == nil {
		_, err = scan.Recv()
	}
	refused("a scan (a stream)", err)

	// Nothing of them happened: the refused session open fenced nothing,
	// and neither commit applied.
	for _, key := range []string{"refused", "refused-batch"} {
		r, err := c.Get(ctx, &statedv1.GetRequest{Namespace: "ns", Key: []byte(key), Kind: statedv1.Kind_KIND_VALUE})
		if err != nil || r.GetFound() {
			t.Errorf("%s: %v, %v; want not found", key, r, err)
		}
	}
	mine := metadata.AppendToOutgoingContext(ctx, grpcapi.LineageKey, own)
	in := put("mine")
	in.ClientId, in.SessionId, in.Sequence = "c", open.GetSessionId(), 1
	if _, err := c.Commit(mine, in); err != nil {
		t.Fatalf("a commit in the session with the cluster's own lineage: %v; want it applied (the refused open fenced nothing)", err)
	}
	if _, err := c.Commit(ctx, put("none")); err != nil {
		t.Fatalf("a commit without a lineage: %v", err)
	}
	st, err := statedv1.NewClusterClient(dial(t, d.TCPAddr())).NodeStatus(mine, &statedv1.NodeStatusRequest{})
	if err != nil || st.GetLineageId() != own {
		t.Fatalf("node status: %v, %v; want lineage %s", st, err, own)
	}
}
