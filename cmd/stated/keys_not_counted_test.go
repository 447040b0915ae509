package main

import (
	"bytes"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/daemon/recovery"
)

// TestCommandsSayWhenACheckpointsKeysWereNotCounted: a table checkpoint
// whose count was not done in time has a manifest with zero keys and
// keys_not_counted (daemon's TestACheckpointDoesNotWaitForASlowCount
// makes one). Here such a manifest is written over a real checkpoint's,
// and every command that shows a checkpoint's keys says they were not
// counted, and why, instead of showing zero keys.
func TestCommandsSayWhenACheckpointsKeysWereNotCounted(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	bucket := (&url.URL{Scheme: "file", Path: root}).String()
	d := daemontest.Start(t, func(c *daemon.Config) { c.CheckpointURL = bucket; c.CheckpointInterval = 0 })
	mustSucceed(t, client(t, d, "kv", "add", "ns", "clicks", "5"))
	mustSucceed(t, client(t, d, "checkpoint", "trigger", "--wait"))
	mustSucceed(t, client(t, d, "kv", "add", "ns", "clicks", "1"))
	mustSucceed(t, client(t, d, "checkpoint", "trigger", "--wait"))

	const why = "its count was not done 1s after its files were sent (it went on, as the next count's base)"
	p := filepath.Join(root, "manifests", "00000000000000000002.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	stats := m["stats"].(map[string]any)
	stats["keys"], stats["bytes"], stats["keys_not_counted"] = 0, 0, why
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}

	out := mustSucceed(t, client(t, d, "checkpoint", "list"))
	lines := strings.Split(out, "\n")
	// EPOCH CREATED AGE INDEX FILES SIZE (a number and a unit) KEYS SAVEPOINT
	if len(lines) < 4 || strings.Fields(lines[1])[7] != "1" || strings.Fields(lines[2])[7] != "-" ||
		!strings.Contains(out, "keys not counted (stated checkpoint show EPOCH says why): 2\n") {
		t.Errorf("list: want checkpoint 1 with 1 key, checkpoint 2 with \"-\", and a note naming 2:\n%s", out)
	}
	var list []checkpointOutput
	if err := json.Unmarshal([]byte(mustSucceed(t, client(t, d, "checkpoint", "list", "--json"))), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].KeysNotCounted != "" || list[0].Keys != 1 || list[1].KeysNotCounted != why || list[1].Keys != 0 {
		t.Errorf("list --json = %+v; want checkpoint 2's keys_not_counted %q", list, why)
	}
	if out := mustSucceed(t, client(t, d, "checkpoint", "show", "2")); !strings.Contains(out, "not counted ("+why+")") {
		t.Errorf("show 2 does not say why its keys were not counted:\n%s", out)
	}
	if out := mustSucceed(t, cliRun(t, nil, "recovery", "--from", bucket)); !strings.Contains(out, "keys not counted ("+why+")") || strings.Contains(out, "holds 0 keys") {
		t.Errorf("recovery --from does not say why the keys were not counted:\n%s", out)
	}
	if out := mustSucceed(t, client(t, d, "recovery")); !strings.Contains(out, "keys not counted ("+why+")") {
		t.Errorf("recovery through the daemon does not say why the keys were not counted:\n%s", out)
	}
	var r recovery.Report
	if err := json.Unmarshal([]byte(mustSucceed(t, client(t, d, "recovery", "--json"))), &r); err != nil {
		t.Fatal(err)
	}
	if r.Epoch != 2 || r.KeysNotCounted != why || r.Keys != 0 {
		t.Errorf("recovery --json = epoch %d, keys %d, keys_not_counted %q; want 2, 0, %q", r.Epoch, r.Keys, r.KeysNotCounted, why)
	}
	dir := filepath.Join(t.TempDir(), "new")
	if out := mustSucceed(t, cliRun(t, nil, "restore", "--from", bucket, "--data-dir", dir)); !strings.Contains(out, "restored checkpoint 2 ") || !strings.Contains(out, ": keys not counted ("+why+"), ") {
		t.Errorf("restore does not say why the keys were not counted:\n%s", out)
	}
	n := daemontest.Start(t, func(c *daemon.Config) { c.DataDir = dir; c.NodeID = "restored" })
	if out := mustSucceed(t, client(t, n, "kv", "get", "ns", "clicks", "--kind", "counter")); strings.TrimSpace(out) != "6" {
		t.Errorf("restored counter = %q, want 6", out)
	}
}

// TestStatusSaysWhichCheckpointTheLastCountWasOf: the status's line on
// the last count names the last completed checkpoint's when it is that
// one's, and otherwise says that checkpoint's keys were not counted and
// which checkpoint the last count was of.
func TestStatusSaysWhichCheckpointTheLastCountWasOf(t *testing.T) {
	n := &countOutput{Epoch: 4, WholeReason: "no base kept", DurationMillis: 9340}
	if got, want := countLine(n, &checkpointOutput{Epoch: 4}), "its keys and bytes counted whole in 9340ms (no base kept)"; !strings.HasPrefix(got, want) {
		t.Errorf("the count of the last completed checkpoint: %q, want it to start %q", got, want)
	}
	got := countLine(n, &checkpointOutput{Epoch: 6, KeysNotCounted: "the count of checkpoint 4 was still running"})
	if want := "its keys not counted (the count of checkpoint 4 was still running); the last count, of epoch 4, whole in 9340ms"; !strings.HasPrefix(got, want) {
		t.Errorf("an older count: %q, want it to start %q", got, want)
	}
}

// TestStatusPrintsTheCountUnderWayAndWhyTheLastCheckpointWasNotCounted:
// `stated status` on a checkpoint status whose last checkpoint's keys
// were not counted, while a count runs.
func TestStatusPrintsTheCountUnderWayAndWhyTheLastCheckpointWasNotCounted(t *testing.T) {
	var out bytes.Buffer
	c := &cli{stdout: &out}
	st := &checkpointsOutput{Bucket: "file:///b", IntervalSeconds: 1, Retain: 3, Coordinator: "n1", CountingEpoch: 5,
		LastCompleted: &checkpointOutput{Epoch: 7, Kind: "tables", KeysNotCounted: "the count of checkpoint 5 was still running"},
		LastCount:     &countOutput{Epoch: 4, BaseEpoch: 3, DurationMillis: 12}}
	if err := c.printCheckpointStatus(statusOutput{Checkpoints: st}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"  its keys not counted (the count of checkpoint 5 was still running); the last count, of epoch 4, from epoch 3 in 12ms",
		"  counting the keys of epoch 5\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
}
