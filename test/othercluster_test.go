package test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
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
	skipLong(t) // processes only
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

	// The refusal is Unavailable (the follower's idea of its leader may
	// be stale), so the CLI retries it until --timeout. Whether its
	// deadline falls between attempts or during one, it reports the
	// refusal; the timeout leaves room for a stalled machine.
	r := runStated(ctx, t, "kv", "put", "fwd", "k", "v", "--addr", follower.socket, "--timeout", "6s")
	t.Logf("a commit forwarded to another cluster: exit %d, %s", r.code, r.stderr)
	if r.code == 0 {
		t.Errorf("a commit forwarded to another cluster's node was acknowledged: %s", r.stdout)
	}
	if !strings.Contains(r.stderr, "another cluster") {
		t.Errorf("the refusal does not say the call reached another cluster: %s", r.stderr)
	}
	// The node of the other cluster says what it refused, for whoever
	// runs it: another cluster's leader advertises its address.
	const refusedLog = "refused a call forwarded by a node of another cluster"
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(other.logs.String(), refusedLog); {
		if time.Now().After(deadline) {
			t.Errorf("the other cluster's node did not log %q", refusedLog)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := runStated(ctx, t, "kv", "get", "fwd", "k", "--consistency", "local", "--addr", other.socket); got.code == 0 {
		t.Errorf("the other cluster applied a commit forwarded by this one: it holds fwd/k = %q", strings.TrimSpace(got.stdout))
	}

	// The leader itself still serves commits, and its followers apply them.
	mustStated(ctx, t, "kv", "put", "fwd", "k", "here", "--addr", nodes[leader].socket)
	waitStated(ctx, t, equals("here"), "kv", "get", "fwd", "k", "--consistency", "local", "--addr", follower.socket)
}

// TestRaftNeverReachesAnotherClusterAtAMembersAddress: while a member is
// down, the leader keeps replicating to its Raft address. A node of
// another cluster that takes that address (here with the same node id, as
// clusters built from one manifest have) must refuse this cluster's Raft
// connections: taking this leader's term or entries would unseat its own
// leader and could mix the two clusters' logs. Before Raft connections
// carried the cluster id, the other cluster's new node became a follower
// of this leader within seconds, with this cluster's log and id.
func TestRaftNeverReachesAnotherClusterAtAMembersAddress(t *testing.T) {
	t.Parallel()
	skipLong(t) // processes only
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := startCluster(ctx, t, 3)
	leader := leaderOf(ctx, t, nodes)
	gone := nodes[(leader+1)%len(nodes)]
	if code := gone.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("%s exited %d on SIGTERM", gone.id, code)
	}
	other := newNamedNode(t, gone.id)
	other.raftAddr = gone.raftAddr
	other.start(ctx)
	before, err := nodeStatus(ctx, other)
	if err != nil || before.Role != "leader" {
		t.Fatalf("the other cluster's node: %v, %v", before, err)
	}

	// Commits go on with two of three; the leader dials the stopped
	// member's address throughout, and says what it found there.
	for i := range 20 {
		mustStated(ctx, t, "kv", "put", "raft", "k", fmt.Sprint(i), "--addr", nodes[leader].socket)
	}
	for !strings.Contains(nodes[leader].logs.String(), "belongs to another cluster") {
		if ctx.Err() != nil {
			t.Fatalf("the leader never reported the other cluster at %s's address", gone.id)
		}
		time.Sleep(50 * time.Millisecond)
	}
	after, err := nodeStatus(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	if after.Role != "leader" || after.Term != before.Term || after.ClusterId != before.ClusterId {
		t.Errorf("the other cluster's node was reached by this cluster's Raft: before %s term %d, after %s term %d",
			before.Role, before.Term, after.Role, after.Term)
	}
	if got := runStated(ctx, t, "kv", "get", "raft", "k", "--consistency", "local", "--addr", other.socket); got.code == 0 {
		t.Errorf("the other cluster holds this cluster's entry: raft/k = %q", strings.TrimSpace(got.stdout))
	}

	// Once its address is its own again, the member catches up.
	if code := other.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("the other cluster's node exited %d on SIGTERM", code)
	}
	gone.start(ctx)
	waitStated(ctx, t, equals("19"), "kv", "get", "raft", "k", "--consistency", "local", "--addr", gone.socket)
}
