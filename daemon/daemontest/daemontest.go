package daemontest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon"
)

// startTimeout bounds how long Start waits for the daemon to elect itself.
const startTimeout = 30 * time.Second

// Start starts a single-node daemon for the test and closes it when the
// test ends. opts adjust the configuration before the daemon starts, e.g.
//
//	d := daemontest.Start(t, func(c *daemon.Config) { c.MaxMessageBytes = 1 << 20 })
//
// Clients reach it on d.SocketPath() or d.TCPAddr().
func Start(t testing.TB, opts ...func(*daemon.Config)) *daemon.Daemon {
	t.Helper()
	cfg, logs := config(t, "node1")
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	d, err := daemon.Start(ctx, cfg)
	if err != nil {
		logs.flush()
		if ctx.Err() != nil {
			t.Logf("daemontest: the start of %s ran out of time; the process and the machine:\n%s", cfg.NodeID, stallReport())
		}
		t.Fatalf("daemontest: start daemon %s: %v", cfg.NodeID, err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("daemontest: close daemon %s: %v", cfg.NodeID, err)
		}
	})
	return d
}

// WithRaftLogStore is an option of Start and StartCluster that keeps the
// Raft log in the store kind (raftstore.LogStoreWAL or LogStoreBoltDB).
func WithRaftLogStore(kind string) func(*daemon.Config) {
	return func(c *daemon.Config) { c.RaftLogStore = kind }
}

// Config returns the configuration Start uses for a node named nodeID:
// data in t.TempDir(), loopback ports the system picks, the unix socket in
// a short temporary directory (socket paths are limited to ~104 bytes and
// t.TempDir() can be longer), and logs to the test. Use it to start a
// daemon by hand, e.g. one whose Start is expected to fail.
func Config(t testing.TB, nodeID string) daemon.Config {
	t.Helper()
	cfg, _ := config(t, nodeID)
	return cfg
}

func config(t testing.TB, nodeID string) (daemon.Config, *testHandler) {
	t.Helper()
	sockDir, err := os.MkdirTemp("", "stated")
	if err != nil {
		t.Fatalf("daemontest: socket dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })

	logs := newTestHandler(t)
	cfg := daemon.DefaultConfig()
	cfg.NodeID = nodeID
	cfg.DataDir = t.TempDir()
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.RaftAddr = "127.0.0.1:0"
	cfg.SocketPath = filepath.Join(sockDir, "s.sock")
	cfg.Logger = slog.New(logs)
	return cfg, logs
}

// StartCluster starts an n-node cluster for the test: node1 bootstraps it,
// and node2..nodeN join it through node1's gRPC address, one after the
// other, each started like Start. opts apply to every node. It returns the
// daemons in node order; node1 is the leader when StartCluster returns.
// Every daemon is closed when the test ends.
func StartCluster(t testing.TB, n int, opts ...func(*daemon.Config)) []*daemon.Daemon {
	t.Helper()
	if n < 1 {
		t.Fatalf("daemontest: StartCluster(%d): want at least one node", n)
	}
	nodes := []*daemon.Daemon{Start(t, opts...)}
	for i := 2; i <= n; i++ {
		join := nodes[0].TCPAddr()
		nodes = append(nodes, Start(t, append(slices.Clone(opts), func(c *daemon.Config) {
			c.NodeID = fmt.Sprintf("node%d", i)
			c.Join = []string{join}
		})...))
	}
	waitSettled(t, nodes)
	return nodes
}

// waitSettled waits until every node knows every member with its gRPC
// address and names node1 its leader, so that tests start from a cluster
// whose metadata has reached every node, led by node1. A leader that
// missed its lease while the others joined (under -race on a loaded
// machine) lets another lead: MoveLeadership hands leadership back to
// node1, the first voter of the configuration, where every transfer
// leads.
func waitSettled(t testing.TB, nodes []*daemon.Daemon) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for {
		err := MoveLeadership(ctx, t, nodes, nodes[0])
		why := membersUnknown(nodes)
		if err == nil && why == "" {
			return
		}
		if ctx.Err() != nil {
			if why == "" {
				why = err.Error()
			}
			t.Fatalf("daemontest: not settled after %s: %s; the process and the machine:\n%s", startTimeout, why, stallReport())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// membersUnknown says which node does not yet know every member's gRPC
// address, or returns "".
func membersUnknown(nodes []*daemon.Daemon) string {
	for _, d := range nodes {
		members, leader, err := d.Store().Members()
		known := 0
		for _, m := range members {
			if m.GRPCAddr != "" {
				known++
			}
		}
		if err != nil || known != len(nodes) {
			return fmt.Sprintf("%s knows %d of %d members' addresses (leader %q, err %v)", d.NodeID(), known, len(nodes), leader, err)
		}
	}
	return ""
}

// WaitLeader waits until d knows a leader, so that a test giving a call a
// short deadline measures that call and not the cluster's first election
// (a fresh single node elects itself after a heartbeat timeout, about
// 1–2 s).
func WaitLeader(t testing.TB, d *daemon.Daemon) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for d.Store().Status().LeaderID == "" {
		if time.Now().After(deadline) {
			t.Fatalf("daemontest: %s knows no leader after %s; the process and the machine:\n%s", d.NodeID(), startTimeout, stallReport())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WhileUnavailable calls call until it returns anything but a gRPC
// Unavailable, or ctx ends, and returns its last error. Unavailable is
// an election (no leader known, or a leader that stepped down: a leader
// that misses its lease under -race on a loaded machine does), which a
// raw gRPC client, unlike the SDK, does not wait out. Only for calls that
// may be sent twice: reads, puts of fixed values, refusals.
func WhileUnavailable(ctx context.Context, call func() error) error {
	for {
		err := call()
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// MoveLeadership hands the leadership of nodes' cluster to `to` and
// waits until every node knows `to` as leader, or ctx ends (it then
// returns an error; it may run on any goroutine, an interceptor's
// included). It transfers from whichever node leads, again if an
// election moves leadership elsewhere on the way: under -race on a
// loaded machine a leader may miss its lease and the cluster elect
// another, so a test that choreographs leadership must not assume that
// the node it handed leadership to still has it. Store.TransferLeadership
// names no target (it hands leadership to the first other voter that
// answers), so `to` must be where every transfer leads: the other node of
// a two-node cluster, or node1, the first voter. Any other `to` is
// reached only by chance, and the wait may end with ctx.
func MoveLeadership(ctx context.Context, t testing.TB, nodes []*daemon.Daemon, to *daemon.Daemon) error {
	t.Helper()
	for {
		if to.Store().IsLeader() && everyoneFollows(nodes, to) {
			return nil
		}
		for _, d := range nodes {
			if d == to || !d.Store().IsLeader() {
				continue
			}
			if _, err := d.Store().TransferLeadership(ctx); err != nil && ctx.Err() == nil {
				// It lost leadership on the way, or the transfer timed
				// out under load: look again.
				t.Logf("daemontest: transfer of the leadership from %s towards %s: %v", d.NodeID(), to.NodeID(), err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("daemontest: %s does not lead with every node following it: %w", to.NodeID(), ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// everyoneFollows reports whether every node of nodes knows l as leader.
func everyoneFollows(nodes []*daemon.Daemon, l *daemon.Daemon) bool {
	for _, d := range nodes {
		if id, _ := d.Store().Leader(); id != l.NodeID() {
			return false
		}
	}
	return true
}
