package test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/internal/smalldisk"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
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
	// --min-free-disk 0: the disk is to fill through Pebble, which the
	// guard would stop at 128 MiB free.
	n.args = []string{"--raft-log-store", "wal", "--min-free-disk", "0"}
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

// TestCommitsAreRefusedWhileTheDiskIsBelowMinFreeDisk: with less free
// space on the data dir's disk than --min-free-disk, the leader refuses
// commits (RESOURCE_EXHAUSTED with a DiskFull detail, the SDK's
// ErrDiskFull) and applies nothing of them, where it used to write on
// until Pebble could not flush; reads go on, /metrics shows the free
// space and the refusals, and commits go through again once there is
// room, without a restart.
func TestCommitsAreRefusedWhileTheDiskIsBelowMinFreeDisk(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	disk := smalldisk.Mount(t, 256)
	n := newNode(t)
	metricsAddr := freeAddr(t)
	n.args = []string{"--raft-log-store", "wal", "--min-free-disk", "64MiB", "--metrics-addr", metricsAddr}
	n.dataDir = filepath.Join(disk, "data")
	n.start(ctx)
	client, closeConn := n.client()
	defer closeConn()
	put := func(key string) error {
		_, err := client.Commit(ctx, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{
			Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "s", Key: []byte(key), Value: []byte("v")}}})
		return err
	}
	if err := put("before"); err != nil {
		t.Fatal(err)
	}
	smalldisk.WaitSettled(t, disk)
	filler := filepath.Join(disk, "filler")
	smalldisk.Fill(t, filler, 32<<20)  // 32 MiB left, below the 64 MiB
	time.Sleep(200 * time.Millisecond) // past the guard's 100 ms reading

	err := put("refused")
	st := status.Convert(err)
	var detail *statedv1.DiskFull
	for _, d := range st.Details() {
		if df, ok := d.(*statedv1.DiskFull); ok {
			detail = df
		}
	}
	if st.Code() != codes.ResourceExhausted || detail == nil || !strings.Contains(st.Message(), "--min-free-disk 64.0 MiB") {
		t.Fatalf("commit with 32 MiB free: %v (detail %v); want RESOURCE_EXHAUSTED naming --min-free-disk with a DiskFull detail", err, detail)
	}
	if detail.GetNodeId() != "n1" || detail.GetMinFreeBytes() != 64<<20 || detail.GetFreeBytes() >= 64<<20 {
		t.Errorf("detail %v", detail)
	}
	t.Logf("refused: %s", st.Message())

	// The SDK's error, and no resend of the commit alone (that is for a
	// message too large).
	sc, err := stated.Dial(ctx, n.socket, stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	_, err = sc.Txn().CounterAdd("s", []byte("c"), 1).Commit(ctx)
	if !errors.Is(err, stated.ErrDiskFull) || !errors.Is(err, stated.ErrResourceExhausted) {
		t.Fatalf("SDK commit: %v; want ErrDiskFull", err)
	}

	// Nothing of either applied; reads go on.
	for _, key := range []string{"refused"} {
		resp, err := client.Get(ctx, &statedv1.GetRequest{Namespace: "s", Key: []byte(key), Kind: statedv1.Kind_KIND_VALUE})
		if err != nil || resp.GetFound() {
			t.Errorf("get %q: found %v, %v; want not found", key, resp.GetFound(), err)
		}
	}
	if n, err := sc.GetCounter(ctx, "s", []byte("c")); err != nil || n != 0 {
		t.Errorf("counter after the refused add: %d, %v", n, err)
	}
	resp, err := client.Get(ctx, &statedv1.GetRequest{Namespace: "s", Key: []byte("before"), Kind: statedv1.Kind_KIND_VALUE})
	if err != nil || !resp.GetFound() {
		t.Fatalf("read while commits are refused: %v", err)
	}
	fams := scrape(t, metricsAddr)
	value := func(name string) float64 {
		m := sample(fams, name)
		if m == nil {
			t.Errorf("no %s in /metrics", name)
			return -1
		}
		if m.GetGauge() != nil {
			return m.GetGauge().GetValue()
		}
		return m.GetCounter().GetValue()
	}
	if v := value("stated_min_free_disk_bytes"); v != 64<<20 {
		t.Errorf("stated_min_free_disk_bytes %v", v)
	}
	if v := value("stated_data_dir_free_bytes"); v <= 0 || v >= 64<<20 {
		t.Errorf("stated_data_dir_free_bytes %v with about 32 MiB free", v)
	}
	if v := value("stated_commits_refused_disk_full_total"); v < 2 {
		t.Errorf("stated_commits_refused_disk_full_total %v after two refused commits", v)
	}
	if !strings.Contains(n.logs.String(), "refusing commits until there is room") {
		t.Errorf("no warning logged")
	}

	// Room again: commits go through, without a restart.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := put("after")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("commit after freeing space: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := sc.Txn().CounterAdd("s", []byte("c"), 1).Commit(ctx); err != nil {
		t.Fatalf("SDK commit after freeing space: %v", err)
	}
	if !strings.Contains(n.logs.String(), "commits resume") {
		t.Errorf("no line logged when commits resumed")
	}
}
