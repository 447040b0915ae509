package test

import (
	"context"
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStatusWithAHungMemberStillShowsTheCheckpoints: `stated
// status --help` says "A member that does not answer within --timeout is
// shown as unreachable", and OPERATIONS.md ("Checking health", "One node
// lost") has operators read the checkpoint section of `stated status`
// (last completed, failed, last error) with a member down. A member that
// hangs (a stalled process, a partition that drops packets) rather than
// refusing connections must cost only its own row: the --addr node, the
// leader here, answers, so the checkpoint section and the window
// namespaces must still be shown, not "checkpoints: unknown (...
// DeadlineExceeded ...)".
func TestStatusWithAHungMemberStillShowsTheCheckpoints(t *testing.T) {
	t.Parallel()
	skipLong(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	nodes := startCluster(ctx, t, 3, "--checkpoint-interval", "1s")
	lead := leaderOf(ctx, t, nodes)
	hung := nodes[(lead+1)%3]
	addr := nodes[lead].grpcAddr
	// A first completed checkpoint, so that the section has something to show.
	waitStated(ctx, t, func(s string) bool { return strings.Contains(s, `"last_completed"`) }, "--addr", addr, "status", "--json")

	hung.mu.Lock()
	hung.cmd.Process.Signal(syscall.SIGSTOP)
	hung.mu.Unlock()
	t.Cleanup(func() {
		hung.mu.Lock()
		if hung.cmd != nil {
			hung.cmd.Process.Signal(syscall.SIGCONT)
		}
		hung.mu.Unlock()
	})

	r := runStated(ctx, t, "--addr", addr, "--timeout", "3s", "status", "--json")
	if r.code != 0 {
		t.Fatalf("stated status with a hung member: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	var out struct {
		Members []struct {
			NodeID    string `json:"node_id"`
			Reachable bool   `json:"reachable"`
		} `json:"members"`
		Checkpoints *struct {
			Completed uint64 `json:"completed"`
		} `json:"checkpoints"`
		CheckpointsError string `json:"checkpoints_error"`
		WindowsError     string `json:"windows_error"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("stated status --json: %v\n%s", err, r.stdout)
	}
	for _, m := range out.Members {
		if m.Reachable == (m.NodeID == hung.id) {
			t.Errorf("member %s reachable=%v; want only the hung %s unreachable", m.NodeID, m.Reachable, hung.id)
		}
	}
	if out.Checkpoints == nil || out.CheckpointsError != "" {
		t.Errorf("one hung member made status lose the leader's checkpoint section: checkpoints_error %q", out.CheckpointsError)
	}
	if out.WindowsError != "" {
		t.Errorf("one hung member made status lose the window namespaces: windows_error %q", out.WindowsError)
	}
}
