package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
)

// writeConfig writes a config file for the test and returns its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "stated.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// printedLine is the line of `run --print-config` output for key.
func printedLine(t *testing.T, out, key string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, key+": ") {
			return l
		}
	}
	t.Fatalf("no %s in --print-config output:\n%s", key, out)
	return ""
}

func TestConfigFileEnvironmentAndFlagPrecedence(t *testing.T) {
	t.Parallel()
	file := writeConfig(t, `# every kind of flag
node-id: file-node
checkpoint-interval: 20s
join: [10.0.0.1:7420, "10.0.0.2:7420"]
max-message-bytes: 2097152
bootstrap: false
log-format: json
socket-mode: 0660
`)
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want map[string]string // key: the whole printed line
	}{
		{"default without a file", nil, nil, map[string]string{
			"checkpoint-interval": `checkpoint-interval: "10s"  # default`,
			"join":                `join: []  # default`,
			"log-format":          `log-format: "text"  # default`,
			"socket-mode":         `socket-mode: "0600"  # default`,
			"bootstrap":           `bootstrap: true  # default`,
		}},
		{"file over default", map[string]string{"STATED_CONFIG": file}, nil, map[string]string{
			"node-id":             `node-id: "file-node"  # file`,
			"checkpoint-interval": `checkpoint-interval: "20s"  # file`,
			"join":                `join: ["10.0.0.1:7420", "10.0.0.2:7420"]  # file`,
			"max-message-bytes":   `max-message-bytes: 2097152  # file`,
			"bootstrap":           `bootstrap: false  # file`,
			"log-format":          `log-format: "json"  # file`,
			"socket-mode":         `socket-mode: "0660"  # file`,
			"data-dir":            `data-dir: "./stated-data"  # default`,
		}},
		{"env over file", map[string]string{
			"STATED_NODE_ID": "env-node", "STATED_JOIN": "10.0.0.9:7420", "STATED_CHECKPOINT_INTERVAL": "30s", "STATED_SOCKET_MODE": "0640",
		}, []string{"--config", file}, map[string]string{
			"node-id":             `node-id: "env-node"  # env STATED_NODE_ID`,
			"join":                `join: ["10.0.0.9:7420"]  # env STATED_JOIN`,
			"checkpoint-interval": `checkpoint-interval: "30s"  # env STATED_CHECKPOINT_INTERVAL`,
			"socket-mode":         `socket-mode: "0640"  # env STATED_SOCKET_MODE`,
			"max-message-bytes":   `max-message-bytes: 2097152  # file`,
		}},
		{"flag over env and file", map[string]string{
			"STATED_NODE_ID": "env-node", "STATED_CHECKPOINT_INTERVAL": "30s", "STATED_CONFIG": file,
		}, []string{"--node-id", "flag-node", "--checkpoint-interval", "40s", "--join", "10.0.0.7:7420,10.0.0.8:7420", "--log-format", "text"}, map[string]string{
			"node-id":             `node-id: "flag-node"  # flag`,
			"checkpoint-interval": `checkpoint-interval: "40s"  # flag`,
			"join":                `join: ["10.0.0.7:7420", "10.0.0.8:7420"]  # flag`,
			"log-format":          `log-format: "text"  # flag`,
			"bootstrap":           `bootstrap: false  # file`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := cliRun(t, tc.env, append([]string{"run", "--print-config"}, tc.args...)...)
			out := mustSucceed(t, r)
			for key, want := range tc.want {
				if got := printedLine(t, out, key); got != want {
					t.Errorf("got  %s\nwant %s", got, want)
				}
			}
		})
	}
}

