package test

import (
	"context"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/statedhq/stated/raftstore"
)

// TestNodesStartedOnTheirOldDataDirsAfterARollbackStop follows
// OPERATIONS.md "Before a deploy: a savepoint; rolling back to it" on the
// practice cluster's shape (every node with the same --join list of all
// members and --bootstrap-node-id n1), and then the mistake its "What can
// go wrong" names: n2 and n3 started on their old data dirs instead of
// empty ones, right after n1 (step 5 starts them backgrounded).
//
// Each node asks its join addresses once, at start, and skips one that
// does not answer yet: started together, n2 and n3 (a majority of the old
// cluster's three voters) elected a leader and served the old cluster
// beside the restored n1, on the same addresses and lineage; or the
// restored n1, finding them answering for the old cluster, refused
// itself, and the rollback was undone. Now the restored n1 does not
// refuse itself for the cluster it was restored from, and tells a node of
// that cluster that reaches its Raft port to stop: n2 and n3 are refused
// at start or stop soon after, whatever the order.
func TestNodesStartedOnTheirOldDataDirsAfterARollbackStop(t *testing.T) {
	t.Parallel()
	skipLong(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()

	nodes := practiceCluster(ctx, t, bucket)
	addr := nodes[0].socket
	mustStated(ctx, t, "kv", "put", "app", "version", "v1", "--addr", addr)
	mustStated(ctx, t, "checkpoint", "trigger", "--wait", "--addr", addr)
	mustStated(ctx, t, "checkpoint", "savepoint", "before-deploy", "--addr", addr)
	mustStated(ctx, t, "kv", "put", "app", "version", "v2-bad", "--addr", addr)

	// Step 3: stop every node.
	for _, n := range nodes {
		if code := n.stop(syscall.SIGTERM); code != 0 {
			t.Fatalf("%s exited %d on SIGTERM", n.id, code)
		}
	}
	// Steps 4 and 5, without step 5's rm -rf: restore the savepoint into
	// n1's data dir, start n1, and n2 and n3 right after it, as the
	// runbook's backgrounded commands start them. Whether they are
	// refused depends on which process comes up first, so the round is
	// played a few times with different gaps between the starts; every
	// round must end with n1 serving the savepoint and n2, n3 refused.
	n1 := nodes[0]
	for round, gap := range []time.Duration{0, 5 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond, 2 * time.Millisecond, 10 * time.Millisecond} {
		for _, n := range nodes {
			n.kill()
		}
		mustStated(ctx, t, "restore", "--from", bucket, "--checkpoint", "before-deploy", "--data-dir", n1.dataDir,
			"--force", "--node-id", "n1", "--raft-addr", n1.raftAddr)
		startCtx, startCancel := context.WithTimeout(ctx, 30*time.Second)
		exited := make([]bool, len(nodes))
		var wg sync.WaitGroup
		for i, n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				exited[i] = n.startOnce(startCtx)
			}()
			time.Sleep(gap)
		}
		wg.Wait()
		startCancel()
		if exited[0] {
			t.Fatalf("round %d (starts %v apart): the restored n1 was refused; its log:\n%s", round+1, gap, nodes[0].logs)
		}
		// n2 and n3: refused at start, or stopped once they reach n1.
		for _, n := range nodes[1:] {
			select {
			case <-n.done:
			case <-time.After(30 * time.Second):
				r := runStated(ctx, t, "kv", "get", "app", "version", "--consistency", "linearizable", "--addr", n.socket)
				t.Fatalf("round %d (starts %v apart): %s, started on its old data dir, still runs 30s later and serves the old cluster (kv get app version: %q %q); its log:\n%s",
					round+1, gap, n.id, strings.TrimSpace(r.stdout), strings.TrimSpace(r.stderr), n.logs)
			}
			if log := n.logs.String(); !strings.Contains(log, "belongs to cluster") && !strings.Contains(log, "replaced by a restore") {
				t.Errorf("round %d: %s stopped without saying why; its log:\n%s", round+1, n.id, log)
			}
		}
		if got := strings.TrimSpace(mustStated(ctx, t, "kv", "get", "app", "version", "--consistency", "linearizable", "--addr", n1.socket)); got != "v1" {
			t.Fatalf("round %d: the restored n1 reads app/version %q, want the savepoint's v1", round+1, got)
		}
	}
}

