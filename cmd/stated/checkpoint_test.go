package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/internal/s3test"
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
		{[]string{"checkpoint", "show", ""}, 64, "checkpoint: give an epoch, latest or a savepoint name"},
		{[]string{"checkpoint", "delete", "--savepoint", "--force", "v9"}, 64, "--force is for a checkpoint's epoch; a savepoint is deleted without it"},
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
	// Epoch 3's counts were made from epoch 2's, or whole after comparing
	// with it (Pebble may compact so small a state in between).
	if n := st.Checkpoints.LastCount; n == nil || (n.WholeReason == "" && n.BaseEpoch != 2) || (n.WholeReason != "" && !strings.Contains(n.WholeReason, "epoch 2")) {
		t.Errorf("status last_count = %+v, want counted from epoch 2 or whole after comparing with it", n)
	}
	if out := mustSucceed(t, client(t, d, "status")); !strings.Contains(out, "checkpoints to "+bucket) || !strings.Contains(out, "last completed: epoch 3") ||
		!strings.Contains(out, "its keys and bytes counted ") {
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
		{[]string{"--checkpoint-materialize-interval", "-1s"}, 64, "--checkpoint-materialize-interval -1s is negative"},
		{[]string{"--checkpoint-changelog-memory", "-1"}, 64, `"-1" is not a size`},
		{[]string{"--checkpoint-changelog-memory", "lots"}, 64, `invalid argument "lots" for "--checkpoint-changelog-memory" flag`},
		{[]string{"--checkpoint-url", "ftp://x/y"}, 1, `unknown scheme "ftp"`},
		{[]string{"--enable-pprof"}, 64, "--enable-pprof serves the profiles on --metrics-addr, which is not set"},
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

// blockedCheckpoints starts a daemon whose checkpoints go to an S3
// server (gofakes3 on loopback) that holds every upload of a checkpoint
// file until the returned func is called (also at cleanup). entered
// receives a value when the first such upload arrives.
func blockedCheckpoints(t *testing.T) (d *daemon.Daemon, entered <-chan struct{}, release func()) {
	t.Helper()
	in, gate := make(chan struct{}), make(chan struct{})
	var first, once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	bucket := s3test.Serve(t, func(s3 http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/files/") {
				first.Do(func() { close(in) })
				<-gate
			}
			s3.ServeHTTP(w, r)
		})
	})
	s3test.SetEnv(t)
	d = daemontest.Start(t, func(c *daemon.Config) { c.CheckpointURL = bucket; c.CheckpointInterval = 0 })
	daemontest.WaitLeader(t, d) // callers give the CLI deadlines as short as 2s
	t.Cleanup(release)          // runs before the daemon and the server close
	return d, in, release
}

// TestCheckpointTriggerWaitOutlastsTheDefaultTimeout: --wait waits for
// the upload however long it takes, without an explicit --timeout.
func TestCheckpointTriggerWaitOutlastsTheDefaultTimeout(t *testing.T) {
	d, entered, release := blockedCheckpoints(t)
	done := make(chan result, 1)
	go func() { done <- client(t, d, "checkpoint", "trigger", "--wait") }()
	<-entered
	// The condition is the passing of time itself: past the default bound.
	select {
	case r := <-done:
		t.Fatalf("trigger --wait returned while the checkpoint was still uploading: exit %d, %q", r.code, r.stderr)
	case <-time.After(defaultTimeout + time.Second):
	}
	release()
	if out := mustSucceed(t, <-done); !strings.HasPrefix(out, "checkpoint 1 completed: ") {
		t.Fatalf("trigger --wait = %q", out)
	}
}

// TestCheckpointTriggerWaitStopsAtAnExplicitTimeoutSayingWhatRuns: a
// --timeout (or STATED_TIMEOUT) the user gives bounds --wait, and the
// message says what still runs; the checkpoint goes on in the daemon.
func TestCheckpointTriggerWaitStopsAtAnExplicitTimeoutSayingWhatRuns(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
	}{
		// The bound covers the dial and the Status call before the wait
		// too: 300ms was once too short for them on a loaded CI machine.
		{"--timeout", nil, []string{"--timeout", "2s"}},
		{"STATED_TIMEOUT", map[string]string{"STATED_TIMEOUT": "2s"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _, release := blockedCheckpoints(t)
			args := append(append([]string{"--addr", d.SocketPath()}, tc.args...), "checkpoint", "trigger", "--wait")
			r := cliRun(t, tc.env, args...)
			if r.code != 2 || !strings.Contains(r.stderr, "checkpoint 1 is still uploading") ||
				!strings.Contains(r.stderr, "after 2s (--timeout); it goes on in the daemon: see `stated checkpoint list`") {
				t.Fatalf("exit %d, %q; want 2 and what is still running", r.code, r.stderr)
			}
			release()
			deadline := time.Now().Add(30 * time.Second)
			for !strings.Contains(mustSucceed(t, client(t, d, "checkpoint", "list")), "\n1 ") {
				if time.Now().After(deadline) {
					t.Fatal("checkpoint 1 never completed after trigger --wait gave up")
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}