// TestConfigFileJoinAsACommaSeparatedString: a list flag takes a YAML
// list or, as on the command line, one comma-separated string.
func TestConfigFileJoinAsACommaSeparatedString(t *testing.T) {
	t.Parallel()
	file := writeConfig(t, `join: "10.0.0.1:7420,10.0.0.2:7420"`)
	out := mustSucceed(t, cliRun(t, nil, "run", "--print-config", "--config", file))
	if got, want := printedLine(t, out, "join"), `join: ["10.0.0.1:7420", "10.0.0.2:7420"]  # file`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// TestConfigFileFlagWinsOverSTATED_CONFIG: --config chooses the file
// over STATED_CONFIG, as any flag wins over its variable.
func TestConfigFileFlagWinsOverSTATED_CONFIG(t *testing.T) {
	t.Parallel()
	fromEnv := writeConfig(t, "node-id: from-env-file\n")
	fromFlag := writeConfig(t, "node-id: from-flag-file\n")
	out := mustSucceed(t, cliRun(t, map[string]string{"STATED_CONFIG": fromEnv}, "run", "--print-config", "--config", fromFlag))
	if got := printedLine(t, out, "node-id"); got != `node-id: "from-flag-file"  # file` {
		t.Errorf("node-id line %q", got)
	}
	if !strings.Contains(out, "# config file: "+fromFlag+"\n") {
		t.Errorf("output does not name the file:\n%s", out)
	}
}

// TestConfigFileMistakesAreUsageErrorsNamingKeyAndValue: each mistake
// exits 64 with a message naming the file, the key and (when it has one)
// the value, and nothing starts: the data dir is not even created.
func TestConfigFileMistakesAreUsageErrorsNamingKeyAndValue(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"unknown key", "node-id: n1\nchekpoint-interval: 5s\n", []string{`unknown key "chekpoint-interval"`}},
		{"a client flag", "addr: x.sock\n", []string{`unknown key "addr"`}},
		{"a config file naming another", "config: other.yaml\n", []string{`unknown key "config"`}},
		{"duration without a unit", "checkpoint-interval: 10\n", []string{`key "checkpoint-interval": value "10"`, "missing unit"}},
		{"not a number", "max-message-bytes: lots\n", []string{`key "max-message-bytes": value "lots"`}},
		{"a YAML 1.1 boolean", "bootstrap: yes\n", []string{`key "bootstrap": value "yes"`}},
		{"a list for one value", "node-id: [a, b]\n", []string{`key "node-id": a list, but --node-id takes one value`}},
		{"a mapping", "join: {a: b}\n", []string{`key "join"`, "mapping"}},
		{"no value", "node-id:\n", []string{`key "node-id" has no value`}},
		{"a duplicate key", "node-id: a\nnode-id: b\n", []string{`"node-id" already set`}},
		{"not a mapping", "- node-id\n", []string{"want a mapping of run flag names to values"}},
		{"not YAML", "node-id: [a\n", []string{"did not find expected"}},
		{"bad socket mode", "socket-mode: 0999\n", []string{`--socket-mode "0999"`}},
		{"socket mode beyond 0777", "socket-mode: \"01777\"\n", []string{`--socket-mode "01777"`}},
		{"bad log format", "log-format: xml\n", []string{`--log-format "xml": want text or json`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := writeConfig(t, tc.text)
			dataDir := filepath.Join(t.TempDir(), "data")
			r := cliRun(t, nil, "run", "--config", file, "--data-dir", dataDir, "--raft-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--socket", shortSocket(t))
			if r.code != exitUsage {
				t.Errorf("exit %d, want %d; stderr %q", r.code, exitUsage, r.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q lacks %q", r.stderr, w)
				}
			}
			// A value the flag takes but run refuses is checked after the
			// file is read, like any other source: the message names the flag.
			checkedByRun := strings.HasPrefix(tc.name, "bad") || strings.HasPrefix(tc.name, "socket")
			if !checkedByRun && !strings.Contains(r.stderr, file) {
				t.Errorf("stderr %q does not name the file %s", r.stderr, file)
			}
			if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
				t.Errorf("the data dir was created (something started): %v", err)
			}
		})
	}
}

func TestConfigFileThatCannotBeReadIsAUsageErrorNamingIt(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	r := cliRun(t, map[string]string{"STATED_CONFIG": missing}, "run", "--print-config")
	if r.code != exitUsage || !strings.Contains(r.stderr, missing) || r.stdout != "" {
		t.Errorf("exit %d, stdout %q, stderr %q; want 64 naming %s", r.code, r.stdout, r.stderr, missing)
	}
}

