package main

import (
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
)

func TestCheckpointCommands(t *testing.T) {
	t.Parallel()
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	d := daemontest.Start(t, func(c *daemon.Config) { c.CheckpointURL = bucket; c.CheckpointInterval = 0 })
	mustSucceed(t, client(t, d, "kv", "add", "ns", "clicks", "5"))
	if out := mustSucceed(t, client(t, d, "checkpoint", "trigger", "--wait")); !strings.HasPrefix(out, "checkpoint 1 completed: ") || !strings.Contains(out, "1 keys") {
		t.Errorf("trigger --wait = %q", out)
	}
	if out := mustSucceed(t, client(t, d, "checkpoint", "trigger")); out != "checkpoint 2 started\n" {
		t.Errorf("trigger = %q", out)
	}
	mustSucceed(t, client(t, d, "checkpoint", "trigger", "--wait"))

	var list []checkpointOutput
	if err := json.Unmarshal([]byte(mustSucceed(t, client(t, d, "checkpoint", "list", "--json"))), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || list[0].Epoch != 1 || list[2].Epoch != 3 || list[2].Keys != 1 || list[2].Files == 0 || list[2].ClusterID == "" {
		t.Fatalf("list --json = %+v", list)
	}
	if out := mustSucceed(t, client(t, d, "checkpoint", "list")); !strings.Contains(out, "EPOCH") || strings.Count(out, "\n") != 4 {
		t.Errorf("list = %q", out)
	}
	if out := mustSucceed(t, client(t, d, "checkpoint", "savepoint", "--epoch", "2", "v1.4")); out != "checkpoint 2 pinned as savepoint \"v1.4\"\n" {
		t.Errorf("savepoint = %q", out)
	}
	var m manifestJSON
	if err := json.Unmarshal([]byte(mustSucceed(t, client(t, d, "checkpoint", "show", "v1.4", "--json"))), &m); err != nil {
		t.Fatal(err)
	}
	if m.Epoch != 2 || m.Savepoint != "v1.4" || m.FormatVersion != 1 || len(m.FileList) == 0 || m.FileList[0].SHA256 == "" {
		t.Fatalf("show v1.4 --json = %+v", m)
	}
	if out := mustSucceed(t, client(t, d, "checkpoint", "show", "latest")); !strings.Contains(out, "epoch:") || !strings.Contains(out, " 3\n") {
		t.Errorf("show latest = %q", out)
	}
	if out := mustSucceed(t, client(t, d, "checkpoint", "delete", "1")); out != "checkpoint 1 deleted\n" {
		t.Errorf("delete = %q", out)
	}
	if r := client(t, d, "checkpoint", "delete", "2"); r.code != 1 || !strings.Contains(r.stderr, "v1.4") {
		t.Errorf("delete of a pinned checkpoint: exit %d, %q; want a refusal naming the savepoint", r.code, r.stderr)
	}
	if out := mustSucceed(t, client(t, d, "checkpoint", "delete", "--savepoint", "v1.4")); out != "savepoint \"v1.4\" deleted\n" {
		t.Errorf("delete --savepoint = %q", out)
	}
	mustSucceed(t, client(t, d, "checkpoint", "delete", "2"))
	// The newest checkpoint: refused, saying why, unless --force.
	if r := client(t, d, "checkpoint", "delete", "3"); r.code != 1 || !strings.Contains(r.stderr, "checkpoint 3 is the newest") || !strings.Contains(r.stderr, "--force") {
		t.Errorf("delete of the newest checkpoint: exit %d, %q; want a refusal naming --force", r.code, r.stderr)
	}
	if out := mustSucceed(t, client(t, d, "checkpoint", "show", "3")); !strings.Contains(out, "epoch:") {
		t.Errorf("the refused delete removed checkpoint 3: %q", out)
	}
	if out := mustSucceed(t, client(t, d, "checkpoint", "delete", "--force", "3")); out != "checkpoint 3 deleted\n" {
		t.Errorf("delete --force = %q", out)
	}
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"checkpoint", "show", "1"}, 1, "checkpoint 1 is not in the bucket"},
		{[]string{"checkpoint", "show", "0"}, 64, "epoch 0 does not exist"},
		{[]string{"checkpoint", "delete", "x"}, 64, `"x" is not an epoch`},
		{[]string{"checkpoint", "savepoint", "bad/name"}, 1, "name: invalid character '/'"},
	} {
		r := client(t, d, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, r.code, r.stderr, tc.code, tc.msg)
		}
	}
	var st statusOutput
	if err := json.Unmarshal([]byte(mustSucceed(t, client(t, d, "status", "--json"))), &st); err != nil {
		t.Fatal(err)
	}
	if c := st.Checkpoints; c == nil || c.Completed != 3 || c.Failures != 0 || c.LastCompleted == nil || c.LastCompleted.Epoch != 3 || c.Bucket != bucket {
		t.Fatalf("status checkpoints = %+v", st.Checkpoints)
	}
	if out := mustSucceed(t, client(t, d, "status")); !strings.Contains(out, "checkpoints to "+bucket) || !strings.Contains(out, "last completed: epoch 3") {
		t.Errorf("status = %q", out)
	}
}

func TestRunRefusesBadCheckpointFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--checkpoint-interval", "500ms"}, 64, "--checkpoint-interval 500ms is below the 1s minimum"},
		{[]string{"--checkpoint-retain", "0"}, 64, "--checkpoint-retain 0 is below 1"},
		{[]string{"--checkpoint-url", "ftp://x/y"}, 1, `unknown scheme "ftp"`},
	} {
		dir := t.TempDir()
		args := append([]string{"run", "--data-dir", dir, "--socket", shortSocket(t), "--grpc-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0"}, tc.args...)
		r := cliRun(t, nil, args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, r.code, r.stderr, tc.code, tc.msg)
		}
	}
}

// shortSocket is a unix socket path short enough for the platform limit.
func shortSocket(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "stated")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "s.sock")
}
