package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/internal/tlsutil/tlstest"
	stated "github.com/statedhq/stated/sdk/go"
)

// runCLI runs the stated binary with args and extra environment, bounded
// by 60 s, and returns its combined output.
func runCLI(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, statedBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestCLIPresentsAClientCertificateToADaemonThatRequiresOne(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "ca")
	server := ca.Issue(t, dir, "server", 2, tlstest.Options{})
	client := ca.Issue(t, dir, "client", 3, tlstest.Options{})
	otherCA := tlstest.NewCA(t, dir, "other-ca")
	stranger := otherCA.Issue(t, dir, "stranger", 4, tlstest.Options{})
	expired := ca.Issue(t, dir, "expired", 5, tlstest.Options{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})

	n := newNode(t)
	n.args = []string{"--tls-cert", server.CertFile, "--tls-key", server.KeyFile, "--tls-client-ca", ca.File}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	n.start(ctx)
	tcp := []string{"--addr", n.grpcAddr, "--tls-ca", ca.File, "--timeout", "5s"}

	// Without a client certificate the daemon refuses the handshake.
	if out, err := runCLI(t, nil, append([]string{"kv", "put", "ns", "k", "v0"}, tcp...)...); err == nil {
		t.Fatalf("stated kv put without a client certificate succeeded:\n%s", out)
	}
	// A certificate from another CA is refused too.
	if out, err := runCLI(t, nil, append([]string{"kv", "put", "ns", "k", "v0", "--tls-cert", stranger.CertFile, "--tls-key", stranger.KeyFile}, tcp...)...); err == nil {
		t.Fatalf("stated kv put with another CA's certificate succeeded:\n%s", out)
	}

	// With --tls-cert/--tls-key it writes, and with STATED_TLS_CERT and
	// STATED_TLS_KEY it reads, the cluster commands included.
	if out, err := runCLI(t, nil, append([]string{"kv", "put", "ns", "k", "mutual", "--tls-cert", client.CertFile, "--tls-key", client.KeyFile}, tcp...)...); err != nil {
		t.Fatalf("stated kv put --tls-cert: %v\n%s", err, out)
	}
	env := []string{"STATED_TLS_CERT=" + client.CertFile, "STATED_TLS_KEY=" + client.KeyFile}
	if out, err := runCLI(t, env, append([]string{"kv", "get", "ns", "k"}, tcp...)...); err != nil || !strings.Contains(out, "mutual") {
		t.Fatalf("stated kv get with STATED_TLS_CERT/STATED_TLS_KEY: %v\n%s", err, out)
	}
	if out, err := runCLI(t, env, append([]string{"cluster", "members"}, tcp...)...); err != nil || !strings.Contains(out, "n1") {
		t.Fatalf("stated cluster members with a client certificate: %v\n%s", err, out)
	}
	if out, err := runCLI(t, env, append([]string{"status", "--json"}, tcp...)...); err != nil || !strings.Contains(out, `"reachable":true`) {
		t.Fatalf("stated status with a client certificate: %v\n%s", err, out)
	}

	// Bad pairs are usage errors (exit 64) naming the flag, before any
	// connection.
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"cert without key", []string{"--tls-cert", client.CertFile}, "--tls-cert is given without --tls-key"},
		{"key without cert", []string{"--tls-key", client.KeyFile}, "--tls-key is given without --tls-cert"},
		{"key of another certificate", []string{"--tls-cert", client.CertFile, "--tls-key", server.KeyFile}, "--tls-cert " + client.CertFile + " and --tls-key " + server.KeyFile},
		{"expired certificate", []string{"--tls-cert", expired.CertFile, "--tls-key", expired.KeyFile}, "--tls-cert " + expired.CertFile + ": certificate expired"},
		{"missing file", []string{"--tls-cert", filepath.Join(dir, "nope.pem"), "--tls-key", client.KeyFile}, "--tls-cert: open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runCLI(t, nil, append(append([]string{"kv", "get", "ns", "k"}, tcp...), tc.args...)...)
			var ee *exec.ExitError
			if err == nil || !errorAs(err, &ee) || ee.ExitCode() != 64 || !strings.Contains(out, tc.want) {
				t.Fatalf("stated kv get %v: %v, want exit 64 naming %q\n%s", tc.args, err, tc.want, out)
			}
		})
	}
}

