package test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestMetricsAreServedWhileTheNodeHasNoLeader: docs/METRICS.md
// documents stated_raft_has_leader ("1 when the node knows a leader") and
// stated_raft_role (leader, follower, candidate, shutdown), and its "No
// leader" alert is `max by (instance) (stated_raft_has_leader) == 0`.
// A member restarted while a majority of its cluster is down (OPERATIONS.md,
// "a majority of the processes ... start them again with their commands")
// has no leader; its /metrics must then answer, with has_leader 0, rather
// than accept the scrape and never answer it.
func TestMetricsAreServedWhileTheNodeHasNoLeader(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	metrics := freeAddr(t)
	n1, n2 := newNamedNode(t, "n1"), newNamedNode(t, "n2")
	n1.args = []string{"--metrics-addr", metrics}
	n1.start(ctx)
	n2.args = []string{"--join", n1.grpcAddr}
	n2.start(ctx)
	// Both members up: a leader, at once or after an election (two
	// voters, so a lease missed on a loaded machine deposes it).
	for v := value(t, scrape(t, metrics), "stated_raft_has_leader"); v != 1; v = value(t, scrape(t, metrics), "stated_raft_has_leader") {
		if ctx.Err() != nil {
			t.Fatalf("stated_raft_has_leader = %v with both members up, want 1", v)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Both members stop; n1 alone comes back: one vote of two, no leader.
	n2.stop(syscall.SIGTERM)
	n1.stop(syscall.SIGTERM)

	logs := &daemontest.Buffer{}
	cmd := daemontest.DieWithParent(exec.Command(statedBinary(t), "run", "--node-id", n1.id, "--data-dir", n1.dataDir,
		"--socket", n1.socket, "--grpc-addr", n1.grpcAddr, "--raft-addr", n1.raftAddr, "--metrics-addr", metrics))
	cmd.Stdout, cmd.Stderr = logs, logs
	must(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if t.Failed() {
			t.Logf("restarted n1's logs:\n%s", logs)
		}
	})

	c := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		resp, err := c.Get("http://" + metrics + "/metrics")
		if err != nil {
			last = err.Error()
			time.Sleep(200 * time.Millisecond)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			last = fmt.Sprintf("%s: %.200s", resp.Status, body)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		s := string(body)
		if !strings.Contains(s, "\nstated_raft_has_leader 0\n") {
			t.Fatalf("/metrics of a node without a leader does not report stated_raft_has_leader 0:\n%s", grepLines(s, "stated_raft_"))
		}
		if !strings.Contains(s, `stated_raft_role{role="leader"} 0`) {
			t.Fatalf("/metrics of a node without a leader reports it leading:\n%s", grepLines(s, "stated_raft_role"))
		}
		return
	}
	t.Fatalf("a member restarted while its cluster has no leader never answered GET /metrics within 30s (last: %s): "+
		"the documented no-leader alert (stated_raft_has_leader == 0) cannot see it", last)
}

func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestPprofMutexAndBlockProfilesRecordSamples: docs/METRICS.md promises
// that --enable-pprof serves Go's runtime profiles "(heap, allocs, CPU,
// goroutine, mutex, block, trace)": what go tool pprof reads to find where
// a node's time goes. The Go runtime records block and mutex events only
// once runtime.SetBlockProfileRate / SetMutexProfileFraction are set; until
// then those two profiles are always empty ("sampling period=0").
func TestPprofMutexAndBlockProfilesRecordSamples(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := newNode(t)
	metrics := freeAddr(t)
	n.args = []string{"--metrics-addr", metrics, "--enable-pprof"}
	n.start(ctx)
	st, done := n.client()
	defer done()
	for i := range 50 {
		_, err := st.Commit(ctx, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{
			Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, Namespace: "m", Key: fmt.Appendf(nil, "k%d", i%3), Delta: 1}}})
		must(t, err)
	}
	get := func(path string) string {
		t.Helper()
		resp, err := http.Get("http://" + metrics + path)
		must(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		must(t, err)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		return string(body)
	}
	if m := get("/debug/pprof/mutex?debug=1"); strings.Contains(m, "sampling period=0\n") {
		t.Errorf("/debug/pprof/mutex is served with sampling off (runtime.SetMutexProfileFraction never set): it can never hold a sample:\n%.300s", m)
	}
	sample := regexp.MustCompile(`(?m)^\d+ \d+ @ `)
	var block string
	for range 50 {
		if block = get("/debug/pprof/block?debug=1"); sample.MatchString(block) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("/debug/pprof/block holds no sample after 50 commits (runtime.SetBlockProfileRate never set):\n%.300s", block)
}

// TestMetricsAreServedWhileANewNodeWaitsToJoin: docs/METRICS.md says
// /metrics is served from the moment the node's Raft state is open. A new
// node whose --join address does not answer (its cluster without a
// majority, as after a lost disk: OPERATIONS.md) keeps asking up to
// --join-timeout; its /metrics accepted the scrape and never answered
// until the join ended.
func TestMetricsAreServedWhileANewNodeWaitsToJoin(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	metrics := freeAddr(t)
	n := newNamedNode(t, "n2")
	logs := &daemontest.Buffer{}
	cmd := daemontest.DieWithParent(exec.CommandContext(ctx, statedBinary(t), "run", "--node-id", n.id, "--data-dir", n.dataDir,
		"--socket", n.socket, "--grpc-addr", n.grpcAddr, "--raft-addr", n.raftAddr, "--metrics-addr", metrics,
		"--join", freeAddr(t), "--join-timeout", "40s"))
	cmd.Stdout, cmd.Stderr = logs, logs
	must(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if t.Failed() {
			t.Logf("the joining node's logs:\n%s", logs)
		}
	})
	c := &http.Client{Timeout: 3 * time.Second}
	var last string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		resp, err := c.Get("http://" + metrics + "/metrics")
		if err != nil {
			last = err.Error()
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			last = resp.Status
			continue
		}
		if s := string(body); !strings.Contains(s, "\nstated_raft_has_leader 0\n") {
			t.Fatalf("/metrics of a node waiting to join does not report stated_raft_has_leader 0:\n%s", grepLines(s, "stated_raft_"))
		}
		return
	}
	t.Fatalf("a new node waiting for its --join address never answered GET /metrics within 20s (last: %s)", last)
}