// TestPrintConfigMasksCredentialsAndReadsBackAsAConfigFile: the bucket
// URL's user information and credential parameters never appear; the
// output, given back as --config, yields the same configuration.
func TestPrintConfigMasksCredentialsAndReadsBackAsAConfigFile(t *testing.T) {
	t.Parallel()
	bucket := "s3://minio:hunter2@ckpt?endpoint=http://127.0.0.1:9000&access_key_id=AKIA123&secret_access_key=SECRET&use_path_style=true"
	env := map[string]string{"STATED_CHECKPOINT_URL": bucket}
	out := mustSucceed(t, cliRun(t, env, "run", "--print-config", "--node-id", "n1", "--kafka-brokers", "127.0.0.1:9092"))
	for _, secret := range []string{"hunter2", "AKIA123", "SECRET"} {
		if strings.Contains(out, secret) {
			t.Errorf("--print-config shows %q:\n%s", secret, out)
		}
	}
	want := `checkpoint-url: "s3://***@ckpt?endpoint=http://127.0.0.1:9000&access_key_id=***&secret_access_key=***&use_path_style=true"  # env STATED_CHECKPOINT_URL`
	if got := printedLine(t, out, "checkpoint-url"); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}

	// Without secrets, the printed configuration is a config file that
	// reproduces itself.
	first := mustSucceed(t, cliRun(t, nil, "run", "--print-config", "--node-id", "n1", "--join", "127.0.0.1:7420", "--grpc-addr", "", "--log-format", "json", "--socket-mode", "0640"))
	file := writeConfig(t, first)
	second := mustSucceed(t, cliRun(t, nil, "run", "--print-config", "--config", file))
	values := func(out string) []string {
		var v []string
		for _, l := range strings.Split(out, "\n") {
			if l != "" && !strings.HasPrefix(l, "#") {
				v = append(v, strings.SplitN(l, "  # ", 2)[0])
			}
		}
		return v
	}
	a, b := values(first), values(second)
	if strings.Join(a, "\n") != strings.Join(b, "\n") || len(a) < 20 {
		t.Errorf("read back, the configuration differs:\n%s\n---\n%s", first, second)
	}
	if got := printedLine(t, second, "grpc-addr"); got != `grpc-addr: ""  # file` {
		t.Errorf("grpc-addr line %q", got)
	}
}

func TestRunRefusesABadSocketModeOrLogFormatNamingTheFlag(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--socket-mode", "rw"}, `--socket-mode "rw"`},
		{[]string{"--socket-mode", "0800"}, `--socket-mode "0800"`},
		{[]string{"--socket-mode", "1777"}, `--socket-mode "1777"`},
		{[]string{"--log-format", "logfmt"}, `--log-format "logfmt": want text or json`},
	} {
		dataDir := filepath.Join(t.TempDir(), "data")
		r := cliRun(t, nil, append([]string{"run", "--data-dir", dataDir}, tc.args...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("%v: exit %d, stderr %q; want 64 and %q", tc.args, r.code, r.stderr, tc.msg)
		}
		if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
			t.Errorf("%v: the data dir was created: %v", tc.args, err)
		}
	}
}

