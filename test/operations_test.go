package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	stated "github.com/statedhq/stated/sdk/go"
)

// The tests in this file perform the procedures of docs/OPERATIONS.md
// with the commands that runbook shows, run through the stated binary as
// an operator runs them, against real `stated run` processes.

// statedCmd is one run of the stated binary.
type statedCmd struct {
	stdout, stderr string
	code           int
}

// runStated runs `stated ARGS...` and returns what it printed and its
// exit status.
func runStated(ctx context.Context, t *testing.T, args ...string) statedCmd {
	t.Helper()
	cmd := exec.CommandContext(ctx, statedBinary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("stated %s: %v", strings.Join(args, " "), err)
	}
	return statedCmd{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// mustStated runs `stated ARGS...`, fails the test unless it exits 0,
// and returns its stdout.
func mustStated(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	r := runStated(ctx, t, args...)
	if r.code != 0 {
		t.Fatalf("stated %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// mustStatedWhileUnavailable runs `stated ARGS...` like mustStated, but
// runs it again while it exits 2, unreachable or answered Unavailable (no
// leader known, or a checkpoint abandoned because its leader stepped
// down, which a loaded machine can cause), until ctx ends.
func mustStatedWhileUnavailable(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	for {
		r := runStated(ctx, t, args...)
		if r.code == 0 {
			return r.stdout
		}
		if r.code != 2 || ctx.Err() != nil {
			t.Fatalf("stated %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
		t.Logf("stated %s: exit 2 (%s); run again", strings.Join(args, " "), strings.TrimSpace(r.stderr))
		time.Sleep(200 * time.Millisecond)
	}
}

// waitStated runs `stated ARGS...` until its stdout satisfies ok, or
// fails the test at ctx's deadline with the last output.
func waitStated(ctx context.Context, t *testing.T, ok func(stdout string) bool, args ...string) string {
	t.Helper()
	var last statedCmd
	for {
		last = runStated(ctx, t, args...)
		if last.code == 0 && ok(last.stdout) {
			return last.stdout
		}
		select {
		case <-ctx.Done():
			t.Fatalf("stated %s never gave the expected output; last: exit %d\nstdout: %s\nstderr: %s",
				strings.Join(args, " "), last.code, last.stdout, last.stderr)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// equals is an ok for waitStated: the output, trimmed, is want.
func equals(want string) func(string) bool {
	return func(s string) bool { return strings.TrimSpace(s) == want }
}

// memberIDs runs `stated cluster members --json` on n and returns the
// voters' ids in order.
func memberIDs(ctx context.Context, t *testing.T, n *node) string {
	t.Helper()
	var out membersJSON
	if err := json.Unmarshal([]byte(mustStated(ctx, t, "cluster", "members", "--json", "--addr", n.socket)), &out); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range out.Members {
		if m.Voter {
			ids = append(ids, m.NodeID)
		}
	}
	return strings.Join(ids, " ")
}

type membersJSON struct {
	Members []struct {
		NodeID string `json:"node_id"`
		Voter  bool   `json:"voter"`
	} `json:"members"`
}

// commitOffset commits partition 0 of topic events for group g at next
// through the SDK, as a consumer that does not claim partitions would.
func commitOffset(ctx context.Context, t *testing.T, nodes []*node, next int64) {
	t.Helper()
	c, err := stated.Dial(ctx, addrs(nodes))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Txn().CommitOffset("g", "events", 0, next).Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// loseAndRestore is the last step of a total loss or a rollback as the
// runbook shows it: restore the checkpoint into n1's data dir as a new
// single-node cluster, resetting Kafka's offsets, start n1, and start the
// others empty with --join. It returns restore's output.
func loseAndRestore(ctx context.Context, t *testing.T, nodes []*node, bucket, checkpoint string, brokers []string) string {
	t.Helper()
	n1 := nodes[0]
	out := mustStated(ctx, t, "restore", "--from", bucket, "--checkpoint", checkpoint, "--data-dir", n1.dataDir, "--force",
		"--node-id", n1.id, "--raft-addr", n1.raftAddr, "--kafka-brokers", strings.Join(brokers, ","))
	t.Logf("stated restore:\n%s", out)
	n1.start(ctx)
	for _, n := range nodes[1:] {
		if err := os.RemoveAll(n.dataDir); err != nil {
			t.Fatal(err)
		}
		n.args = append(n.args[:len(n.args):len(n.args)], "--join", n1.grpcAddr)
		n.start(ctx)
	}
	return out
}

// TestOperationsTotalLossComesBackFromTheBucketWithTheCheckpointsState
// follows OPERATIONS.md "Total loss": a three-node cluster checkpoints to
// a bucket; every node is killed and its data dir deleted; `stated
// recovery --from` reports what comes back and what Kafka replays;
// `stated restore` rebuilds n1 from the bucket, the others join it empty;
// the cluster serves the checkpoint's state and offsets on every node,
// has none of the commits after the checkpoint, and Kafka's committed
// offsets are the checkpoint's. (With a processor replaying the topic:
// TestTotalLossRestoreCountsEveryRecordExactly.)
func TestOperationsTotalLossComesBackFromTheBucketWithTheCheckpointsState(t *testing.T) {
	t.Parallel()
	skipLong(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	k := newKafka(t, "events", 1)
	k.produce(ctx, t, 100, 10)
	brokers := strings.Join(k.brokers, ",")
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	nodes := startCluster(ctx, t, 3, "--checkpoint-url", bucket, "--checkpoint-interval", "1h", "--kafka-brokers", brokers)
	addr := nodes[0].socket

	mustStated(ctx, t, "kv", "add", "shop", "visits", "5", "--addr", addr)
	mustStated(ctx, t, "kv", "put", "shop", "cart/42", "3 items", "--addr", nodes[1].socket) // a follower forwards it
	commitOffset(ctx, t, nodes, 30)
	out := mustStated(ctx, t, "checkpoint", "trigger", "--wait", "--addr", addr)
	if !strings.HasPrefix(out, "checkpoint 1 completed") {
		t.Fatalf("checkpoint trigger --wait: %s", out)
	}
	// After the checkpoint: lost with the nodes, replayed from Kafka.
	mustStated(ctx, t, "kv", "add", "shop", "visits", "100", "--addr", addr)
	commitOffset(ctx, t, nodes, 80)

	for _, n := range nodes {
		n.kill()
		if err := os.RemoveAll(n.dataDir); err != nil {
			t.Fatal(err)
		}
	}

	report := mustStated(ctx, t, "recovery", "--from", bucket, "--kafka-brokers", brokers)
	t.Logf("stated recovery:\n%s", report)
	for _, want := range []string{"checkpoint 1, taken ", "holds 2 keys", "files: all present and intact",
		"Kafka will replay 70 records; 0 records are lost for good"} {
		if !strings.Contains(report, want) {
			t.Errorf("the recovery report lacks %q", want)
		}
	}

	out = loseAndRestore(ctx, t, nodes, bucket, "latest", k.brokers)
	if !strings.Contains(out, "restored checkpoint 1 ") || !strings.Contains(out, "bootstrapped cluster ") ||
		!strings.Contains(out, "reset Kafka's committed offsets of g") {
		t.Errorf("restore output lacks the checkpoint, the bootstrap or the Kafka reset:\n%s", out)
	}
	if got := memberIDs(ctx, t, nodes[0]); got != "n1 n2 n3" {
		t.Fatalf("members after the restore: %s", got)
	}
	for _, n := range nodes {
		waitStated(ctx, t, equals("5"), "kv", "get", "shop", "visits", "--kind", "counter", "--consistency", "local", "--addr", n.socket)
		waitStated(ctx, t, equals("3 items"), "kv", "get", "shop", "cart/42", "--consistency", "local", "--addr", n.socket)
		waitStated(ctx, t, func(s string) bool { return strings.HasPrefix(s, "events\t0\t30\t") }, "offsets", "get", "g", "--addr", n.socket)
	}
	adm := kadm.NewClient(newKgo(t, k.brokers))
	waitKafkaOffsets(ctx, t, adm, "g", map[string]map[int32]int64{"events": {0: 30}}, 10*time.Second)

	// The new cluster checkpoints above the bucket's epochs.
	if out := mustStated(ctx, t, "checkpoint", "trigger", "--wait", "--addr", nodes[2].socket); !strings.HasPrefix(out, "checkpoint 2 completed") {
		t.Errorf("the first checkpoint after the restore: %s", out)
	}
}

// TestOperationsRollbackToASavepointRestoresItsStateAndOffsets follows
// OPERATIONS.md "Rolling back to a savepoint": a savepoint pinned before a
// deploy survives retention; after the bad deploy's commits and
// checkpoints, the nodes are stopped, n1 is restored from the savepoint
// with --force, the others rejoin empty, and every node serves the
// savepoint's state and offsets; Kafka's committed offsets are reset to
// them, so the consumers replay what the bad deploy processed.
func TestOperationsRollbackToASavepointRestoresItsStateAndOffsets(t *testing.T) {
	t.Parallel()
	skipLong(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	k := newKafka(t, "events", 1)
	k.produce(ctx, t, 100, 10)
	brokers := strings.Join(k.brokers, ",")
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	nodes := startCluster(ctx, t, 3, "--checkpoint-url", bucket, "--checkpoint-interval", "1h",
		"--checkpoint-retain", "1", "--kafka-brokers", brokers)
	addr := nodes[0].socket

	mustStated(ctx, t, "kv", "put", "app", "version", "v1", "--addr", addr)
	commitOffset(ctx, t, nodes, 10)
	mustStated(ctx, t, "checkpoint", "trigger", "--wait", "--addr", addr)
	if out := mustStated(ctx, t, "checkpoint", "savepoint", "before-deploy", "--addr", addr); !strings.Contains(out, `checkpoint 1 pinned as savepoint "before-deploy"`) {
		t.Fatalf("savepoint: %s", out)
	}

	// The bad deploy: it writes, and checkpoints go on (retention keeps
	// one, and the savepoint).
	mustStated(ctx, t, "kv", "put", "app", "version", "v2-bad", "--addr", addr)
	commitOffset(ctx, t, nodes, 60)
	mustStated(ctx, t, "checkpoint", "trigger", "--wait", "--addr", addr)
	mustStated(ctx, t, "checkpoint", "trigger", "--wait", "--addr", addr)
	list := mustStated(ctx, t, "checkpoint", "list", "--addr", addr)
	if rows := strings.Split(strings.TrimSpace(list), "\n"); len(rows) != 3 || !strings.HasSuffix(rows[1], "before-deploy") ||
		!strings.HasPrefix(rows[1], "1 ") || !strings.HasPrefix(rows[2], "3 ") {
		t.Fatalf("checkpoint list: want the savepoint (epoch 1) and the newest (3):\n%s", list)
	}
	adm := kadm.NewClient(newKgo(t, k.brokers))
	waitKafkaOffsets(ctx, t, adm, "g", map[string]map[int32]int64{"events": {0: 60}}, 10*time.Second)

	report := mustStated(ctx, t, "recovery", "--from", bucket, "--checkpoint", "before-deploy", "--kafka-brokers", brokers)
	t.Logf("stated recovery:\n%s", report)
	if !strings.Contains(report, `checkpoint 1 (savepoint "before-deploy")`) || !strings.Contains(report, "Kafka will replay 90 records") {
		t.Errorf("the recovery report of the savepoint:\n%s", report)
	}

	for _, n := range nodes {
		if code := n.stop(syscall.SIGTERM); code != 0 {
			t.Fatalf("%s exited %d on SIGTERM", n.id, code)
		}
	}
	out := loseAndRestore(ctx, t, nodes, bucket, "before-deploy", k.brokers)
	if !strings.Contains(out, "restored checkpoint 1 ") {
		t.Errorf("restore: %s", out)
	}
	for _, n := range nodes {
		waitStated(ctx, t, equals("v1"), "kv", "get", "app", "version", "--consistency", "local", "--addr", n.socket)
		waitStated(ctx, t, func(s string) bool { return strings.HasPrefix(s, "events\t0\t10\t") }, "offsets", "get", "g", "--addr", n.socket)
	}
	waitKafkaOffsets(ctx, t, adm, "g", map[string]map[int32]int64{"events": {0: 10}}, 10*time.Second)
	if got := memberIDs(ctx, t, nodes[0]); got != "n1 n2 n3" {
		t.Errorf("members after the rollback: %s", got)
	}
}

// TestOperationsAddReplaceAndRemoveMembers follows OPERATIONS.md "Adding
// a member", "Replacing a member" and "Removing a member": n4 joins a
// running cluster with --join and receives its state; `stated cluster
// remove n3` retires n3 (replaced by n4), which is then stopped; the
// cluster of n1, n2, n4 commits, and every member serves every commit.
func TestOperationsAddReplaceAndRemoveMembers(t *testing.T) {
	t.Parallel()
	skipLong(t) // processes only: what runs in this process is race-tested in its own package
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := startCluster(ctx, t, 3)
	mustStated(ctx, t, "kv", "add", "ops", "n", "1", "--addr", nodes[0].socket)

	n4 := newNamedNode(t, "n4")
	n4.args = []string{"--join", nodes[1].grpcAddr} // any member will do
	n4.start(ctx)
	if got := memberIDs(ctx, t, nodes[0]); got != "n1 n2 n3 n4" {
		t.Fatalf("members after n4 joined: %s", got)
	}
	waitStated(ctx, t, equals("1"), "kv", "get", "ops", "n", "--kind", "counter", "--consistency", "local", "--addr", n4.socket)

	if out := mustStated(ctx, t, "cluster", "remove", "n3", "--addr", n4.socket); out != "removed n3\n" {
		t.Fatalf("cluster remove n3: %q", out)
	}
	if code := nodes[2].stop(syscall.SIGTERM); code != 0 {
		t.Errorf("n3 exited %d on SIGTERM", code)
	}
	if got := memberIDs(ctx, t, nodes[0]); got != "n1 n2 n4" {
		t.Fatalf("members after removing n3: %s", got)
	}
	mustStated(ctx, t, "kv", "add", "ops", "n", "1", "--addr", nodes[1].socket)
	status := mustStated(ctx, t, "status", "--addr", n4.socket)
	if strings.Contains(status, "unreachable") || strings.Contains(status, "n3 ") {
		t.Errorf("status after the replacement:\n%s", status)
	}
	for _, n := range []*node{nodes[0], nodes[1], n4} {
		waitStated(ctx, t, equals("2"), "kv", "get", "ops", "n", "--kind", "counter", "--consistency", "local", "--addr", n.socket)
	}
	// Removing a node that is not a member says so and changes nothing.
	if r := runStated(ctx, t, "cluster", "remove", "n3", "--addr", nodes[0].socket); r.code == 0 || !strings.Contains(r.stderr, "n3") {
		t.Errorf("removing n3 again: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestOperationsRollingRestartLosesNoCommit follows OPERATIONS.md
// "Upgrades": while clients commit through every member, each node in
// turn is stopped with SIGTERM and started again (a new binary would be
// started here), and the next one is only touched once `stated status`
// shows every member reachable and the restarted one caught up. No
// acknowledged commit is lost or applied twice, on any node.
func TestOperationsRollingRestartLosesNoCommit(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := startCluster(ctx, t, 3)
	c, err := stated.Dial(ctx, addrs(nodes))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := startCounterWorkers(ctx, t, c, 2)
	defer w.halt()
	w.waitFor(ctx, t, 100)
	for _, n := range nodes {
		if code := n.stop(syscall.SIGTERM); code != 0 {
			t.Fatalf("%s exited %d on SIGTERM", n.id, code)
		}
		w.waitFor(ctx, t, w.total.Load()+50) // the majority goes on
		n.start(ctx)
		first := parseStatus(t, mustStated(ctx, t, "status", "--json", "--addr", n.socket))
		waitStated(ctx, t, caughtUp(t, n.id, first.leaderCommit()), "status", "--json", "--addr", n.socket)
		w.waitFor(ctx, t, w.total.Load()+50)
	}
	w.halt()
	for _, n := range nodes {
		w.checkNode(ctx, t, n)
	}
}

// opsStatus is what the runbook reads of `stated status --json`.
type opsStatus struct {
	LeaderID string `json:"leader_id"`
	Members  []struct {
		NodeID       string `json:"node_id"`
		Reachable    bool   `json:"reachable"`
		CommitIndex  uint64 `json:"commit_index"`
		AppliedIndex uint64 `json:"applied_index"`
	} `json:"members"`
}

func parseStatus(t *testing.T, s string) opsStatus {
	t.Helper()
	var st opsStatus
	if err := json.Unmarshal([]byte(s), &st); err != nil {
		t.Fatalf("status --json: %v in %s", err, s)
	}
	return st
}

// leaderCommit is the leader's commit index, 0 when no leader answered.
func (st opsStatus) leaderCommit() uint64 {
	for _, m := range st.Members {
		if m.NodeID == st.LeaderID && m.Reachable {
			return m.CommitIndex
		}
	}
	return 0
}

// caughtUp is an ok for `stated status --json`: there is a leader, every
// member is reachable, and id has applied at least index.
func caughtUp(t *testing.T, id string, index uint64) func(string) bool {
	return func(s string) bool {
		st := parseStatus(t, s)
		if st.LeaderID == "" {
			return false
		}
		var applied uint64
		for _, m := range st.Members {
			if !m.Reachable {
				return false
			}
			if m.NodeID == id {
				applied = m.AppliedIndex
			}
		}
		return applied > 0 && applied >= index
	}
}

// newKgo is a Kafka client for brokers, closed when the test ends.
func newKgo(t *testing.T, brokers []string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(fmt.Errorf("kafka client: %w", err))
	}
	t.Cleanup(cl.Close)
	return cl
}

// TestOperationsMajorityLossStopsCommitsUntilAMajorityIsBack follows
// OPERATIONS.md "A minority or a majority of nodes lost": with two of
// three nodes down the survivor keeps what it has and serves local
// reads, and cannot commit or serve linearizable reads; once one node is
// back, commits go on, and every earlier commit is there.
func TestOperationsMajorityLossStopsCommitsUntilAMajorityIsBack(t *testing.T) {
	t.Parallel()
	skipLong(t) // processes only: what runs in this process is race-tested in its own package
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := startCluster(ctx, t, 3)
	n1 := nodes[0].socket
	mustStated(ctx, t, "kv", "put", "ops", "k", "before", "--addr", n1)
	waitStated(ctx, t, equals("before"), "kv", "get", "ops", "k", "--consistency", "local", "--addr", nodes[2].socket)
	nodes[1].kill()
	nodes[2].kill()

	r := runStated(ctx, t, "kv", "put", "ops", "k", "during", "--addr", n1, "--timeout", "3s")
	t.Logf("a commit without a majority: exit %d, %s", r.code, r.stderr)
	if r.code == 0 {
		t.Fatalf("a commit succeeded with two of three nodes down: %s", r.stdout)
	}
	if got := mustStated(ctx, t, "kv", "get", "ops", "k", "--consistency", "local", "--addr", n1); strings.TrimSpace(got) != "before" && strings.TrimSpace(got) != "during" {
		t.Errorf("local read on the survivor: %q", got)
	}
	r = runStated(ctx, t, "kv", "get", "ops", "k", "--consistency", "linearizable", "--addr", n1, "--timeout", "3s")
	t.Logf("a linearizable read without a majority: exit %d, %s", r.code, r.stderr)
	if r.code == 0 {
		t.Errorf("a linearizable read succeeded with two of three nodes down: %s", r.stdout)
	}
	status := mustStated(ctx, t, "status", "--addr", n1, "--timeout", "2s")
	t.Logf("status without a majority:\n%s", status)
	if strings.Count(status, "unreachable") != 2 {
		t.Errorf("status does not show the two nodes down as unreachable:\n%s", status)
	}

	nodes[1].start(ctx)
	mustStated(ctx, t, "kv", "put", "ops", "k", "after", "--addr", n1)
	nodes[2].start(ctx)
	for _, n := range nodes {
		waitStated(ctx, t, equals("after"), "kv", "get", "ops", "k", "--consistency", "local", "--addr", n.socket)
	}
}
