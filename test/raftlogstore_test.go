package test

import (
	"context"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

// TestSIGKILLOnEachRaftLogStoreLosesNoAcknowledgedCommit kills `stated run
// --raft-log-store S` with SIGKILL mid-load, three times, for each store
// S, and checks after every restart that every acknowledged commit is
// there exactly once (see killMidLoadAndCheck).
func TestSIGKILLOnEachRaftLogStoreLosesNoAcknowledgedCommit(t *testing.T) {
	t.Parallel()
	for _, store := range []struct{ name, path string }{
		{"wal", filepath.Join("raft", "wal")},
		{"boltdb", filepath.Join("raft", "raft.db")},
	} {
		t.Run(store.name, func(t *testing.T) {
			n := newNode(t)
			n.args = append(n.args, "--raft-log-store", store.name)
			killMidLoadAndCheck(t, n)
			if _, err := os.Stat(filepath.Join(n.dataDir, store.path)); err != nil {
				t.Fatalf("stated run --raft-log-store %s kept no %s: %v", store.name, store.path, err)
			}
		})
	}
}

// TestStatedRunRefusesADataDirOfTheOtherRaftLogStore: a node created with
// one store, killed, and started again with the other stops with an error
// naming the flag and the store it found, leaves its data dir as it was,
// and runs again, with every commit, when the flag is left out.
func TestStatedRunRefusesADataDirOfTheOtherRaftLogStore(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, tc := range []struct{ created, asked string }{{"boltdb", "wal"}, {"wal", "boltdb"}} {
		t.Run(tc.created+" asked "+tc.asked, func(t *testing.T) {
			n := newNode(t)
			n.args = []string{"--raft-log-store", tc.created}
			n.start(ctx)
			client, closeConn := n.client()
			acked := make([]int64, 1)
			for seq := int64(1); seq <= 20; seq++ {
				commitWorker(ctx, t, client, 0, seq)
				acked[0] = seq
			}
			closeConn()
			n.kill()

			before := dirListing(t, n.dataDir)
			n.args = []string{"--raft-log-store", tc.asked}
			if exited := n.startOnce(ctx); !exited {
				t.Fatalf("stated run --raft-log-store %s on a %s data dir serves", tc.asked, tc.created)
			}
			out := n.logs.String()
			for _, want := range []string{"Raft log is " + tc.created, "--raft-log-store " + tc.asked + " cannot open it", "start with --raft-log-store " + tc.created} {
				if !strings.Contains(out, want) {
					t.Errorf("refusal does not say %q; output:\n%s", want, out)
				}
			}
			if after := dirListing(t, n.dataDir); after != before {
				t.Errorf("the refused start changed the data dir:\nbefore:\n%s\nafter:\n%s", before, after)
			}

			// An empty store is the data dir's own, as when the flag is
			// left out (which STATED_TEST_RAFT_LOG_STORE would fill in).
			n.args = []string{"--raft-log-store", ""}
			n.start(ctx)
			client, closeConn = n.client()
			defer closeConn()
			checkDurable(ctx, t, client, acked)
		})
	}
}

// commitWorker commits worker w's commit number seq as
// killMidLoadAndCheck's workers do: its counter plus one and its last
// sequence, atomically.
func commitWorker(ctx context.Context, t *testing.T, client statedv1.StateClient, w int, seq int64) {
	t.Helper()
	_, err := client.Commit(ctx, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{
		{Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, Namespace: "dur", Key: []byte(fmt.Sprint("count/", w)), Delta: 1},
		{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "dur", Key: []byte(fmt.Sprint("last/", w)), Value: []byte(fmt.Sprint(seq))},
	}})
	if err != nil {
		t.Fatal(err)
	}
}

