//go:build linux

package test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// netnsLab is a switch (a bridge in a namespace of its own) and one
// namespace per node, cabled to it with veth pairs. Node i has address
// 10.213.0.(i+1) on a network that exists only inside these namespaces.
type netnsLab struct {
	t     *testing.T
	sw    string
	nodes []string
	links []string // the switch side of each node's cable
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %v: %v: %s", args, err, out)
	}
	return nil
}

func newNetnsLab(t *testing.T, n int) *netnsLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: network namespaces need root; the in-process partition tests in raftstore still run")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipped: the ip command (iproute2) is not installed")
	}
	b := make([]byte, 3)
	rand.Read(b)
	tag := hex.EncodeToString(b)
	lab := &netnsLab{t: t, sw: "st" + tag + "sw"}
	t.Cleanup(lab.destroy)
	must := func(args ...string) {
		t.Helper()
		if err := ipCmd(args...); err != nil {
			t.Fatal(err)
		}
	}
	must("netns", "add", lab.sw)
	must("-n", lab.sw, "link", "add", "br0", "type", "bridge")
	must("-n", lab.sw, "link", "set", "br0", "up")
	for i := 0; i < n; i++ {
		ns := fmt.Sprintf("st%sn%d", tag, i+1)
		swSide, nodeSide := fmt.Sprintf("st%s%da", tag, i), fmt.Sprintf("st%s%db", tag, i)
		must("netns", "add", ns)
		lab.nodes = append(lab.nodes, ns)
		lab.links = append(lab.links, swSide)
		must("link", "add", swSide, "type", "veth", "peer", "name", nodeSide)
		must("link", "set", swSide, "netns", lab.sw)
		must("link", "set", nodeSide, "netns", ns)
		must("-n", lab.sw, "link", "set", swSide, "master", "br0")
		must("-n", lab.sw, "link", "set", swSide, "up")
		must("-n", ns, "link", "set", "lo", "up")
		must("-n", ns, "addr", "add", fmt.Sprintf("%s/24", lab.addr(i)), "dev", nodeSide)
		must("-n", ns, "link", "set", nodeSide, "up")
	}
	return lab
}

func (l *netnsLab) addr(i int) string { return fmt.Sprintf("10.213.0.%d", i+1) }

// cut unplugs node i's cable at the switch; plug puts it back.
func (l *netnsLab) cut(i int) error  { return ipCmd("-n", l.sw, "link", "set", l.links[i], "down") }
func (l *netnsLab) plug(i int) error { return ipCmd("-n", l.sw, "link", "set", l.links[i], "up") }

func (l *netnsLab) destroy() {
	for _, ns := range append(l.nodes, l.sw) {
		ipCmd("netns", "del", ns)
	}
}

// TestPartitionedLeaderAcrossNetworkNamespaces runs three stated processes
// in their own network namespaces and unplugs the leader's cable. The old
// leader cannot commit; the majority elects a leader and goes on; after
// the cable is back, the old leader's uncommitted write is gone everywhere
// and every acknowledged commit is on every node.
func TestPartitionedLeaderAcrossNetworkNamespaces(t *testing.T) {
	t.Parallel()
	lab := newNetnsLab(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nodes := make([]*node, 3)
	for i := range nodes {
		n := newNamedNode(t, fmt.Sprint("n", i+1))
		n.wrap = []string{"ip", "netns", "exec", lab.nodes[i]}
		n.grpcAddr = lab.addr(i) + ":7420"
		n.raftAddr = lab.addr(i) + ":7421"
		if i > 0 {
			n.args = []string{"--join", nodes[0].grpcAddr}
		}
		n.start(ctx)
		nodes[i] = n
	}

	commit := func(n *node, key string, timeout time.Duration) (uint64, error) {
		client, closeConn := n.client()
		defer closeConn()
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		resp, err := client.Commit(cctx, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{
			Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "netns", Key: []byte(key), Value: []byte("x"),
		}}})
		return resp.GetIndex(), err
	}
	var acked []string
	var maxIndex uint64
	for i := range 20 {
		key := fmt.Sprint("before/", i)
		var idx uint64
		// The same value again is harmless: a retry covers an election
		// (the cluster just formed, or a lease missed under load).
		err := daemontest.WhileUnavailable(ctx, func() (err error) {
			idx, err = commit(nodes[i%3], key, 10*time.Second)
			return err
		})
		if err != nil {
			t.Fatalf("commit %s: %v", key, err)
		}
		acked, maxIndex = append(acked, key), max(maxIndex, idx)
	}

	old := leaderOf(ctx, t, nodes)
	if err := lab.cut(old); err != nil {
		t.Fatal(err)
	}
	t.Logf("unplugged leader %s", nodes[old].id)
	if _, err := commit(nodes[old], "lost", 3*time.Second); err == nil {
		t.Fatal("the cut-off leader acknowledged a commit without a majority")
	}
	rest := append(append([]*node{}, nodes[:old]...), nodes[old+1:]...)
	for i := range 20 {
		key := fmt.Sprint("during/", i)
		var idx uint64
		var err error
		for try := 0; try < 100; try++ { // until the majority has a leader
			if idx, err = commit(rest[i%2], key, 2*time.Second); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("the majority could not commit %s: %v", key, err)
		}
		acked, maxIndex = append(acked, key), max(maxIndex, idx)
	}

	if err := lab.plug(old); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		client, closeConn := n.client()
		read := &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_SESSION, MinIndex: maxIndex}
		for _, key := range append(acked, "lost") {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			resp, err := client.Get(cctx, &statedv1.GetRequest{Namespace: "netns", Key: []byte(key), Kind: statedv1.Kind_KIND_VALUE, Read: read})
			cancel()
			switch {
			case err != nil:
				t.Fatalf("%s: read %s: %v", n.id, key, err)
			case key == "lost" && resp.Found:
				t.Errorf("%s: the cut-off leader's unacknowledged write survived", n.id)
			case key != "lost" && !resp.Found:
				t.Errorf("%s: acknowledged %s is missing", n.id, key)
			}
		}
		closeConn()
	}
}
