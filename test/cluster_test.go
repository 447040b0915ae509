package test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

// startCluster starts n `stated run` processes: n1 bootstraps, the others
// join it. extra flags go to every node.
func startCluster(ctx context.Context, t *testing.T, n int, extra ...string) []*node {
	t.Helper()
	nodes := make([]*node, n)
	for i := range nodes {
		nodes[i] = newNamedNode(t, fmt.Sprint("n", i+1))
		nodes[i].args = append([]string{}, extra...)
		if i > 0 {
			nodes[i].args = append(nodes[i].args, "--join", nodes[0].grpcAddr)
		}
		nodes[i].start(ctx)
	}
	return nodes
}

func addrs(nodes []*node) string {
	var a []string
	for _, n := range nodes {
		a = append(a, n.grpcAddr)
	}
	return strings.Join(a, ",")
}

func nodeStatus(ctx context.Context, n *node) (*statedv1.NodeStatusResponse, error) {
	conn := n.dial()
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return statedv1.NewClusterClient(conn).NodeStatus(cctx, &statedv1.NodeStatusRequest{})
}

// leaderOf polls the nodes until one of them says it leads.
func leaderOf(ctx context.Context, t *testing.T, nodes []*node) int {
	t.Helper()
	for {
		for i, n := range nodes {
			if st, err := nodeStatus(ctx, n); err == nil && st.Role == "leader" {
				return i
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal("no leader")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// counterWorkers commit counter increments through the SDK until stopped.
// Each commit adds 1 to the worker's counter and writes its sequence to the
// worker's "last" key, atomically.
type counterWorkers struct {
	acked []atomic.Int64 // highest acknowledged sequence per worker
	total atomic.Int64
	index atomic.Uint64 // highest acknowledged commit index
	stop  context.CancelFunc
	wg    sync.WaitGroup
}

func startCounterWorkers(ctx context.Context, t *testing.T, c *stated.Client, n int) *counterWorkers {
	wctx, stop := context.WithCancel(ctx)
	w := &counterWorkers{acked: make([]atomic.Int64, n), stop: stop}
	for i := 0; i < n; i++ {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for seq := int64(1); wctx.Err() == nil; seq++ {
				res, err := c.Txn().
					CounterAdd("cluster", []byte(fmt.Sprint("count/", i)), 1).
					Put("cluster", []byte(fmt.Sprint("last/", i)), []byte(strconv.FormatInt(seq, 10))).
					Commit(wctx)
				if err != nil {
					if wctx.Err() == nil {
						t.Errorf("worker %d: commit %d failed although the SDK retries: %v", i, seq, err)
					}
					return
				}
				w.acked[i].Store(seq)
				w.total.Add(1)
				for {
					cur := w.index.Load()
					if res.Index <= cur || w.index.CompareAndSwap(cur, res.Index) {
						break
					}
				}
			}
		}()
	}
	return w
}

func (w *counterWorkers) waitFor(ctx context.Context, t *testing.T, total int64) {
	t.Helper()
	for w.total.Load() < total {
		if ctx.Err() != nil {
			t.Fatalf("only %d of %d commits acknowledged before the deadline", w.total.Load(), total)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (w *counterWorkers) halt() { w.stop(); w.wg.Wait() }

// checkNode reads every worker's counter and last sequence on one node at
// session consistency (after the highest acknowledged index) and checks
// them: nothing lost, nothing applied twice or in part. Both keys of every
// worker come from one Scan response, which the daemon reads from one
// Pebble iterator: a commit abandoned by a halted worker may still land
// while the check runs, and two separate reads could straddle it.
func (w *counterWorkers) checkNode(ctx context.Context, t *testing.T, n *node) {
	t.Helper()
	client, closeConn := n.client()
	defer closeConn()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stream, err := client.Scan(cctx, &statedv1.ScanRequest{Namespace: "cluster", Read: &statedv1.ReadOptions{
		Consistency: statedv1.Consistency_CONSISTENCY_SESSION, MinIndex: w.index.Load(),
	}})
	if err != nil {
		t.Fatalf("%s: scan: %v", n.id, err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("%s: scan: %v", n.id, err)
	}
	if len(resp.Entries) != 2*len(w.acked) {
		t.Fatalf("%s: one scan response holds %d entries, want both keys of %d workers", n.id, len(resp.Entries), len(w.acked))
	}
	counters, lasts := map[string]int64{}, map[string]int64{}
	for _, e := range resp.Entries {
		if k, ok := strings.CutPrefix(string(e.Key), "count/"); ok {
			counters[k] = e.Counter
		} else if k, ok := strings.CutPrefix(string(e.Key), "last/"); ok {
			lasts[k], _ = strconv.ParseInt(string(e.Value), 10, 64)
		}
	}
	for i := range w.acked {
		k := strconv.Itoa(i)
		counter, last, acked := counters[k], lasts[k], w.acked[i].Load()
		switch {
		case counter != last:
			t.Errorf("%s worker %d: counter %d but last sequence %d: a commit was applied twice or in part", n.id, i, counter, last)
		case counter < acked:
			t.Errorf("%s worker %d: counter %d < %d acknowledged: acknowledged commits lost", n.id, i, counter, acked)
		case counter > acked+1:
			t.Errorf("%s worker %d: counter %d > %d acknowledged + 1 in flight", n.id, i, counter, acked)
		}
	}
}

// TestKillingTheLeaderLosesNoCommitAndDoublesNone runs three stated
// processes with a client committing through all of them, kills the leader
// with SIGKILL, lets the others elect a new one while the client goes on,
// restarts the killed node and checks every node: each worker's counter
// equals its acknowledged commits (the SDK retries with the same sequence,
// so a commit retried across the failover is applied once).
func TestKillingTheLeaderLosesNoCommitAndDoublesNone(t *testing.T) {
	t.Parallel()
	leaderStoppedUnderLoad(t, func(ctx context.Context, nodes []*node, old int) {
		killed := time.Now()
		nodes[old].kill()
		rest := append(append([]*node{}, nodes[:old]...), nodes[old+1:]...)
		newLeader := leaderOf(ctx, t, rest)
		t.Logf("SIGKILL leader %s; new leader %s %v after the kill", nodes[old].id, rest[newLeader].id, time.Since(killed).Round(time.Millisecond))
	})
}

// TestSIGTERMOnTheLeaderHandsLeadershipOver follows README "A leader that
// stops on SIGTERM hands leadership over first": the leader, stopped with
// SIGTERM while clients commit, exits 0 having logged the handover, and
// another node leads the moment it exited (without the handover the others
// would still be waiting for their heartbeat timeout). Every commit of the
// clients is kept once, on every node, after it rejoins.
func TestSIGTERMOnTheLeaderHandsLeadershipOver(t *testing.T) {
	t.Parallel()
	leaderStoppedUnderLoad(t, func(ctx context.Context, nodes []*node, old int) {
		if code := nodes[old].stop(syscall.SIGTERM); code != 0 {
			t.Fatalf("the leader exited %d on SIGTERM; want 0", code)
		}
		// The node it handed over to may still be counting its votes when
		// the old leader exits: wait a little for it to say it leads.
		var leading []string
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			leading = leading[:0]
			for _, n := range nodes {
				if n == nodes[old] {
					continue
				}
				if st, err := nodeStatus(ctx, n); err == nil && st.Role == "leader" {
					leading = append(leading, n.id)
				}
			}
			if len(leading) == 1 || time.Now().After(deadline) {
				break
			}
		}
		if len(leading) != 1 {
			t.Fatalf("within 5 s of the leader %s's exit, %v led; want one other node", nodes[old].id, leading)
		}
		if logs := nodes[old].logs.String(); !strings.Contains(logs, "stopping leader handed leadership over") {
			t.Fatalf("the stopped leader's log does not say it handed leadership over:\n%s", logs)
		}
	})
}

// leaderStoppedUnderLoad runs three stated processes with four SDK
// workers committing through all of them, lets stop take the leader
// (nodes[old]) down, waits for 300 more commits, starts the stopped node
// again and checks every node: each worker's counter equals its
// acknowledged commits.
func leaderStoppedUnderLoad(t *testing.T, stop func(ctx context.Context, nodes []*node, old int)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nodes := startCluster(ctx, t, 3)
	c, err := stated.Dial(ctx, addrs(nodes))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := startCounterWorkers(ctx, t, c, 4)
	defer w.halt()
	w.waitFor(ctx, t, 300)

	old := leaderOf(ctx, t, nodes)
	stop(ctx, nodes, old)
	w.waitFor(ctx, t, w.total.Load()+300)

	nodes[old].start(ctx)
	w.waitFor(ctx, t, w.total.Load()+200)
	w.halt()
	for _, n := range nodes {
		w.checkNode(ctx, t, n)
	}
}

// TestWipedFollowerRejoinsFromASnapshotAndServesEveryCommit deletes a
// follower's data dir while it is down; the leader has compacted its log
// (small snapshot threshold), so the follower, restarted with --join, is
// brought up to date by a Raft snapshot and serves session reads that
// include every commit.
func TestWipedFollowerRejoinsFromASnapshotAndServesEveryCommit(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nodes := startCluster(ctx, t, 3, "--raft-snapshot-threshold", "64", "--raft-snapshot-interval", "100ms", "--raft-trailing-logs", "16")
	c, err := stated.Dial(ctx, addrs(nodes))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := startCounterWorkers(ctx, t, c, 2)
	defer w.halt()
	w.waitFor(ctx, t, 200)

	victim := nodes[(leaderOf(ctx, t, nodes)+1)%3]
	victim.kill()
	if err := os.RemoveAll(victim.dataDir); err != nil {
		t.Fatal(err)
	}
	w.waitFor(ctx, t, w.total.Load()+400)
	victim.args = []string{"--raft-snapshot-threshold", "64", "--raft-snapshot-interval", "100ms", "--raft-trailing-logs", "16", "--join", nodes[0].grpcAddr}
	if victim == nodes[0] {
		victim.args[len(victim.args)-1] = nodes[1].grpcAddr
	}
	victim.start(ctx)
	w.waitFor(ctx, t, w.total.Load()+100)
	w.halt()
	w.checkNode(ctx, t, victim)
	if !strings.Contains(victim.logs.String(), "Installed remote snapshot") {
		t.Errorf("%s caught up without a snapshot; the test meant to exercise InstallSnapshot:\n%s", victim.id, victim.logs)
	}
}
