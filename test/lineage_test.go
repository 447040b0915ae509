package test

import (
	"context"
	"errors"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	stated "github.com/statedhq/stated/sdk/go"
)

// TestAClientNeverReachesAnotherClusterAtItsAddress: an SDK client's
// address can come to reach a node of another cluster: the port of its
// stopped daemon taken by another deployment's, a DNS name or pod IP that
// now points elsewhere. The other cluster has no session for the client,
// and the SDK reopens a session whose first attempt finds none (that is
// how a session lost in an idle timeout or a restore is recovered), so
// before clients carried their cluster's lineage the other cluster opened
// one and applied the client's commits, acknowledged. It must refuse
// every call of the client instead, with ErrOtherCluster, apply nothing,
// and the client must work again once its address reaches its own
// cluster.
func TestAClientNeverReachesAnotherClusterAtItsAddress(t *testing.T) {
	t.Parallel()
	skipLong(t) // processes only
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	own := newNamedNode(t, "n1")
	own.start(ctx)
	c, err := stated.Dial(ctx, own.grpcAddr, stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Txn().Put("lin", []byte("k1"), []byte("own")).Commit(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := c.NodeStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.Lineage() == "" || c.Lineage() != st.ClusterID || st.LineageID != st.ClusterID {
		t.Fatalf("a cluster never restored: the client's lineage %q, the node's %q, its cluster id %q; want all three equal", c.Lineage(), st.LineageID, st.ClusterID)
	}

	// Another cluster takes the address.
	own.kill()
	other := takeGRPCAddr(ctx, t, "n1", own.grpcAddr)
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = c.Txn().Put("lin", []byte("k2"), []byte("other")).Commit(cctx)
	ccancel()
	t.Logf("a commit at the other cluster: %v", err)
	if !errors.Is(err, stated.ErrOtherCluster) || !errors.Is(err, stated.ErrFailedPrecondition) {
		t.Errorf("a commit that reached another cluster returned %v; want ErrOtherCluster (and ErrFailedPrecondition)", err)
	}
	if err != nil && !strings.Contains(err.Error(), c.Lineage()) {
		t.Errorf("the refusal does not name the client's lineage %s: %v", c.Lineage(), err)
	}
	if _, _, err := c.Get(ctx, "lin", []byte("k1")); !errors.Is(err, stated.ErrOtherCluster) {
		t.Errorf("a read that reached another cluster returned %v; want ErrOtherCluster", err)
	}
	if got := runStated(ctx, t, "kv", "get", "lin", "k2", "--consistency", "local", "--addr", other.socket); got.code == 0 {
		t.Errorf("the other cluster applied the client's commit: it holds lin/k2 = %q", strings.TrimSpace(got.stdout))
	}

	// The address reaches the client's own cluster again.
	other.kill()
	own.start(ctx)
	cctx, ccancel = context.WithTimeout(ctx, 30*time.Second)
	defer ccancel()
	if _, err := c.Txn().Put("lin", []byte("k3"), []byte("own")).Commit(cctx); err != nil {
		t.Fatalf("a commit once the address reaches the client's own cluster again: %v", err)
	}
	waitStated(ctx, t, equals("own"), "kv", "get", "lin", "k3", "--addr", own.socket)
}

// TestAClientKeepsCommittingAcrossRestoresOfItsCluster: a cluster
// restored from a checkpoint is a new cluster (a new id, no client
// sessions), and it continues the lineage of the cluster the checkpoint
// came from, through a restore of a restore too. A client of the lost
// cluster that stays up through the loss and the restore goes on
// committing to the restored one: the lineage check refuses unrelated
// clusters only.
func TestAClientKeepsCommittingAcrossRestoresOfItsCluster(t *testing.T) {
	t.Parallel()
	skipLong(t) // processes only
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	n := newNamedNode(t, "n1")
	n.args = []string{"--checkpoint-url", bucket}
	n.start(ctx)
	c, err := stated.Dial(ctx, n.grpcAddr, stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	root := ""
	for round := 1; round <= 2; round++ {
		cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := c.Txn().Put("lin", []byte("k"), []byte{byte('0' + round)}).Commit(cctx)
		ccancel()
		if err != nil {
			t.Fatalf("round %d: a commit of a client that was up through %d restores: %v", round, round-1, err)
		}
		st, err := c.NodeStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if round == 1 {
			root = st.ClusterID
		}
		t.Logf("round %d: cluster %s, lineage %s, the client's %s", round, st.ClusterID, st.LineageID, c.Lineage())
		if st.LineageID != root || c.Lineage() != root {
			t.Fatalf("round %d: the node's lineage %q and the client's %q; want the first cluster's id %s", round, st.LineageID, c.Lineage(), root)
		}
		if round > 1 && st.ClusterID == root {
			t.Fatalf("round %d: the restored cluster kept the id %s; a restore makes a new cluster", round, root)
		}
		if round > 1 {
			if out := mustStated(ctx, t, "status", "--addr", n.socket); !strings.Contains(out, "cluster "+st.ClusterID+" (restored; lineage "+root+")") {
				t.Errorf("round %d: stated status does not show the restored cluster's lineage:\n%s", round, out)
			}
		}

		// Checkpoint, lose the node and its data, restore.
		mustStated(ctx, t, "checkpoint", "trigger", "--wait", "--addr", n.socket, "--timeout", "30s")
		n.kill()
		if err := os.RemoveAll(n.dataDir); err != nil {
			t.Fatal(err)
		}
		mustStated(ctx, t, "restore", "--from", bucket, "--data-dir", n.dataDir)
		n.start(ctx)
		waitStated(ctx, t, equals(string([]byte{byte('0' + round)})), "kv", "get", "lin", "k", "--addr", n.socket)
	}
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	defer ccancel()
	if _, err := c.Txn().Put("lin", []byte("k"), []byte("3")).Commit(cctx); err != nil {
		t.Fatalf("a commit after the second restore: %v", err)
	}
	st, err := c.NodeStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.LineageID != root {
		t.Fatalf("after two restores the lineage is %q; want the first cluster's id %s", st.LineageID, root)
	}
}

// TestAClientWithSeveralAddressesMovesOffOneAnotherClusterTook: a client
// given every member's address stays on the one it is connected to
// (gRPC's pick_first) while that connection is up. When that member
// stops and a node of another cluster takes its address, the client
// reconnects there and is refused; it must leave that address for its
// next one, where its own cluster serves the call, rather than fail every
// call while two of its three addresses would answer.
func TestAClientWithSeveralAddressesMovesOffOneAnotherClusterTook(t *testing.T) {
	t.Parallel()
	skipLong(t) // processes only
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := startCluster(ctx, t, 3)
	c, err := stated.Dial(ctx, addrs(nodes), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Txn().Put("lin", []byte("k1"), []byte("own")).Commit(ctx); err != nil {
		t.Fatal(err)
	}

	// The first address is the one pick_first connected to.
	gone := nodes[0]
	gone.kill()
	other := takeGRPCAddr(ctx, t, "x1", gone.grpcAddr)
	cctx, ccancel := context.WithTimeout(ctx, time.Minute)
	defer ccancel()
	if _, err := c.Txn().Put("lin", []byte("k2"), []byte("own")).Commit(cctx); err != nil {
		t.Fatalf("a commit of a client whose first address another cluster took, with two members of its own at its other addresses: %v", err)
	}
	if got := runStated(ctx, t, "kv", "get", "lin", "k2", "--consistency", "local", "--addr", other.socket); got.code == 0 {
		t.Errorf("the other cluster applied the client's commit: it holds lin/k2 = %q", strings.TrimSpace(got.stdout))
	}
	waitStated(ctx, t, equals("own"), "kv", "get", "lin", "k2", "--consistency", "local", "--addr", nodes[1].socket)
	waitStated(ctx, t, equals("own"), "kv", "get", "lin", "k2", "--consistency", "local", "--addr", nodes[2].socket)
}

// takeGRPCAddr starts a one-node cluster of its own, node id, serving
// gRPC at addr, a stopped node's address.
func takeGRPCAddr(ctx context.Context, t *testing.T, id, addr string) *node {
	t.Helper()
	n := newNamedNode(t, id)
	n.grpcAddr = addr
	n.start(ctx)
	if n.grpcAddr != addr {
		t.Fatalf("another cluster could not take the address %s (another process had it): the test needs it", addr)
	}
	return n
}