// errorAs is errors.As for *exec.ExitError without importing errors in
// every helper.
func errorAs(err error, target **exec.ExitError) bool {
	ee, ok := err.(*exec.ExitError)
	if ok {
		*target = ee
	}
	return ok
}

func TestReadAndAdminTokensRunTheirCommandsWithoutASession(t *testing.T) {
	t.Parallel()
	tokens := filepath.Join(t.TempDir(), "tokens.yaml")
	if err := os.WriteFile(tokens, []byte(fmt.Sprintf(`
- {name: svc, sha256: %s, namespaces: [ns], operations: [read, write]}
- {name: reader, sha256: %s, namespaces: ["ns", "kafka-group/*"], operations: [read]}
- {name: ops, sha256: %s, namespaces: ["*"], operations: [admin]}
`, sha256Hex("svc-tok"), sha256Hex("reader-tok"), sha256Hex("ops-tok"))), 0o600); err != nil {
		t.Fatal(err)
	}
	metrics := freeAddr(t)
	n := newNode(t)
	n.args = []string{"--token-file", tokens, "--metrics-addr", metrics,
		"--checkpoint-url", "file://" + t.TempDir(), "--checkpoint-interval", "1h"}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	n.start(ctx)

	w, err := stated.Dial(ctx, n.socket, stated.WithToken("svc-tok"), stated.WithBlock())
	if err != nil {
		t.Fatalf("a writer's Dial: %v", err)
	}
	defer w.Close()
	if w.SessionID() == 0 {
		t.Fatal("a writer's Dial with WithBlock opened no session")
	}
	if _, err := w.Txn().Put("ns", []byte("k"), []byte("written")).Commit(ctx); err != nil {
		t.Fatalf("writer Put: %v", err)
	}

	// The SDK: a read-only token dials, even WithBlock (which waits for
	// the session), and reads; its commit is refused as the token says.
	for _, tc := range []struct {
		name string
		opts []stated.Option
	}{
		{"WithBlock", []stated.Option{stated.WithBlock()}},
		{"in the background", nil},
	} {
		t.Run("reader dials "+tc.name, func(t *testing.T) {
			r, err := stated.Dial(ctx, n.socket, append(tc.opts, stated.WithToken("reader-tok"))...)
			if err != nil {
				t.Fatalf("a read-only token's Dial: %v", err)
			}
			defer r.Close()
			v, ok, err := r.Get(ctx, "ns", []byte("k"))
			if err != nil || !ok || string(v.Value) != "written" {
				t.Fatalf("reader Get: %q %v %v", v.Value, ok, err)
			}
			if id := r.SessionID(); id != 0 {
				t.Fatalf("a read-only Client holds session %d", id)
			}
			cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
			defer ccancel()
			_, err = r.Txn().Put("ns", []byte("k"), []byte("refused")).Commit(cctx)
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "write") {
				t.Fatalf("reader Put: %v, want PermissionDenied naming write", err)
			}
		})
	}
	// The writer, dialled before, is not disturbed and its session holds.
	if _, err := w.Txn().Put("ns", []byte("k2"), []byte("still")).Commit(ctx); err != nil {
		t.Fatalf("writer Put after the readers: %v", err)
	}

	// The CLI: every command each token should run, runs; none of them
	// asks for a session.
	deniedOpens := func() float64 {
		m := sample(scrape(t, metrics), "stated_grpc_requests_total", "method", "stated.v1.State/OpenSession", "code", "PermissionDenied")
		if m == nil {
			return 0
		}
		return m.GetCounter().GetValue()
	}
	// The readers' refused opens are counted: the count below can see one.
	before := deniedOpens()
	if before < 2 {
		t.Fatalf("%v refused session opens counted after two read-only Clients committed, want 2 or more", before)
	}
	sock := []string{"--addr", n.socket, "--timeout", "30s"}
	for _, tc := range []struct {
		token string
		args  []string
		want  string
	}{
		{"reader-tok", []string{"kv", "get", "ns", "k"}, "written"},
		{"reader-tok", []string{"kv", "scan", "ns"}, "k2"},
		{"reader-tok", []string{"offsets", "get", "g"}, ""},
		{"reader-tok", []string{"cluster", "members"}, "n1"},
		{"reader-tok", []string{"status"}, "n1"},
		{"ops-tok", []string{"checkpoint", "trigger", "--wait"}, "checkpoint 1"},
		{"reader-tok", []string{"checkpoint", "list"}, "1"},
		{"reader-tok", []string{"checkpoint", "show", "latest"}, "1"},
		{"reader-tok", []string{"recovery", "--json"}, `"intact":true`},
		{"ops-tok", []string{"recovery"}, "intact"},
		{"ops-tok", []string{"checkpoint", "savepoint", "before-upgrade"}, "before-upgrade"},
	} {
		out, err := runCLI(t, []string{"STATED_TOKEN=" + tc.token}, append(tc.args, sock...)...)
		if err != nil || !strings.Contains(out, tc.want) {
			t.Fatalf("stated %s with %s: %v, want %q\n%s", strings.Join(tc.args, " "), tc.token, err, tc.want, out)
		}
	}
	if after := deniedOpens(); after != before {
		t.Errorf("the CLI asked for %v sessions its tokens may not open", after-before)
	}
	if strings.Contains(n.logs.String(), "level=ERROR") {
		t.Errorf("the daemon logged errors for read-only and admin clients:\n%s", n.logs)
	}
}