// dirListing is every path under root with its size and modification
// time, one a line.
func dirListing(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fmt.Fprintf(&b, "%s %s %d %d\n", rel, info.Mode(), info.Size(), info.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestRestoreCreatesTheRaftLogInTheChosenStore: `stated restore --node-id
// --raft-log-store wal` of a checkpoint taken by a boltdb node bootstraps
// the restored node's Raft log in raft/wal/, says so in its next step,
// and `stated run` without a store opens it with every committed entry.
func TestRestoreCreatesTheRaftLogInTheChosenStore(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	old := newNamedNode(t, "old")
	old.args = []string{"--checkpoint-url", bucket, "--checkpoint-interval", "1h", "--raft-log-store", "boltdb"}
	old.start(ctx)
	client, closeConn := old.client()
	acked := []int64{20}
	for seq := int64(1); seq <= acked[0]; seq++ {
		commitWorker(ctx, t, client, 0, seq)
	}
	closeConn()
	mustStated(ctx, t, "checkpoint", "trigger", "--wait", "--addr", old.socket)
	old.kill()

	n := newNamedNode(t, "restored")
	out := mustStated(ctx, t, "restore", "--from", bucket, "--data-dir", n.dataDir,
		"--node-id", n.id, "--raft-addr", n.raftAddr, "--raft-log-store", "wal")
	if !strings.Contains(out, "--raft-log-store wal") {
		t.Errorf("restore's next step does not carry the store:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(n.dataDir, "raft", "wal")); err != nil {
		t.Fatalf("restore --raft-log-store wal made no raft/wal: %v", err)
	}
	if _, err := os.Stat(filepath.Join(n.dataDir, "raft", "raft.db")); !os.IsNotExist(err) {
		t.Fatalf("restore --raft-log-store wal made raft/raft.db (%v)", err)
	}
	n.args = []string{"--raft-log-store", ""} // the data dir's own
	n.start(ctx)
	client, closeConn = n.client()
	defer closeConn()
	checkDurable(ctx, t, client, acked)
}

// TestMovingANodeToTheOtherRaftLogStoreByRejoiningLosesNothing follows
// the README's way to switch a node's Raft log store: stop it, move its
// data dir away, and start it with the other store, its old id and
// addresses, and --join. It catches up (from a snapshot: the leader has
// compacted its log) and serves every commit, in a cluster whose other
// members keep their store.
func TestMovingANodeToTheOtherRaftLogStoreByRejoiningLosesNothing(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	snapshots := []string{"--raft-snapshot-threshold", "64", "--raft-snapshot-interval", "100ms", "--raft-trailing-logs", "16"}
	nodes := startCluster(ctx, t, 3, append([]string{"--raft-log-store", "boltdb"}, snapshots...)...)
	c, err := stated.Dial(ctx, addrs(nodes))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := startCounterWorkers(ctx, t, c, 2)
	defer w.halt()
	w.waitFor(ctx, t, 200)

	moved := nodes[(leaderOf(ctx, t, nodes)+1)%3]
	moved.kill()
	if err := os.Rename(moved.dataDir, moved.dataDir+".boltdb"); err != nil {
		t.Fatal(err)
	}
	w.waitFor(ctx, t, w.total.Load()+400)
	join := nodes[0].grpcAddr
	if moved == nodes[0] {
		join = nodes[1].grpcAddr
	}
	moved.args = append(append([]string{"--raft-log-store", "wal"}, snapshots...), "--join", join)
	moved.start(ctx)
	w.waitFor(ctx, t, w.total.Load()+100)
	w.halt()
	w.checkNode(ctx, t, moved)
	if _, err := os.Stat(filepath.Join(moved.dataDir, "raft", "wal")); err != nil {
		t.Fatalf("the moved node has no raft/wal: %v", err)
	}
	for _, n := range nodes {
		if n != moved {
			if _, err := os.Stat(filepath.Join(n.dataDir, "raft", "raft.db")); err != nil {
				t.Fatalf("%s lost its boltdb log: %v", n.id, err)
			}
		}
	}
}
