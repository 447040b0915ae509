package grpcapi_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/statedhq/stated/daemon/grpcapi"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestAForwardedCallFromAnotherClusterIsRefusedAndAppliesNothing is the
// receiving side of forwarding's cluster check (test/'s
// TestForwardingNeverReachesAnotherCluster runs both sides as processes):
// a call forwarded by a node of another cluster is refused Unavailable and
// leaves nothing; one forwarded from this cluster, or from a node that has
// no cluster id yet, is served.
func TestAForwardedCallFromAnotherClusterIsRefusedAndAppliesNothing(t *testing.T) {
	t.Parallel()
	d, c := startClient(t)
	ctx := testContext(t)
	own := d.Store().ClusterID()
	if own == "" {
		t.Fatal("the daemon has no cluster id once it serves")
	}
	commit := func(key string, md ...string) error {
		_, err := c.Commit(metadata.AppendToOutgoingContext(ctx, md...),
			&statedv1.CommitRequest{Mutations: []*statedv1.Mutation{put("fwd", key, "v")}})
		return err
	}

	err := commit("other", grpcapi.ForwardedKey, "1", grpcapi.ClusterIDKey, "0123456789abcdef")
	wantStatus(t, err, codes.Unavailable, "another cluster")
	if g := get(t, c, "fwd", "other"); g.GetFound() {
		t.Fatalf("a commit refused as another cluster's was applied: fwd/other = %q", g.GetValue())
	}
	_, err = c.OpenSession(metadata.AppendToOutgoingContext(ctx, grpcapi.ForwardedKey, "1", grpcapi.ClusterIDKey, "0123456789abcdef"),
		&statedv1.OpenSessionRequest{ClientId: "svc"})
	wantStatus(t, err, codes.Unavailable, "another cluster")

	if err := commit("same", grpcapi.ForwardedKey, "1", grpcapi.ClusterIDKey, own); err != nil {
		t.Fatalf("a call forwarded from this cluster: %v", err)
	}
	if err := commit("unknown", grpcapi.ForwardedKey, "1"); err != nil {
		t.Fatalf("a call forwarded by a node without a cluster id yet: %v", err)
	}
	for _, k := range []string{"same", "unknown"} {
		if v := get(t, c, "fwd", k).GetValue(); string(v) != "v" {
			t.Errorf("fwd/%s = %q, want v", k, v)
		}
	}
}