// TestARestoreOntoOneMemberOfARunningClusterRefusesItself: a checkpoint
// restored by mistake onto one member's data dir (`stated restore
// --node-id n1`) while the other members keep serving. The restored n1
// finds its join addresses serving the cluster it was restored from;
// those nodes have served for longer than a rollback's start
// (raftstore.SupersedeGrace), so they are not told to stop, and n1,
// after waiting for them, refuses itself naming the way out; started
// without its --join list, it asks the addresses the checkpoint recorded
// for the other members, and refuses itself too. The running
// cluster keeps serving, without interruption, and nothing it
// acknowledged is lost.
func TestARestoreOntoOneMemberOfARunningClusterRefusesItself(t *testing.T) {
	t.Parallel()
	skipLong(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	nodes := practiceCluster(ctx, t, bucket)
	started := time.Now()
	n1, n2 := nodes[0], nodes[1]
	mustStated(ctx, t, "kv", "put", "app", "version", "v1", "--addr", n2.socket)
	mustStated(ctx, t, "checkpoint", "trigger", "--wait", "--addr", n2.socket)
	mustStated(ctx, t, "kv", "put", "app", "version", "v2", "--addr", n2.socket)
	// The other members have served past the grace by the time n1 comes
	// back restored.
	time.Sleep(time.Until(started.Add(raftstore.SupersedeGrace + 2*time.Second)))
	if code := n1.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("n1 exited %d on SIGTERM", code)
	}
	mustStated(ctx, t, "restore", "--from", bucket, "--data-dir", n1.dataDir, "--force", "--node-id", "n1", "--raft-addr", n1.raftAddr)
	startCtx, startCancel := context.WithTimeout(ctx, 2*time.Minute)
	defer startCancel()
	if !n1.startOnce(startCtx) {
		t.Fatalf("the restored n1 serves a second cluster on the running cluster's addresses; its log:\n%s", n1.logs)
	}
	if log := n1.logs.String(); !strings.Contains(log, "which this node's cluster") || !strings.Contains(log, "--join") {
		t.Errorf("n1 refused itself without saying why and what to do; its log:\n%s", log)
	}
	// Started without its --join list, the restored n1 asks the
	// addresses the checkpoint recorded for the other members, since it
	// serves at the address the checkpoint recorded for n1, and refuses
	// itself the same way; it used to serve a second cluster of the
	// running cluster's lineage on n1's address.
	n1.args = []string{"--checkpoint-url", bucket, "--checkpoint-interval", "1h"}
	if !n1.startOnce(startCtx) {
		t.Fatalf("the restored n1, started without --join, serves a second cluster on the running cluster's addresses; its log:\n%s", n1.logs)
	}
	if log := n1.logs.String(); !strings.Contains(log, "the checkpoint's member address") || !strings.Contains(log, "which this node's cluster") || !strings.Contains(log, "--join") {
		t.Errorf("n1, started without --join, refused itself without saying why and what to do; its log:\n%s", log)
	}
	for _, n := range nodes[1:] {
		select {
		case <-n.done:
			t.Fatalf("%s of the running cluster stopped; its log:\n%s", n.id, n.logs)
		default:
		}
	}
	if got := strings.TrimSpace(mustStated(ctx, t, "kv", "get", "app", "version", "--consistency", "linearizable", "--addr", n2.socket)); got != "v2" {
		t.Fatalf("the running cluster reads app/version %q, want v2", got)
	}
}

// practiceCluster starts OPERATIONS.md's practice cluster: n1, n2, n3
// with the same flags (the --join list of all, --bootstrap-node-id n1),
// checkpointing to bucket on demand.
func practiceCluster(ctx context.Context, t *testing.T, bucket string) []*node {
	t.Helper()
	nodes := []*node{newNamedNode(t, "n1"), newNamedNode(t, "n2"), newNamedNode(t, "n3")}
	join := addrs(nodes)
	for _, n := range nodes {
		n.args = []string{"--join", join, "--bootstrap-node-id", "n1", "--checkpoint-url", bucket, "--checkpoint-interval", "1h"}
	}
	for _, n := range nodes {
		n.start(ctx)
	}
	return nodes
}
