package main

import (
	"encoding/json"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/daemon/recovery"
)

func TestRecoveryAndRestoreCommands(t *testing.T) {
	t.Parallel()
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	d := daemontest.Start(t, func(c *daemon.Config) { c.CheckpointURL = bucket; c.CheckpointInterval = 0 })
	mustSucceed(t, client(t, d, "kv", "add", "ns", "clicks", "7"))
	mustSucceed(t, client(t, d, "checkpoint", "trigger", "--wait"))

	// The report through the daemon, and straight from the bucket.
	out := mustSucceed(t, client(t, d, "recovery"))
	for _, want := range []string{"checkpoint 1, taken ", "holds 1 keys", "files: all present and intact", "no Kafka offsets in this checkpoint"} {
		if !strings.Contains(out, want) {
			t.Errorf("recovery through the daemon lacks %q:\n%s", want, out)
		}
	}
	var r recovery.Report
	if err := json.Unmarshal([]byte(mustSucceed(t, cliRun(t, nil, "recovery", "--from", bucket, "--json"))), &r); err != nil {
		t.Fatal(err)
	}
	if r.Epoch != 1 || !r.Verified || !r.Intact || r.Keys != 1 || r.ClusterID != d.Store().ClusterID() {
		t.Fatalf("recovery --from --json = %+v", r)
	}
	if res := cliRun(t, nil, "recovery", "--from", bucket, "--kafka-brokers", "127.0.0.1:1"); res.code != 0 || !strings.Contains(res.stdout, "no Kafka offsets") {
		// No offsets: Kafka has nothing to be asked about.
		t.Errorf("recovery with brokers and no offsets: exit %d, %q %q", res.code, res.stdout, res.stderr)
	}

	dir := filepath.Join(t.TempDir(), "new")
	out = mustSucceed(t, cliRun(t, nil, "restore", "--from", bucket, "--data-dir", dir))
	if !strings.Contains(out, "restored checkpoint 1 ") || !strings.Contains(out, "next: stated run --data-dir "+dir) {
		t.Errorf("restore = %q", out)
	}
	n := daemontest.Start(t, func(c *daemon.Config) { c.DataDir = dir; c.NodeID = "restored" })
	if out := mustSucceed(t, client(t, n, "kv", "get", "ns", "clicks", "--kind", "counter")); strings.TrimSpace(out) != "7" {
		t.Errorf("restored counter = %q, want 7", out)
	}
	if n.Store().ClusterID() == d.Store().ClusterID() {
		t.Error("the restored node kept the old cluster id")
	}

	// With --node-id the restore bootstraps the new cluster itself.
	dir2 := filepath.Join(t.TempDir(), "boot")
	raftAddr := freeAddr(t)
	out = mustSucceed(t, cliRun(t, nil, "restore", "--from", bucket, "--data-dir", dir2, "--node-id", "r2", "--raft-addr", raftAddr))
	_, rest, ok := strings.Cut(out, "bootstrapped cluster ")
	clusterID, _, _ := strings.Cut(rest, " ")
	if !ok || clusterID == "" || clusterID == d.Store().ClusterID() {
		t.Fatalf("restore --node-id = %q", out)
	}
	n2 := daemontest.Start(t, func(c *daemon.Config) { c.DataDir = dir2; c.NodeID = "r2"; c.RaftAddr = raftAddr })
	if n2.Store().ClusterID() != clusterID {
		t.Errorf("the node runs cluster %q, the restore bootstrapped %q", n2.Store().ClusterID(), clusterID)
	}
	if out := mustSucceed(t, client(t, n2, "kv", "get", "ns", "clicks", "--kind", "counter")); strings.TrimSpace(out) != "7" {
		t.Errorf("counter on the bootstrapped node = %q, want 7", out)
	}

	// With --advertise-raft-addr the bootstrapped configuration holds the
	// name the node advertises (a pod's DNS name), not the bound address.
	dir3 := filepath.Join(t.TempDir(), "named")
	raftAddr3 := freeAddr(t)
	_, port, _ := net.SplitHostPort(raftAddr3)
	named := "localhost:" + port
	out = mustSucceed(t, cliRun(t, nil, "restore", "--from", bucket, "--data-dir", dir3, "--node-id", "r3", "--raft-addr", raftAddr3, "--advertise-raft-addr", named))
	if !strings.Contains(out, "(raft "+named+")") || !strings.Contains(out, "--advertise-raft-addr "+named) {
		t.Errorf("restore --advertise-raft-addr = %q", out)
	}
	n3 := daemontest.Start(t, func(c *daemon.Config) {
		c.DataDir = dir3
		c.NodeID = "r3"
		c.RaftAddr = raftAddr3
		c.AdvertiseRaftAddr = named
	})
	if members, _, err := n3.Store().Members(); err != nil || len(members) != 1 || members[0].RaftAddr != named {
		t.Errorf("the restored node's members = %+v, %v; want r3 at %s", members, err, named)
	}

	empty := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	full := t.TempDir()
	os.WriteFile(filepath.Join(full, "x"), nil, 0o600)
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"restore", "--data-dir", t.TempDir()}, 64, "--from URL is required"},
		{[]string{"restore", "--from", bucket}, 64, "--data-dir is required"},
		{[]string{"restore", "--from", empty, "--data-dir", filepath.Join(t.TempDir(), "a")}, 1, "the bucket holds no checkpoint"},
		{[]string{"restore", "--from", bucket, "--checkpoint", "9", "--data-dir", filepath.Join(t.TempDir(), "b")}, 1, "checkpoint 9 is not in the bucket"},
		{[]string{"restore", "--from", bucket, "--data-dir", full}, 1, "--force replaces them"},
		{[]string{"restore", "--from", "ftp://x", "--data-dir", full}, 1, `unknown scheme "ftp"`},
		{[]string{"recovery", "--from", empty}, 1, "holds no checkpoint"},
		{[]string{"recovery", "--from", bucket, "--checkpoint", "0"}, 64, "epochs start at 1"},
	} {
		res := cliRun(t, nil, tc.args...)
		if res.code != tc.code || !strings.Contains(res.stderr, tc.msg) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, res.code, res.stderr, tc.code, tc.msg)
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestRestoreAndRecoveryStopAtAnExplicitTimeoutSayingHowFarTheyGot: the
// default --timeout does not bound them (the other tests run them without
// one), but a --timeout the user gives does, and the message says so.
func TestRestoreAndRecoveryStopAtAnExplicitTimeoutSayingHowFarTheyGot(t *testing.T) {
	t.Parallel()
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	d := daemontest.Start(t, func(c *daemon.Config) { c.CheckpointURL = bucket; c.CheckpointInterval = 0 })
	mustSucceed(t, client(t, d, "kv", "add", "ns", "clicks", "7"))
	mustSucceed(t, client(t, d, "checkpoint", "trigger", "--wait"))
	dir := filepath.Join(t.TempDir(), "new")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"restore", "--from", bucket, "--data-dir", dir}, "restore stopped after 1ns (--timeout) with "},
		{[]string{"recovery", "--from", bucket}, "the recovery report did not finish within 1ns (--timeout): it was still verifying"},
	} {
		r := cliRun(t, nil, append(tc.args, "--timeout", "1ns")...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v --timeout 1ns: exit %d, %q; want 2 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	// Run again without the bound, the restore completes.
	if out := mustSucceed(t, cliRun(t, nil, "restore", "--from", bucket, "--data-dir", dir)); !strings.Contains(out, "restored checkpoint 1 ") {
		t.Errorf("restore after the stopped one = %q", out)
	}
}
