package test

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestARestoredDataDirIsRefusedWhenItWouldJoinACluster restores a
// checkpoint with `stated restore` (no --node-id) into a new data dir and
// starts a node on it with --join to a live cluster. A restored state
// starts a new cluster: joined to another, that cluster's log would apply
// on top of it and the replicas would differ (the joined node would keep
// keys the others do not have). So the node exits 1 naming --join and the
// data dir, having written no Raft state, and the cluster keeps its one
// member and commits. Started without --join, the same data dir
// bootstraps the restored cluster, with the checkpoint's state.
func TestARestoredDataDirIsRefusedWhenItWouldJoinACluster(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	n1 := newNode(t)
	n1.args = []string{"--checkpoint-url", bucket, "--checkpoint-interval", "1h"}
	n1.start(ctx)
	mustStated(ctx, t, "kv", "put", "restored", "k", "v", "--addr", n1.socket)
	mustStated(ctx, t, "checkpoint", "trigger", "--wait", "--addr", n1.socket)

	n2 := newNamedNode(t, "n2")
	mustStated(ctx, t, "restore", "--from", bucket, "--data-dir", n2.dataDir)
	// Bounded: a node that joins does not exit.
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	r := runStated(rctx, t, "run", "--node-id", n2.id, "--data-dir", n2.dataDir, "--socket", n2.socket,
		"--grpc-addr", n2.grpcAddr, "--raft-addr", n2.raftAddr, "--join", n1.grpcAddr)
	if r.code != 1 {
		t.Fatalf("stated run --join on a restored data dir: exit %d, want 1\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"restored state cannot join a cluster", n2.dataDir, "checkpoint 1", "--join", "wipe the data dir"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the refusal does not say %q:\n%s", want, r.stderr)
		}
	}
	if _, err := os.Lstat(filepath.Join(n2.dataDir, "raft")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refusal created the Raft dir (%v)", err)
	}
	members := mustStated(ctx, t, "cluster", "members", "--addr", n1.socket)
	if strings.Contains(members, "n2") || !strings.Contains(members, "n1") {
		t.Errorf("after the refused join the cluster's members are:\n%s\nwant n1 alone", members)
	}
	mustStated(ctx, t, "kv", "put", "restored", "after", "v", "--addr", n1.socket)

	// Without --join the restored data dir bootstraps its new cluster.
	n2.start(ctx)
	if got := strings.TrimSpace(mustStated(ctx, t, "kv", "get", "restored", "k", "--addr", n2.socket)); got != "v" {
		t.Errorf("the restored node's restored/k = %q, want v", got)
	}
}