func TestRecoveryReportSaysWhetherACheckpointIsEncryptedNeverTheKey(t *testing.T) {
	t.Parallel()
	const key = "base64key://AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	keyText := strings.TrimPrefix(key, "base64key://")
	bucket := "file://" + t.TempDir()
	n := newNode(t)
	n.args = []string{"--checkpoint-url", bucket, "--checkpoint-interval", "1h", "--checkpoint-key-url", key}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	n.start(ctx)
	sock := []string{"--addr", n.socket, "--timeout", "30s"}
	if out, err := runCLI(t, nil, append([]string{"kv", "put", "ns", "k", "v"}, sock...)...); err != nil {
		t.Fatalf("stated kv put: %v\n%s", err, out)
	}
	if out, err := runCLI(t, nil, append([]string{"checkpoint", "trigger", "--wait"}, sock...)...); err != nil {
		t.Fatalf("stated checkpoint trigger: %v\n%s", err, out)
	}

	// Through the daemon (the Recovery RPC) and from the bucket, without
	// the key: JSON and text say encrypted, with the keeper's scheme.
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"the daemon", sock},
		{"the bucket", []string{"--from", bucket}},
	} {
		t.Run("from "+tc.name, func(t *testing.T) {
			out, err := runCLI(t, []string{"STATED_CHECKPOINT_KEY_URL="}, append([]string{"recovery", "--json"}, tc.args...)...)
			if err != nil || !strings.Contains(out, `"encrypted":true`) || !strings.Contains(out, `"encryption_keeper":"base64key"`) || !strings.Contains(out, `"intact":true`) {
				t.Fatalf("stated recovery --json: %v, want encrypted with keeper base64key and intact\n%s", err, out)
			}
			text, err := runCLI(t, nil, append([]string{"recovery"}, tc.args...)...)
			if err != nil || !strings.Contains(text, "encrypted (keeper base64key)") || !strings.Contains(text, "restoring needs --checkpoint-key-url") {
				t.Fatalf("stated recovery: %v, want the encryption line\n%s", err, text)
			}
			if strings.Contains(out+text, keyText) {
				t.Fatalf("the recovery report shows the key:\n%s\n%s", out, text)
			}
		})
	}
}
