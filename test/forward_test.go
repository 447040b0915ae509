package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestForwardingNeverReachesAnotherCluster: a follower forwards a commit
// to its leader's advertised gRPC address. When that address reaches a
// node of another cluster (an address reused after the leader stopped, a
// pod IP given to another deployment; here an advertised address that
// points there), the other cluster must refuse the call rather than apply
// it: the client would be told its commit was acknowledged while its own
// cluster never saw it. Before forwarded calls carried the cluster id,
// the other cluster applied such a commit (and refused one sent in a
// session as "not open", which a retried SDK commit reported as an
// expired session: the intermittent failure of
// TestOperationsRollingRestartLosesNoCommit, whose followers forwarded to
// a stopped leader's port while another test's daemon had it).
func TestForwardingNeverReachesAnotherCluster(t *testing.T) {
	t.Parallel()
	skipUnderRace(t) // processes only
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Each node of this cluster advertises the address of a one-node
	// cluster of its own (a cluster refuses two members at one address),
	// so that whichever leads, a follower forwards to another cluster.
	nodes := make([]*node, 3)
	others := make([]*node, 3)
	for i := range nodes {
		others[i] = newNamedNode(t, fmt.Sprint("x", i+1))
		others[i].start(ctx)
		nodes[i] = newNamedNode(t, fmt.Sprint("n", i+1))
		nodes[i].args = []string{"--advertise-grpc-addr", others[i].grpcAddr}
		if i > 0 {
			nodes[i].args = append(nodes[i].args, "--join", nodes[0].grpcAddr)
		}
		nodes[i].start(ctx)
	}
	leader := leaderOf(ctx, t, nodes)
	follower := nodes[(leader+1)%len(nodes)]
	other := others[leader]

	r := runStated(ctx, t, "kv", "put", "fwd", "k", "v", "--addr", follower.socket, "--timeout", "3s")
	t.Logf("a commit forwarded to another cluster: exit %d, %s", r.code, r.stderr)
	if r.code == 0 {
		t.Errorf("a commit forwarded to another cluster's node was acknowledged: %s", r.stdout)
	}
	if !strings.Contains(r.stderr, "another cluster") {
		t.Errorf("the refusal does not say the call reached another cluster: %s", r.stderr)
	}
	if got := runStated(ctx, t, "kv", "get", "fwd", "k", "--consistency", "local", "--addr", other.socket); got.code == 0 {
		t.Errorf("the other cluster applied a commit forwarded by this one: it holds fwd/k = %q", strings.TrimSpace(got.stdout))
	}

	// The leader itself still serves commits, and its followers apply them.
	mustStated(ctx, t, "kv", "put", "fwd", "k", "here", "--addr", nodes[leader].socket)
	waitStated(ctx, t, equals("here"), "kv", "get", "fwd", "k", "--consistency", "local", "--addr", follower.socket)
}
