package test

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestARestartAfterSIGKILLStillRefusesAJoinAddressOfAnotherCluster: a
// member checks at start that its join addresses serve its own cluster,
// which needs its cluster's id before it has a leader. The state machine
// writes Pebble without a sync (the Raft log is what is durable), and
// Pebble keeps the WAL's last partial block in memory until a sync, so
// a node SIGKILLed early in its cluster's life lost the recorded id with
// that block: it restarted knowing no cluster, skipped the check, and
// served beside the other cluster. The id is synced when it is recorded.
func TestARestartAfterSIGKILLStillRefusesAJoinAddressOfAnotherCluster(t *testing.T) {
	t.Parallel()
	skipLong(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	other := newNamedNode(t, "m1")
	other.start(ctx)

	n := newNamedNode(t, "n1")
	n.start(ctx)
	n.kill() // before any checkpoint or Raft snapshot synced Pebble

	n.args = []string{"--join", other.grpcAddr}
	if exited := n.startOnce(ctx); !exited {
		t.Fatalf("n1, SIGKILLed, restarted and served with --join %s, an address of another cluster:\n%s", other.grpcAddr, n.logs)
	}
	if !strings.Contains(n.logs.String(), "belongs to cluster") {
		t.Fatalf("n1 exited without naming the other cluster:\n%s", n.logs)
	}
}
