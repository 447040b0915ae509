package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

type result struct {
	stdout, stderr string
	code           int
}

// cliRun executes the stated command line in-process with env as its
// whole environment.
func cliRun(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var out, errOut daemontest.Buffer
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	code := execute(context.Background(), args, &out, &errOut, lookup)
	return result{out.String(), errOut.String(), code}
}

// client runs a client command against d.
func client(t *testing.T, d *daemon.Daemon, args ...string) result {
	t.Helper()
	return cliRun(t, nil, append([]string{"--addr", d.SocketPath()}, args...)...)
}

func mustSucceed(t *testing.T, r result) string {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	return r.stdout
}

func TestKVPutThenGetPrintsTheValue(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	mustSucceed(t, client(t, d, "kv", "put", "ns", "greeting", "hello world"))
	if out := mustSucceed(t, client(t, d, "kv", "get", "ns", "greeting")); out != "hello world\n" {
		t.Errorf("stdout = %q", out)
	}
	for _, level := range []string{"local", "session", "linearizable"} {
		if out := mustSucceed(t, client(t, d, "kv", "get", "ns", "greeting", "--consistency", level)); out != "hello world\n" {
			t.Errorf("--consistency %s: stdout = %q", level, out)
		}
	}
}

func TestKVGetOfAMissingKeyExitsOneNamingKeyAndNamespace(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	r := client(t, d, "kv", "get", "ns", "nope")
	if r.code != 1 {
		t.Errorf("exit code %d, want 1", r.code)
	}
	if want := "stated: key \"nope\" not found in namespace \"ns\"\n"; r.stderr != want {
		t.Errorf("stderr = %q, want %q", r.stderr, want)
	}
	if r.stdout != "" {
		t.Errorf("stdout = %q, want nothing", r.stdout)
	}
}

