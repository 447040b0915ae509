//go:build linux

package test

import (
	"context"
	"fmt"
	"net/url"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

// rpCluster is three `stated run` processes, each in a network namespace
// of a netnsLab, with a shared file:// checkpoint bucket.
type rpCluster struct {
	t      *testing.T
	lab    *netnsLab
	nodes  []*node
	bucket string
}

func newRPCluster(ctx context.Context, t *testing.T, extra ...string) *rpCluster {
	t.Helper()
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("skipped: iptables is not installed (the partitions drop packets with it; .ci/run installs it)")
	}
	lab := newNetnsLab(t, 3)
	c := &rpCluster{t: t, lab: lab, bucket: (&url.URL{Scheme: "file", Path: t.TempDir()}).String()}
	for i := 0; i < 3; i++ {
		n := newNamedNode(t, fmt.Sprint("n", i+1))
		n.wrap = []string{"ip", "netns", "exec", lab.nodes[i]}
		n.grpcAddr = lab.addr(i) + ":7420"
		n.raftAddr = lab.addr(i) + ":7421"
		n.args = append([]string{"--checkpoint-url", c.bucket, "--checkpoint-interval", "1h"}, extra...)
		if i > 0 {
			n.args = append(n.args, "--join", c.nodes[0].grpcAddr)
		}
		n.start(ctx)
		c.nodes = append(c.nodes, n)
	}
	return c
}

// ipt runs iptables inside node i's namespace.
func (c *rpCluster) ipt(i int, args ...string) error {
	argv := append([]string{"netns", "exec", c.lab.nodes[i], "iptables"}, args...)
	out, err := exec.Command("ip", argv...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %v in %s: %v: %s", args, c.lab.nodes[i], err, out)
	}
	return nil
}

// dropFrom makes node i drop every packet that comes from node j (one
// direction only: i's packets still reach j).
func (c *rpCluster) dropFrom(i, j int) {
	c.t.Helper()
	if err := c.ipt(i, "-A", "INPUT", "-s", c.lab.addr(j), "-j", "DROP"); err != nil {
		c.t.Fatal(err)
	}
}

