package test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
	"github.com/statedhq/stated/uploader"
)

// chaosCluster is the chaos suite's three `stated run` processes, which it
// kills, wipes, partitions and restores from their checkpoint bucket. As
// root each node runs in a network namespace of its own (netnsLab) and a
// partition unplugs its cable; otherwise the nodes share 127.0.0.1 and
// the suite skips partitions. Clients always reach the nodes through their
// unix sockets, which every namespace shares, so that a partition cuts
// the nodes from each other and not from their local clients.
type chaosCluster struct {
	t      *testing.T
	nodes  []*node
	lab    *netnsLab // nil: partitions are skipped
	bucket string    // file:// URL of the checkpoint bucket
	flags  []string  // flags of every `stated run`
	cut    int       // the partitioned node, or -1
}

// chaosStartTimeout bounds a node's (re)start until it serves.
const chaosStartTimeout = time.Minute

func newChaosCluster(ctx context.Context, t *testing.T, partitions bool) *chaosCluster {
	t.Helper()
	c := &chaosCluster{t: t, cut: -1, bucket: (&url.URL{Scheme: "file", Path: t.TempDir()}).String()}
	// Frequent checkpoints, so that a total loss has a recent one; small
	// Raft snapshots, so that a wiped node is brought back by
	// InstallSnapshot rather than by replaying the whole log.
	c.flags = []string{"--checkpoint-url", c.bucket, "--checkpoint-interval", "1s",
		"--raft-snapshot-threshold", "2048", "--raft-snapshot-interval", "2s", "--raft-trailing-logs", "1024"}
	if partitions {
		c.lab = newNetnsLab(t, 3)
	}
	for i := range 3 {
		n := newNamedNode(t, fmt.Sprint("n", i+1))
		if c.lab != nil {
			n.wrap = []string{"ip", "netns", "exec", c.lab.nodes[i]}
			n.grpcAddr = c.lab.addr(i) + ":7420"
			n.raftAddr = c.lab.addr(i) + ":7421"
		}
		c.nodes = append(c.nodes, n)
		if i == 0 {
			c.start(ctx, 0, "")
		} else {
			c.start(ctx, i, c.nodes[0].grpcAddr)
		}
	}
	return c
}

// start starts node i, joining through join when its data dir is new and
// join is set.
func (c *chaosCluster) start(ctx context.Context, i int, join string) {
	c.t.Helper()
	n := c.nodes[i]
	n.args = append([]string{}, c.flags...)
	if join != "" {
		n.args = append(n.args, "--join", join)
	}
	sctx, cancel := context.WithTimeout(ctx, chaosStartTimeout)
	defer cancel()
	n.start(sctx)
}

// sockets lists the nodes' unix sockets for stated.Dial, starting at
// node first, so that clients spread over the nodes.
func (c *chaosCluster) sockets(first int) string {
	var s []string
	for i := range c.nodes {
		s = append(s, "unix://"+c.nodes[(first+i)%len(c.nodes)].socket)
	}
	return strings.Join(s, ",")
}

// leader returns the node that says it leads, or -1.
func (c *chaosCluster) leader(ctx context.Context) int {
	for i, n := range c.nodes {
		if st, err := nodeStatus(ctx, n); err == nil && st.Role == "leader" {
			return i
		}
	}
	return -1
}

// other returns a node other than i.
func (c *chaosCluster) other(i int) int { return (i + 1) % len(c.nodes) }

