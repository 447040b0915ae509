package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// counter is a counter's value in a scrape of addr, 0 when absent.
func counter(t *testing.T, addr, name string) float64 {
	t.Helper()
	m := sample(scrape(t, addr), name)
	if m == nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

// gaugeValue is a gauge's value in a scrape of addr; the gauge must be
// there.
func gaugeValue(t *testing.T, addr, name string) float64 {
	t.Helper()
	m := sample(scrape(t, addr), name)
	if m == nil {
		t.Fatalf("%s is not served", name)
	}
	return m.GetGauge().GetValue()
}

func TestRaftSnapshotMetricsCountTakenAndInstalledSnapshots(t *testing.T) {
	t.Parallel()
	opts := func(c *daemon.Config) {
		c.MetricsAddr = "127.0.0.1:0"
		c.CheckpointInterval = 0
		// Keep few entries after a snapshot, so that a node joining later
		// is too far behind for the log and is sent the snapshot.
		c.TrailingLogs = 2
	}
	leader := daemontest.Start(t, opts)
	daemontest.WaitLeader(t, leader)
	if v := counter(t, leader.MetricsAddr(), "stated_raft_snapshots_taken_total"); v != 0 {
		t.Fatalf("a new node's stated_raft_snapshots_taken_total is %v, want 0", v)
	}
	if fams := scrape(t, leader.MetricsAddr()); fams["stated_raft_snapshots_taken_total"] == nil || fams["stated_raft_snapshots_installed_total"] == nil {
		t.Fatal("the snapshot counters are not served before the first snapshot")
	}
	if v := gaugeValue(t, leader.MetricsAddr(), "stated_raft_snapshot_bytes_threshold"); v != 256<<20 {
		t.Fatalf("stated_raft_snapshot_bytes_threshold is %v, want the default --raft-snapshot-bytes, 256 MiB, while the state is smaller", v)
	}
	before := gaugeValue(t, leader.MetricsAddr(), "stated_raft_log_bytes_since_snapshot")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+leader.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	defer conn.Close()
	st := statedv1.NewStateClient(conn)
	for i := range 20 {
		_, err := st.Commit(ctx, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_PUT,
			Namespace: "m", Key: fmt.Appendf(nil, "k%d", i), Value: []byte("v")}}})
		must(t, err)
	}
	// 20 commits each of a key, a value and their framing.
	if v := gaugeValue(t, leader.MetricsAddr(), "stated_raft_log_bytes_since_snapshot"); v < before+20*4 {
		t.Fatalf("stated_raft_log_bytes_since_snapshot is %v after 20 commits, was %v before: want at least 80 bytes more", v, before)
	}
	must(t, leader.Store().Snapshot())
	if v := gaugeValue(t, leader.MetricsAddr(), "stated_raft_log_bytes_since_snapshot"); v != 0 {
		t.Fatalf("stated_raft_log_bytes_since_snapshot is %v right after a snapshot, want 0", v)
	}
	if v := counter(t, leader.MetricsAddr(), "stated_raft_snapshots_taken_total"); v != 1 {
		t.Fatalf("after one snapshot stated_raft_snapshots_taken_total is %v, want 1", v)
	}
	if v := counter(t, leader.MetricsAddr(), "stated_raft_snapshots_installed_total"); v != 0 {
		t.Fatalf("the leader's stated_raft_snapshots_installed_total is %v, want 0", v)
	}

	// A node joining now gets the snapshot: its log starts after it.
	follower := daemontest.Start(t, opts, func(c *daemon.Config) {
		c.NodeID = "node2"
		c.Join = []string{leader.TCPAddr()}
	})
	waitFor(t, "the follower counts the installed snapshot", func() bool {
		return counter(t, follower.MetricsAddr(), "stated_raft_snapshots_installed_total") == 1
	})
	if v := counter(t, follower.MetricsAddr(), "stated_raft_snapshots_taken_total"); v != 0 {
		t.Errorf("the follower's stated_raft_snapshots_taken_total is %v, want 0: it took none", v)
	}
}
