package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/statedhq/stated/daemon/daemontest"
)

func TestStatusShowsEveryMembersRaftStateAndTheLeader(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 3)
	mustSucceed(t, client(t, nodes[2], "kv", "put", "ns", "k", "v")) // forwarded to node1

	out := mustSucceed(t, client(t, nodes[1], "status"))
	members, rest, _ := strings.Cut(out, "\n\n")
	counts, ckpts, _ := strings.Cut(rest, "\n\n")
	lines := strings.Split(strings.TrimSpace(members), "\n")
	if len(lines) != 5 {
		t.Fatalf("status printed %d member lines, want a title, a header and 3 rows:\n%s", len(lines), out)
	}
	if !strings.HasPrefix(ckpts, "checkpoints to file://") || !strings.Contains(ckpts, "(coordinator node1)") {
		t.Errorf("status lacks the leader's checkpoint section:\n%s", out)
	}
	if !strings.HasPrefix(lines[0], "cluster ") || !strings.Contains(lines[0], "leader node1") {
		t.Errorf("title = %q", lines[0])
	}
	if h := strings.Fields(lines[1]); strings.Join(h, " ") != "NODE GRPC ADDR ROLE TERM LAST LOG COMMIT APPLIED IS LEADER ERROR" {
		t.Errorf("header = %q", lines[1])
	}
	// Every member's bookkeeping. The CLI's put opened one session (at
	// its commit: the CLI dials lazily), and the leader counts it and the
	// one key (followers may not have applied them yet).
	countLines := strings.Split(strings.TrimSpace(counts), "\n")
	if len(countLines) != 4 || strings.Join(strings.Fields(countLines[0]), " ") != "NODE SESSIONS SESSION LANES TTL PENDING STATE KEYS STATE BYTES WINDOW NAMESPACES OPEN WINDOWS PENDING EMISSIONS" {
		t.Fatalf("counts section:\n%s", counts)
	}
	for i, d := range nodes {
		f := strings.Fields(countLines[1+i])
		if len(f) != 9 || f[0] != d.NodeID() {
			t.Errorf("counts row %d = %q, want %s and 8 counts", i, countLines[1+i], d.NodeID())
		} else if i == 0 && (f[1] != "1" || f[2] != "1" || f[4] != "1") {
			t.Errorf("leader's counts = %q, want 1 session, 1 lane, 1 state key", countLines[1])
		}
	}
	for i, d := range nodes {
		f := strings.Fields(lines[2+i])
		role, leader := "follower", "false"
		if i == 0 {
			role, leader = "leader", "true"
		}
		if len(f) != 8 || f[0] != d.NodeID() || f[1] != d.TCPAddr() || f[2] != role || f[7] != leader {
			t.Errorf("row %d = %q, want %s at %s, %s, leader %s", i, lines[2+i], d.NodeID(), d.TCPAddr(), role, leader)
		}
	}
}

func TestStatusShowsAMemberThatIsDownAsUnreachable(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 3)
	if err := nodes[2].Close(); err != nil {
		t.Fatal(err)
	}
	var got statusOutput
	out := mustSucceed(t, client(t, nodes[0], "status", "--json", "--timeout", "2s"))
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	if len(got.Members) != 3 || got.LeaderID != "node1" {
		t.Fatalf("status = %s", out)
	}
	for _, m := range got.Members {
		down := m.NodeID == "node3"
		if m.Reachable == down || (down && m.Error == "") || (!down && m.Role == "") {
			t.Errorf("member %+v: want reachable=%t", m, !down)
		}
	}
}

func TestClusterMembersJSONListsEveryMemberWithItsAddresses(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 3)
	var got membersOutput
	out := mustSucceed(t, client(t, nodes[2], "cluster", "members", "--json"))
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	if got.ClusterID == "" || got.LeaderID != "node1" || len(got.Members) != 3 {
		t.Fatalf("members = %s", out)
	}
	byID := map[string]memberOutput{}
	for _, m := range got.Members {
		byID[m.NodeID] = m
	}
	for _, d := range nodes {
		m := byID[d.NodeID()]
		if m.RaftAddr != d.Store().RaftAddr() || m.GRPCAddr != d.TCPAddr() || !m.Voter || m.Leader != (d.NodeID() == "node1") {
			t.Errorf("member %s = %+v", d.NodeID(), m)
		}
	}
}

func TestClusterRemoveRemovesTheMemberAndAnUnknownOneFails(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 3)
	if out := mustSucceed(t, client(t, nodes[1], "cluster", "remove", "node3")); out != "removed node3\n" {
		t.Errorf("stdout = %q", out)
	}
	out := mustSucceed(t, client(t, nodes[0], "cluster", "members"))
	if strings.Contains(out, "node3") {
		t.Errorf("members after remove:\n%s", out)
	}
	r := client(t, nodes[0], "cluster", "remove", "node9")
	if r.code != exitFailed || !strings.Contains(r.stderr, "node9") {
		t.Errorf("remove of an unknown node: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestRunRefusesBootstrapTogetherWithJoin(t *testing.T) {
	t.Parallel()
	r := cliRun(t, nil, "run", "--bootstrap", "--join", "127.0.0.1:7420", "--data-dir", t.TempDir())
	if r.code != exitUsage || !strings.Contains(r.stderr, "--join") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}
