package test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

// TestMembersWithOneJoinListFormAClusterAndTheBootstrapNodeRejoins runs
// three nodes the way a Kubernetes StatefulSet does (deploy/kubernetes):
// every node gets the same --join list of all members and the same
// --bootstrap-node-id, and advertises its Raft address by name. n1
// bootstraps (no other member answers), n2 and n3 join it, and the cluster
// configuration holds the names. Then n1 loses its disk and comes back
// with the same flags: it must join its cluster again, not bootstrap a
// second one, and serve every acknowledged commit.
func TestMembersWithOneJoinListFormAClusterAndTheBootstrapNodeRejoins(t *testing.T) {
	t.Parallel()
	skipLong(t) // processes only: what runs in this process is race-tested in its own package
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nodes := make([]*node, 3)
	var join []string
	for i := range nodes {
		nodes[i] = newNamedNode(t, fmt.Sprint("n", i+1))
		join = append(join, nodes[i].grpcAddr)
	}
	advertised := func(n *node) string {
		_, port, err := net.SplitHostPort(n.raftAddr)
		if err != nil {
			t.Fatal(err)
		}
		return "localhost:" + port
	}
	for _, n := range nodes {
		// As in the StatefulSet, which starts pod 0 first and each next
		// pod once the one before is ready.
		n.args = []string{"--join", strings.Join(join, ","), "--bootstrap-node-id", "n1", "--advertise-raft-addr", advertised(n)}
		n.start(ctx)
	}
	if !strings.Contains(nodes[0].logs.String(), "bootstrapped a new single-node cluster") {
		t.Fatalf("n1 did not bootstrap:\n%s", nodes[0].logs)
	}
	for _, n := range nodes[1:] {
		if strings.Contains(n.logs.String(), "bootstrapped") {
			t.Fatalf("%s bootstrapped; only the bootstrap node may:\n%s", n.id, n.logs)
		}
	}
	members := func(n *node) *statedv1.MembersResponse {
		t.Helper()
		conn := n.dial()
		defer conn.Close()
		var resp *statedv1.MembersResponse
		eventually(t, 30*time.Second, n.id+" lists 3 voters", func() bool {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			r, err := statedv1.NewClusterClient(conn).Members(cctx, &statedv1.MembersRequest{})
			if err != nil || len(r.GetMembers()) != 3 || r.GetLeaderId() == "" {
				return false
			}
			resp = r
			return true
		})
		return resp
	}
	before := members(nodes[1])
	for _, m := range before.GetMembers() {
		var n *node
		for _, c := range nodes {
			if c.id == m.GetNodeId() {
				n = c
			}
		}
		if n == nil || m.GetRaftAddr() != advertised(n) {
			t.Errorf("member %s has raft address %q, want the advertised name", m.GetNodeId(), m.GetRaftAddr())
		}
	}

	c, err := stated.Dial(ctx, addrs(nodes))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := startCounterWorkers(ctx, t, c, 2)
	defer w.halt()
	w.waitFor(ctx, t, 200)

	nodes[0].kill()
	if err := os.RemoveAll(nodes[0].dataDir); err != nil {
		t.Fatal(err)
	}
	w.waitFor(ctx, t, w.total.Load()+200)
	nodes[0].start(ctx)
	w.waitFor(ctx, t, w.total.Load()+100)
	w.halt()
	if strings.Contains(nodes[0].logs.String(), "bootstrapped") {
		t.Fatalf("n1 bootstrapped a second cluster after losing its disk:\n%s", nodes[0].logs)
	}
	after := members(nodes[0])
	if after.GetClusterId() != before.GetClusterId() {
		t.Fatalf("n1 serves cluster %s after losing its disk, want its old cluster %s", after.GetClusterId(), before.GetClusterId())
	}
	for _, n := range nodes {
		w.checkNode(ctx, t, n)
	}
}