// TestKVGetOfAKeyHoldingAnotherKindSaysWhichKindReadsIt: a value's read
// of a key that holds only a counter, map or list still exits 1, and says
// what the key holds and how to read it, instead of that nothing is there.
func TestKVGetOfAKeyHoldingAnotherKindSaysWhichKindReadsIt(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	mustSucceed(t, client(t, d, "kv", "add", "ns", "c", "5"))
	r := client(t, d, "kv", "get", "ns", "c")
	if want := "stated: no value at key \"c\" in namespace \"ns\"; it holds a counter (--kind counter reads it)\n"; r.code != 1 || r.stderr != want {
		t.Errorf("get of a counter: exit %d, stderr %q; want exit 1, %q", r.code, r.stderr, want)
	}
	if out := mustSucceed(t, client(t, d, "kv", "get", "ns", "c", "--kind", "counter")); out != "5\n" {
		t.Errorf("--kind counter: stdout %q", out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sc, err := stated.Dial(ctx, d.SocketPath(), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if _, err := sc.Txn().MapPut("ns", []byte("m"), []byte("s"), []byte("v")).ListAppend("ns", []byte("m"), []byte("e")).
		CounterAdd("ns", []byte("m"), 1).Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r = client(t, d, "kv", "get", "ns", "m")
	want := "stated: no value at key \"m\" in namespace \"ns\"; it holds a counter (--kind counter reads it), " +
		"and a map (--kind map --sub-key S reads an entry, stated kv scan lists it), and a list (stated kv scan lists it)\n"
	if r.code != 1 || r.stderr != want {
		t.Errorf("get of a counter, map and list: exit %d, stderr %q; want exit 1, %q", r.code, r.stderr, want)
	}
	// A key that is only a prefix of another's is not taken for it.
	if r = client(t, d, "kv", "get", "ns", "x"); r.stderr != "stated: key \"x\" not found in namespace \"ns\"\n" {
		t.Errorf("get of x: %q", r.stderr)
	}
	if _, err := sc.Txn().MapPut("ns", []byte("px"), []byte("s"), []byte("v")).ListAppend("ns", []byte("px"), []byte("e")).
		CounterAdd("ns", []byte("px"), 1).Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if r = client(t, d, "kv", "get", "ns", "p"); r.code != 1 || r.stderr != "stated: key \"p\" not found in namespace \"ns\"\n" {
		t.Errorf("get of p beside px: exit %d, %q", r.code, r.stderr)
	}
}

func TestKVGetJSONHasTheValueExpiryAndIndex(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	mustSucceed(t, client(t, d, "kv", "put", "ns", "k", "v", "--ttl", "1h"))
	out := mustSucceed(t, client(t, d, "kv", "get", "ns", "k", "--json"))
	var got getOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %q: %v", out, err)
	}
	if got.Namespace != "ns" || got.Key != "k" || got.Kind != "value" || got.Value == nil || *got.Value != "v" || got.AppliedIndex == 0 {
		t.Errorf("got %+v", got)
	}
	exp, err := time.Parse(time.RFC3339Nano, got.ExpiresAt)
	if err != nil || time.Until(exp) < 59*time.Minute || time.Until(exp) > time.Hour {
		t.Errorf("expires_at = %q (%v), want about an hour from now", got.ExpiresAt, err)
	}
}

func TestKVAddThenGetCounterPrintsTheSumAndZeroForANewCounter(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	mustSucceed(t, client(t, d, "kv", "add", "ns", "hits", "40"))
	mustSucceed(t, client(t, d, "kv", "add", "ns", "hits", "2"))
	if out := mustSucceed(t, client(t, d, "kv", "get", "ns", "hits", "--kind", "counter")); out != "42\n" {
		t.Errorf("stdout = %q, want 42", out)
	}
	// The SDK reads a counter nobody added to as 0.
	if out := mustSucceed(t, client(t, d, "kv", "get", "ns", "misses", "--kind", "counter")); out != "0\n" {
		t.Errorf("missing counter: stdout = %q, want 0", out)
	}
}

func TestKVScanListsEntriesInKeyOrder(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	for _, kv := range [][2]string{{"b/2", "two"}, {"a", "zero"}, {"b/1", "one"}, {"c", "three"}} {
		mustSucceed(t, client(t, d, "kv", "put", "ns", kv[0], kv[1]))
	}
	if out := mustSucceed(t, client(t, d, "kv", "scan", "ns")); out != "a\tzero\nb/1\tone\nb/2\ttwo\nc\tthree\n" {
		t.Errorf("scan = %q", out)
	}
	if out := mustSucceed(t, client(t, d, "kv", "scan", "ns", "b/")); out != "b/1\tone\nb/2\ttwo\n" {
		t.Errorf("scan b/ = %q", out)
	}
	if out := mustSucceed(t, client(t, d, "kv", "scan", "ns", "--limit", "1")); out != "a\tzero\n" {
		t.Errorf("scan --limit 1 = %q", out)
	}
	out := mustSucceed(t, client(t, d, "kv", "scan", "ns", "b/", "--json"))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("scan --json printed %d lines: %q", len(lines), out)
	}
	var e getOutput
	if err := json.Unmarshal([]byte(lines[1]), &e); err != nil || e.Namespace != "ns" || e.Key != "b/2" || e.Kind != "value" || e.Value == nil || *e.Value != "two" {
		t.Errorf("second line %q: %+v, %v", lines[1], e, err)
	}
}

func TestKVDelAndDelPrefixRemoveKeys(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	for _, k := range []string{"a", "p/1", "p/2", "q"} {
		mustSucceed(t, client(t, d, "kv", "put", "ns", k, "v"))
	}
	mustSucceed(t, client(t, d, "kv", "del", "ns", "a"))
	mustSucceed(t, client(t, d, "kv", "del-prefix", "ns", "p/"))
	if out := mustSucceed(t, client(t, d, "kv", "scan", "ns")); out != "q\tv\n" {
		t.Errorf("after deletes scan = %q, want only q", out)
	}
	if r := client(t, d, "kv", "get", "ns", "a"); r.code != 1 {
		t.Errorf("deleted key: exit %d", r.code)
	}
}

func TestOffsetsGetPrintsTopicPartitionAndOffset(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	conn, err := grpc.NewClient("unix://"+d.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = statedv1.NewStateClient(conn).Commit(ctx, &statedv1.CommitRequest{Offsets: []*statedv1.Offset{
		{Group: "g", Topic: "orders", Partition: 1, Offset: 12},
		{Group: "g", Topic: "orders", Partition: 0, Offset: 7},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := statedv1.NewStateClient(conn).Claim(ctx, &statedv1.ClaimRequest{Group: "g", Owner: "proc-a", Partitions: []*statedv1.TopicPartition{
		{Topic: "orders", Partition: 2}, {Topic: "orders", Partition: 1},
	}}); err != nil {
		t.Fatal(err)
	}
	if out := mustSucceed(t, client(t, d, "offsets", "get", "g")); out != "orders\t0\t7\t-\t-\t-\norders\t1\t12\t1\tproc-a\tclaimed\norders\t2\t-\t1\tproc-a\tclaimed\n" {
		t.Errorf("offsets = %q", out)
	}
	out := mustSucceed(t, client(t, d, "offsets", "get", "g", "--json"))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || lines[0] != `{"group":"g","topic":"orders","partition":0,"offset":7}` ||
		!strings.HasPrefix(lines[1], `{"group":"g","topic":"orders","partition":1,"offset":12,"epoch":1,"owner":"proc-a","claim":"claimed","claimed_at":"20`) ||
		!strings.HasPrefix(lines[2], `{"group":"g","topic":"orders","partition":2,"epoch":1,"owner":"proc-a","claim":"claimed","claimed_at":"20`) {
		t.Errorf("offsets --json = %q", out)
	}
	r := client(t, d, "offsets", "get", "unknown-group")
	if r.code != 0 || r.stdout != "" || r.stderr != "no offsets or claims stored for group \"unknown-group\"\n" {
		t.Errorf("offsets of an unknown group: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestServerRejectionsPrintTheServerMessage(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	r := client(t, d, "kv", "put", "ns", strings.Repeat("k", 4097), "v")
	if r.code != 1 || !strings.Contains(r.stderr, "key: 4097 bytes, limit 4096") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "Usage") {
		t.Errorf("usage printed for a runtime error: %q", r.stderr)
	}
}

func TestUnreachableDaemonExitsTwoNamingTheAddress(t *testing.T) {
	t.Parallel()
	addr := filepath.Join(t.TempDir(), "nobody.sock")
	r := cliRun(t, nil, "--addr", addr, "--timeout", "2s", "kv", "get", "ns", "k")
	if r.code != 2 {
		t.Errorf("exit %d, want 2; stderr %q", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, addr) || strings.Contains(r.stderr, "Usage") {
		t.Errorf("stderr = %q, want the address and no usage", r.stderr)
	}
}

func TestAddrFlagWinsOverTheEnvironment(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	bogus := filepath.Join(t.TempDir(), "bogus.sock")
	env := map[string]string{"STATED_ADDR": bogus}
	mustSucceed(t, cliRun(t, env, "--addr", d.SocketPath(), "kv", "put", "ns", "k", "v"))
	r := cliRun(t, env, "--timeout", "2s", "kv", "get", "ns", "k")
	if r.code != 2 || !strings.Contains(r.stderr, bogus) {
		t.Errorf("with STATED_ADDR only: exit %d, stderr %q; want the env address", r.code, r.stderr)
	}
	env["STATED_ADDR"] = d.SocketPath()
	if out := mustSucceed(t, cliRun(t, env, "kv", "get", "ns", "k")); out != "v\n" {
		t.Errorf("via STATED_ADDR: %q", out)
	}
}

func TestCommandLineMistakesExit64WithAHint(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"kv", "get", "ns"},
		{"kv", "frobnicate"},
		{"kv", "add", "ns", "k", "lots"},
		{"kv", "get", "ns", "k", "--kind", "list"},
		{"--no-such-flag"},
	} {
		r := cliRun(t, nil, args...)
		if r.code != 64 || !strings.HasPrefix(r.stderr, "stated: ") {
			t.Errorf("%v: exit %d, stderr %q; want 64 and a message", args, r.code, r.stderr)
		}
	}
}

func TestANonPositiveTimeoutIsACommandLineMistake(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, []string{"--timeout", "0s", "kv", "get", "ns", "k"}, "--timeout 0s is not positive"},
		{nil, []string{"--timeout", "-1s", "kv", "put", "ns", "k", "v"}, "--timeout -1s is not positive"},
		{nil, []string{"--timeout", "-1s", "checkpoint", "trigger", "--wait"}, "--timeout -1s is not positive"},
		{map[string]string{"STATED_TIMEOUT": "-5s"}, []string{"kv", "get", "ns", "k"}, "environment variable STATED_TIMEOUT: --timeout -5s is not positive"},
	} {
		r := cliRun(t, tc.env, append([]string{"--addr", d.SocketPath()}, tc.args...)...)
		if r.code != 64 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v %v: exit %d, stderr %q; want 64 and %q", tc.env, tc.args, r.code, r.stderr, tc.want)
		}
	}
	if r := client(t, d, "kv", "get", "ns", "k"); r.code != 1 {
		t.Errorf("a refused --timeout wrote: the key exists (exit %d, stderr %q)", r.code, r.stderr)
	}
}

func TestRunServesUntilItsContextEndsAndTakesFlagsFromTheEnvironment(t *testing.T) {
	t.Parallel()
	sockDir, err := os.MkdirTemp("", "stated")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	dataDir := t.TempDir()
	sock := filepath.Join(sockDir, "s.sock")
	env := map[string]string{
		"STATED_DATA_DIR":  dataDir,
		"STATED_NODE_ID":   "from-env",
		"STATED_RAFT_ADDR": "127.0.0.1:0",
		"STATED_GRPC_ADDR": "127.0.0.1:7420", // the flag below wins
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut daemontest.Buffer
	done := make(chan int, 1)
	go func() {
		done <- execute(ctx, []string{"run", "--socket", sock, "--grpc-addr", "127.0.0.1:0", "--log-level", "warn"},
			&out, &errOut, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	}()

	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "data dir:") {
		select {
		case code := <-done:
			t.Fatalf("run exited %d early; stderr %q", code, errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("run printed no addresses; stdout %q stderr %q", out.String(), errOut.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, want := range []string{"node from-env serving", "unix socket: " + sock, "tcp:         127.0.0.1:", "data dir:    " + dataDir} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stdout %q lacks %q", out.String(), want)
		}
	}
	if strings.Contains(out.String(), "127.0.0.1:7420") {
		t.Errorf("the environment's grpc address won over the flag: %q", out.String())
	}
	if !strings.Contains(errOut.String(), "checkpoints go to the data dir's disk; losing that disk loses both") ||
		!strings.Contains(out.String(), "checkpoints: file://"+dataDir+"/checkpoints every 10s, keeping 3") ||
		!strings.Contains(out.String(), "warning:     the checkpoint bucket is on the data dir's disk") {
		t.Errorf("no warning that the default checkpoints share the data's disk: stdout %q stderr %q", out.String(), errOut.String())
	}
	if r := cliRun(t, nil, "--addr", sock, "kv", "put", "ns", "k", "v"); r.code != 0 {
		t.Errorf("client against run: exit %d, %q", r.code, r.stderr)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("run exited %d after its context ended; stderr %q", code, errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop")
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

func TestRunRefusesAPortAbove65535BeforeItCreatesTheDataDir(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	r := cliRun(t, nil, "run", "--data-dir", dir, "--grpc-addr", "", "--raft-addr", "127.0.0.1:99999")
	if r.code != 64 || !strings.Contains(r.stderr, `--raft-addr "127.0.0.1:99999"`) {
		t.Errorf("exit %d, stderr %q; want 64 naming --raft-addr", r.code, r.stderr)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the refused run created its data dir (stat: %v)", err)
	}
}

func TestRunRefusesClientFlags(t *testing.T) {
	t.Parallel()
	r := cliRun(t, nil, "run", "--addr", "x.sock")
	if r.code != 64 || !strings.Contains(r.stderr, "--addr is for client commands") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}