// wipe kills node i, deletes its data dir and starts it empty: it joins
// through another node and is brought up to date by Raft. With
// removeFirst the node is first removed from the cluster (an operator's
// `stated cluster remove`); without, it rejoins under its old id, and the
// leader replaces its old incarnation. Both must lose nothing: an empty
// node that voted before its join was accepted could elect a leader
// missing entries its lost disk had acknowledged (seen in this suite
// before stated refused such votes).
func (c *chaosCluster) wipe(ctx context.Context, i int, removeFirst bool) {
	c.t.Helper()
	n := c.nodes[i]
	n.kill()
	if removeFirst {
		c.remove(ctx, n.id, c.nodes[c.other(i)])
	}
	if err := os.RemoveAll(n.dataDir); err != nil {
		c.t.Fatal(err)
	}
	if err := os.MkdirAll(n.dataDir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	c.start(ctx, i, c.nodes[c.other(i)].grpcAddr)
}

// remove removes member id through the live node via, retrying while the
// cluster elects a leader; an id that is no longer a member is done.
func (c *chaosCluster) remove(ctx context.Context, id string, via *node) {
	c.t.Helper()
	cl, err := stated.Dial(ctx, via.socket, stated.WithLazySession())
	if err != nil {
		c.t.Fatal(err)
	}
	defer cl.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := cl.RemoveMember(rctx, id)
		cancel()
		if err == nil || status.Code(err) == codes.NotFound {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("remove %s before wiping it: %v", id, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *chaosCluster) partition(i int) {
	c.t.Helper()
	if err := c.lab.cut(i); err != nil {
		c.t.Fatal(err)
	}
	c.cut = i
}

func (c *chaosCluster) heal() {
	c.t.Helper()
	if c.cut < 0 {
		return
	}
	if err := c.lab.plug(c.cut); err != nil {
		c.t.Fatal(err)
	}
	c.cut = -1
}

// latestCheckpoint waits, bounded, for a completed checkpoint newer than
// after in the bucket and returns its manifest.
func (c *chaosCluster) latestCheckpoint(ctx context.Context, after uint64, within time.Duration) *uploader.Manifest {
	c.t.Helper()
	_, up := ckptOpen(ctx, c.t, c.bucket)
	deadline := time.Now().Add(within)
	for {
		m, err := up.Latest(ctx)
		if err == nil && m.Epoch > after {
			return m
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no completed checkpoint after epoch %d within %s (last: %v)", after, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killAll SIGKILLs every node (a total loss begins).
func (c *chaosCluster) killAll() {
	c.t.Helper()
	c.heal()
	for _, n := range c.nodes {
		n.kill()
	}
}

// restart starts node i again on its data dir, with the flags it had.
func (c *chaosCluster) restart(ctx context.Context, i int) {
	c.t.Helper()
	sctx, cancel := context.WithTimeout(ctx, chaosStartTimeout)
	defer cancel()
	c.nodes[i].start(sctx)
}

// restore completes a total loss: it deletes every (dead) node's data
// dir, restores checkpoint m with `stated restore` into node r, starts
// it, and starts the others empty, joining it. It returns restore's
// output.
func (c *chaosCluster) restore(ctx context.Context, m *uploader.Manifest, r int) string {
	c.t.Helper()
	for _, n := range c.nodes {
		if err := os.RemoveAll(n.dataDir); err != nil {
			c.t.Fatal(err)
		}
		if err := os.MkdirAll(n.dataDir, 0o700); err != nil {
			c.t.Fatal(err)
		}
	}
	rn := c.nodes[r]
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// In the node's namespace: bootstrapping binds its Raft address.
	argv := append(append([]string{}, rn.wrap...), statedBinary(c.t), "restore", "--from", c.bucket, "--data-dir", rn.dataDir,
		"--checkpoint", fmt.Sprint(m.Epoch), "--node-id", rn.id, "--raft-addr", rn.raftAddr)
	out, err := exec.CommandContext(rctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("stated restore of checkpoint %d: %v\n%s", m.Epoch, err, out)
	}
	c.start(ctx, r, "")
	for i := range c.nodes {
		if i != r {
			c.start(ctx, i, rn.grpcAddr)
		}
	}
	return string(out)
}

// statusLine says, for a failure message, what each node says of itself.
func (c *chaosCluster) statusLine(ctx context.Context) (string, bool) {
	var parts []string
	leader := false
	for _, n := range c.nodes {
		st, err := nodeStatus(ctx, n)
		if err != nil {
			parts = append(parts, fmt.Sprintf("%s: %v", n.id, err))
			continue
		}
		leader = leader || st.Role == "leader"
		parts = append(parts, fmt.Sprintf("%s: %s term %d leader %q applied %d commit %d", n.id, st.Role, st.Term, st.LeaderId, st.AppliedIndex, st.CommitIndex))
	}
	return strings.Join(parts, "; "), leader
}

// probeCommit commits an empty transaction through node n's socket with a
// short bound and no retries: whether stated commits at all right now.
func probeCommit(ctx context.Context, n *node) error {
	client, closeConn := n.client()
	defer closeConn()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := client.Commit(cctx, &statedv1.CommitRequest{})
	return err
}
