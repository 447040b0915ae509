package test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/statedhq/stated/internal/smalldisk"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestAStartOntoAFullDiskStopsNamingTheDisk: a node killed with 8 MiB
// in its memtable (so only in Pebble's WAL) starts again on a disk too
// full for the table its WAL replay must flush. Pebble retries that
// flush forever, and the start hung: it logged Pebble's background
// error thousands of times a second, never served, and ignored SIGTERM.
// It now stops at once, saying the disk is full and what to do, having
// logged the error a few times at most.
func TestAStartOntoAFullDiskStopsNamingTheDisk(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// 256 MiB: Pebble preallocates its WAL (72 MB of the disk before
	// anything is written) and raft-wal zeroes its segment ahead. The Raft
	// log is raft-wal's whatever STATED_TEST_RAFT_LOG_STORE says: with
	// raft-boltdb on a tmpfs, appends failed ENOSPC within the first few
	// commits with three quarters of the disk free (not traced), and
	// what this test checks is the state's open.
	disk := smalldisk.Mount(t, 256)
	n := newNode(t)
	n.args = []string{"--raft-log-store", "wal"}
	n.dataDir = filepath.Join(disk, "data")
	n.start(ctx)
	client, closeConn := n.client()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 128 {
		value := make([]byte, 64<<10)
		for j := range value {
			value[j] = byte(rng.Uint32())
		}
		if _, err := client.Commit(ctx, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{
			Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "s", Key: fmt.Appendf(nil, "k%05d", i), Value: value}}}); err != nil {
			t.Fatal(err)
		}
	}
	closeConn()
	n.kill()
	// Room for what a start writes before the replay's flush, not for
	// the table.
	smalldisk.WaitSettled(t, disk)
	if n := smalldisk.Fill(t, filepath.Join(disk, "filler"), 1<<20); n < 15<<20 {
		t.Fatalf("filler of %d bytes: the disk was full before", n+1<<20)
	}

	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	started := time.Now()
	if exited := n.startOnce(sctx); !exited {
		t.Fatal("stated started onto a full disk that has no room for its WAL's table")
	}
	logs := n.logs.String()
	if !strings.Contains(logs, "no space left on device") || !strings.Contains(logs, "the data dir's disk is full: free space and start again") {
		t.Fatalf("stated exited after %v without naming the full disk:\n%s", time.Since(started), logs)
	}
	t.Logf("stated exited after %v; its last lines:\n%s", time.Since(started), lastLines(logs, 4))
	if took := time.Since(started); took > 20*time.Second {
		t.Errorf("stated took %v to give up", took)
	}
	if c := strings.Count(logs, "background error"); c > 3 {
		t.Errorf("%d background errors logged; want a few at most", c)
	}

	// With space again, it starts, with every commit.
	if err := os.Remove(filepath.Join(disk, "filler")); err != nil {
		t.Fatal(err)
	}
	n.start(ctx)
	client, closeConn = n.client()
	defer closeConn()
	resp, err := client.Get(ctx, &statedv1.GetRequest{Namespace: "s", Key: []byte("k00127"), Kind: statedv1.Kind_KIND_VALUE})
	if err != nil || len(resp.GetValue()) != 64<<10 {
		t.Fatalf("the last commit after the start with space again: %d bytes, %v", len(resp.GetValue()), err)
	}
}