// startRun runs `stated run args...` in-process until the test ends, and
// returns its outputs once it serves and a func that stops it and returns
// its exit code.
func startRun(t *testing.T, env map[string]string, args ...string) (stdout, stderr *daemontest.Buffer, stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr = &daemontest.Buffer{}, &daemontest.Buffer{}
	done := make(chan int, 1)
	go func() {
		done <- execute(ctx, append([]string{"run"}, args...), stdout, stderr, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	}()
	code, stopped := 0, false
	stop = func() int {
		if !stopped {
			cancel()
			select {
			case code = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("run did not stop within 30s of its context ending")
			}
			stopped = true
		}
		return code
	}
	t.Cleanup(func() { stop() })
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stdout.String(), "data dir:") {
		select {
		case code = <-done:
			stopped = true
			t.Fatalf("run exited %d before serving; stderr %q", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("run did not serve within 30s; stdout %q stderr %q", stdout.String(), stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return stdout, stderr, stop
}

// TestRunLogFormatJSONWritesOneJSONObjectPerLineAndWidensTheSocket: a
// real node started by `run` from a config file logs JSON, and its socket
// has the file's mode.
func TestRunLogFormatJSONWritesOneJSONObjectPerLineAndWidensTheSocket(t *testing.T) {
	t.Parallel()
	sock := shortSocket(t)
	file := writeConfig(t, "log-format: json\nsocket-mode: 0660\nnode-id: json-node\nraft-addr: 127.0.0.1:0\ngrpc-addr: 127.0.0.1:0\n")
	_, stderr, stop := startRun(t, nil, "--config", file, "--data-dir", t.TempDir(), "--socket", sock)
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want 0660", fi.Mode().Perm())
	}
	if r := cliRun(t, nil, "--addr", sock, "kv", "put", "ns", "k", "v"); r.code != 0 {
		t.Errorf("client against run: exit %d, %q", r.code, r.stderr)
	}
	if code := stop(); code != 0 {
		t.Fatalf("run exited %d; stderr %q", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	msgs := map[string]bool{}
	for _, l := range lines {
		var rec struct {
			Time  time.Time `json:"time"`
			Level string    `json:"level"`
			Msg   string    `json:"msg"`
		}
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec.Level == "" || rec.Time.IsZero() {
			t.Errorf("not a JSON log record with time, level and msg: %q (%v)", l, err)
			continue
		}
		msgs[rec.Msg] = true
	}
	for _, want := range []string{"starting; waiting for a raft leader", "stopped"} {
		if !msgs[want] {
			t.Errorf("no JSON record %q in %q", want, stderr.String())
		}
	}
}

// TestRunDefaultSocketIsOwnerOnly: without --socket-mode the socket is
// 0600, whatever the umask.
func TestRunDefaultSocketIsOwnerOnly(t *testing.T) {
	t.Parallel()
	sock := shortSocket(t)
	startRun(t, nil, "--data-dir", t.TempDir(), "--socket", sock, "--raft-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--log-level", "warn")
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", fi.Mode().Perm())
	}
}

// TestRunNeverPrintsBucketCredentials: a bucket URL the driver refuses
// fails the start with a message that names the URL, masked.
func TestRunNeverPrintsBucketCredentials(t *testing.T) {
	t.Parallel()
	bucket := "s3://AKIA:hunter2@ckpt?region=us-east-1&secret_access_key=hunter2&endpoint=http://u:hunter2@127.0.0.1:1"
	for _, format := range []string{"text", "json"} {
		r := cliRun(t, nil, "run", "--log-format", format, "--data-dir", t.TempDir(), "--socket", shortSocket(t),
			"--raft-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--checkpoint-url", bucket, "--log-level", "debug")
		if r.code != exitFailed {
			t.Errorf("%s: exit %d, want 1; stderr %q", format, r.code, r.stderr)
		}
		if out := r.stdout + r.stderr; strings.Contains(out, "hunter2") || !strings.Contains(r.stderr, "s3://***@ckpt") {
			t.Errorf("%s: output holds the secret or no masked URL:\nstdout %q\nstderr %q", format, r.stdout, r.stderr)
		}
	}
}

func TestShowValueMasksSecretKeysAndURLCredentials(t *testing.T) {
	for _, tc := range []struct {
		key  string
		v    configValue
		want string
	}{
		{"tls-key", configValue{text: "hunter2"}, `"***"`},
		{"auth-token", configValue{list: []string{"a", "b"}, isList: true}, `"***"`},
		{"checkpoint-url", configValue{text: "s3://u:hunter2@b"}, `"s3://***@b"`},
		{"join", configValue{list: []string{"a:1", "b:2"}, isList: true}, `["a:1", "b:2"]`},
	} {
		if got := showValue(tc.key, tc.v); got != tc.want {
			t.Errorf("showValue(%s) = %s, want %s", tc.key, got, tc.want)
		}
	}
}

func TestValueErrorsNeverQuoteASecret(t *testing.T) {
	err := valueError("tls-key", configValue{text: "hunter2"}, errors.New(`parsing "hunter2": invalid`))
	if strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "--tls-key") {
		t.Errorf("valueError = %q", err)
	}
	err = valueError("checkpoint-interval", configValue{text: "10"}, errors.New("missing unit"))
	if got, want := err.Error(), `value "10": missing unit`; got != want {
		t.Errorf("valueError = %q, want %q", got, want)
	}
}

func TestEnvironmentValueErrorNamesTheVariableAndValue(t *testing.T) {
	t.Parallel()
	r := cliRun(t, map[string]string{"STATED_CHECKPOINT_INTERVAL": "soon"}, "run", "--print-config")
	if r.code != exitUsage || !strings.Contains(r.stderr, `STATED_CHECKPOINT_INTERVAL: value "soon"`) {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

// Every flag a config file may hold also comes from its STATED_ variable,
// as the README's Configuration says of every flag of stated run:
// --session-idle-timeout was once left out, so STATED_SESSION_IDLE_TIMEOUT
// did nothing.
func TestEveryRunFlagComesFromItsEnvironmentVariable(t *testing.T) {
	t.Parallel()
	c := &cli{env: func(string) (string, bool) { return "", false }}
	run := c.runCommand()
	for _, f := range configFlags(run.LocalFlags()) {
		value := f.DefValue
		if isSlice(f) {
			value = "127.0.0.1:1"
		}
		if value == "" {
			// An empty variable counts as unset, and a value of its own
			// would have to pass the flag's checks: the binding is what
			// is checked.
			if names := f.Annotations[envAnnotation]; len(names) == 0 || names[0] != envName(f.Name) {
				t.Errorf("--%s is bound to %v, want %s", f.Name, names, envName(f.Name))
			}
			continue
		}
		env := map[string]string{envName(f.Name): value}
		r := cliRun(t, env, "run", "--print-config")
		if r.code != exitOK {
			t.Errorf("%s=%q: exit %d, stderr %q", envName(f.Name), value, r.code, r.stderr)
			continue
		}
		if got, want := printedLine(t, r.stdout, f.Name), "# env "+envName(f.Name); !strings.HasSuffix(got, want) {
			t.Errorf("%s=%q: %q, want it to end in %q", envName(f.Name), value, got, want)
		}
	}
}

// A value of a run flag that stated refuses is a usage error (exit 64,
// as doc.go and the README's Configuration say), wherever it came from,
// and creates no data dir: an address without a port, a duration or size
// below its minimum were refused by the daemon's start with exit 1.
func TestRunRefusesAValueTheDaemonRefusesAsAUsageError(t *testing.T) {
	t.Parallel()
	file := func(text string) string { return writeConfig(t, text) }
	// The message names the flag, whichever source set it (README,
	// Configuration).
	checkRefusedNamingSource(t, []sourceCase{
		{name: "raft-addr flag", args: []string{"--raft-addr", "nope"}, want: `--raft-addr "nope"`},
		{name: "grpc-addr env", env: map[string]string{"STATED_GRPC_ADDR": "nope:"}, args: []string{"--raft-addr", "127.0.0.1:0"}, want: `--grpc-addr "nope:"`},
		{name: "grpc-addr beyond loopback", args: []string{"--grpc-addr", "10.1.2.3:7420", "--raft-addr", "127.0.0.1:0"}, want: `--grpc-addr "10.1.2.3:7420" listens beyond this machine with neither TLS nor tokens: anyone who reaches it may read and change every namespace; set --tls-cert or --token-file, or --insecure`},
		{name: "join file", args: []string{"--config", file("join: nope\n"), "--raft-addr", "127.0.0.1:0"}, want: `--join "nope"`},
		{name: "session-idle-timeout file", args: []string{"--config", file("session-idle-timeout: 10ms\n"), "--raft-addr", "127.0.0.1:0"}, want: "--session-idle-timeout 10ms is below the 1s minimum"},
		{name: "session-idle-timeout flag", args: []string{"--session-idle-timeout", "500ms", "--raft-addr", "127.0.0.1:0"}, want: "--session-idle-timeout 500ms is below the 1s minimum"},
		{name: "max-message-bytes env", env: map[string]string{"STATED_MAX_MESSAGE_BYTES": "10"}, args: []string{"--raft-addr", "127.0.0.1:0"}, want: "--max-message-bytes 10"},
		{name: "kafka-brokers flag", args: []string{"--kafka-brokers", "k", "--raft-addr", "127.0.0.1:0"}, want: `--kafka-brokers "k"`},
	}, "stated: run: daemon: config: ")
}

// TestEveryConfigFieldNamedInRefusalsHasItsFlag: the refusals of
// stated run name the flag for daemon.Config's field; every field the
// table maps has that flag, so no message names a flag that is not there.
func TestEveryConfigFieldNamedInRefusalsHasItsFlag(t *testing.T) {
	run := (&cli{}).runCommand()
	for field, flag := range fieldFlags {
		if run.Flags().Lookup(flag) == nil {
			t.Errorf("daemon.Config.%s maps to --%s, which stated run does not have", field, flag)
		}
		if _, ok := reflect.TypeFor[daemon.Config]().FieldByName(field); !ok {
			t.Errorf("%s is not a field of daemon.Config", field)
		}
	}
}

// TestAnEmptyEnvironmentVariableIsUnset: README, Configuration: an empty
// variable leaves the config file's value in force (STATED_TOKEN_FILE=
// turned authorization off where the file set a token file).
func TestAnEmptyEnvironmentVariableIsUnset(t *testing.T) {
	t.Parallel()
	file := writeConfig(t, "token-file: /etc/stated/tokens.yaml\n")
	r := cliRun(t, map[string]string{"STATED_TOKEN_FILE": ""}, "run", "--print-config", "--config", file)
	if got := printedLine(t, r.stdout, "token-file"); r.code != exitOK || !strings.Contains(got, "# file") {
		t.Fatalf("token-file with STATED_TOKEN_FILE empty: exit %d, %q; want the file's", r.code, got)
	}
	checkPrintedWithSource(t, "checkpoint-interval", []sourceCase{
		{"empty env", map[string]string{"STATED_CHECKPOINT_INTERVAL": ""}, nil, `checkpoint-interval: "10s"  # default`},
	})
}