// heal removes every iptables rule of node i.
func (c *rpCluster) heal(i int) {
	c.t.Helper()
	if err := c.ipt(i, "-F", "INPUT"); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rpCluster) sdk(ctx context.Context, i int, opts ...stated.Option) *stated.Client {
	c.t.Helper()
	cl, err := stated.Dial(ctx, "unix://"+c.nodes[i].socket, opts...)
	if err != nil {
		c.t.Fatalf("dial %s: %v", c.nodes[i].id, err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// rpWorkers commit, through one SDK client, counter adds whose answers
// may be lost: each commit adds 1 to the worker's counter and puts its
// sequence, atomically. A commit gets perCommit to finish (the SDK
// retries within it).
type rpWorkers struct {
	prefix    string
	acked     []atomic.Int64
	failed    []atomic.Int64 // commits that returned an error (outcome unknown)
	errs      sync.Map       // error string -> count (*atomic.Int64)
	maxLat    atomic.Int64   // longest acknowledged commit, ns
	dups      atomic.Int64   // answers marked Duplicate
	index     atomic.Uint64
	stop      context.CancelFunc
	wg        sync.WaitGroup
	perCommit time.Duration
}

func startRPWorkers(ctx context.Context, t *testing.T, c *stated.Client, prefix string, n int, perCommit time.Duration) *rpWorkers {
	wctx, stop := context.WithCancel(ctx)
	w := &rpWorkers{prefix: prefix, acked: make([]atomic.Int64, n), failed: make([]atomic.Int64, n), stop: stop, perCommit: perCommit}
	for i := 0; i < n; i++ {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for seq := int64(1); wctx.Err() == nil && seq < 100000; seq++ {
				cctx, cancel := context.WithTimeout(wctx, perCommit)
				start := time.Now()
				res, err := c.Txn().
					CounterAdd("rp", []byte(fmt.Sprint(prefix, "count/", i)), 1).
					Put("rp", []byte(fmt.Sprint(prefix, "last/", i)), []byte(strconv.FormatInt(seq, 10))).
					Commit(cctx)
				cancel()
				if err != nil {
					if wctx.Err() != nil {
						// Halted: this last one's outcome is unknown.
						w.failed[i].Add(1)
						return
					}
					w.failed[i].Add(1)
					v, _ := w.errs.LoadOrStore(err.Error(), new(atomic.Int64))
					v.(*atomic.Int64).Add(1)
					// An unknown outcome: the sequence may have applied, so
					// the worker cannot go on with exact accounting; stop.
					t.Logf("worker %s%d: commit %d failed after %v: %v", prefix, i, seq, time.Since(start), err)
					return
				}
				if d := time.Since(start).Nanoseconds(); d > w.maxLat.Load() {
					w.maxLat.Store(d)
				}
				if res.Duplicate {
					w.dups.Add(1)
				}
				w.acked[i].Store(seq)
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

func (w *rpWorkers) halt() { w.stop(); w.wg.Wait() }

func (w *rpWorkers) total() (n int64) {
	for i := range w.acked {
		n += w.acked[i].Load()
	}
	return n
}

// check reads every worker's counter and last sequence on node n at
// session consistency (after the highest acknowledged index) and checks
// that each counter equals its last sequence (no double apply) and is at
// least the acknowledged count (no loss), at most one above it.
func (w *rpWorkers) check(ctx context.Context, t *testing.T, n *node) {
	t.Helper()
	client, closeConn := n.client()
	defer closeConn()
	for i := range w.acked {
		get := func(key string, kind statedv1.Kind) *statedv1.GetResponse {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			resp, err := client.Get(cctx, &statedv1.GetRequest{Namespace: "rp", Key: []byte(key), Kind: kind,
				Read: &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_SESSION, MinIndex: w.index.Load()}})
			if err != nil {
				t.Fatalf("%s: get %s: %v", n.id, key, err)
			}
			return resp
		}
		// The two keys are read one after the other: a commit whose
		// outcome was unknown when the workers halted (still in the
		// leader's pipeline) can apply between the reads. Read the
		// counter again, until it has not moved around the last
		// sequence's read (each commit changes both at once).
		var counter, last int64
		for attempt := 0; ; attempt++ {
			counter = get(fmt.Sprint(w.prefix, "count/", i), statedv1.Kind_KIND_COUNTER).GetCounter()
			last, _ = strconv.ParseInt(string(get(fmt.Sprint(w.prefix, "last/", i), statedv1.Kind_KIND_VALUE).GetValue()), 10, 64)
			again := get(fmt.Sprint(w.prefix, "count/", i), statedv1.Kind_KIND_COUNTER).GetCounter()
			if again == counter || attempt == 10 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		acked, failed := w.acked[i].Load(), w.failed[i].Load()
		switch {
		case counter != last:
			t.Errorf("%s worker %s%d: counter %d but last sequence %d: a commit applied twice or in part (acked %d)", n.id, w.prefix, i, counter, last, acked)
		case counter < acked:
			t.Errorf("%s worker %s%d: counter %d < %d acknowledged: acknowledged commits lost", n.id, w.prefix, i, counter, acked)
		case counter > acked+failed:
			t.Errorf("%s worker %s%d: counter %d > %d acknowledged + %d unknown", n.id, w.prefix, i, counter, acked, failed)
		}
	}
}

// waitAllCaughtUp waits (bounded) until every node serves a session read
// at index; it fails the test naming the node that did not catch up.
func (c *rpCluster) waitAllCaughtUp(ctx context.Context, index uint64, within time.Duration) {
	c.t.Helper()
	for _, n := range c.nodes {
		client, closeConn := n.client()
		cctx, cancel := context.WithTimeout(ctx, within)
		_, err := client.Get(cctx, &statedv1.GetRequest{Namespace: "rp", Key: []byte("nothing"), Kind: statedv1.Kind_KIND_VALUE,
			Read: &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_SESSION, MinIndex: index}})
		cancel()
		closeConn()
		if err != nil {
			c.t.Errorf("%s did not apply index %d within %v of the heal: %v", n.id, index, within, err)
		}
	}
}
