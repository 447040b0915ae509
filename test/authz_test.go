package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon/daemontest"
	stated "github.com/statedhq/stated/sdk/go"
)

func sha256Hex(token string) string {
	s := sha256.Sum256([]byte(token))
	return hex.EncodeToString(s[:])
}

func TestRunWithATokenFileServesTheSDKAndCLIByTokenAndReloadsOnSIGHUP(t *testing.T) {
	t.Parallel()
	tokens := filepath.Join(t.TempDir(), "tokens.yaml")
	writeTokens := func(s string) {
		t.Helper()
		if err := os.WriteFile(tokens, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeTokens(fmt.Sprintf(`
- {name: svc, sha256: %s, namespaces: [ns], operations: [read, write]}
- {name: reader, sha256: %s, namespaces: [ns], operations: [read]}
- {name: ops, sha256: %s, namespaces: ["*"], operations: [admin]}
`, sha256Hex("svc-tok"), sha256Hex("reader-tok"), sha256Hex("ops-tok")))
	n := newNode(t)
	n.args = []string{"--token-file", tokens}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	n.start(ctx)

	// The SDK with WithToken commits; without a token, or with a token
	// that may only read, it cannot.
	c, err := stated.Dial(ctx, n.grpcAddr, stated.WithToken("svc-tok"), stated.WithBlock())
	if err != nil {
		t.Fatalf("SDK with WithToken: %v", err)
	}
	defer c.Close()
	if _, err := c.Txn().Put("ns", []byte("k"), []byte("granted")).Commit(ctx); err != nil {
		t.Fatalf("Put with the svc token: %v", err)
	}
	for _, tc := range []struct {
		name string
		opts []stated.Option
		want string
	}{
		{"no token", nil, "Unauthenticated"},
		{"read-only token", []stated.Option{stated.WithToken("reader-tok")}, "PermissionDenied"},
	} {
		rc, err := stated.Dial(ctx, n.grpcAddr, append(tc.opts, stated.WithLazySession())...)
		if err != nil {
			t.Fatal(err)
		}
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = rc.Txn().Put("ns", []byte("k"), []byte("refused")).Commit(cctx)
		ccancel()
		rc.Close()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("SDK Put with %s: %v, want %s", tc.name, err, tc.want)
		}
	}

	bin := statedBinary(t)
	kvGet := func(token string, env ...string) (string, error) {
		args := []string{"kv", "get", "ns", "k", "--addr", n.socket, "--timeout", "10s"}
		if token != "" {
			args = append(args, "--token", token)
		}
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := kvGet("reader-tok"); err != nil || !strings.Contains(out, "granted") {
		t.Fatalf("stated kv get --token: %v\n%s", err, out)
	}
	if out, err := kvGet("", "STATED_TOKEN=reader-tok"); err != nil || !strings.Contains(out, "granted") {
		t.Fatalf("stated kv get with STATED_TOKEN: %v\n%s", err, out)
	}
	if out, err := kvGet(""); err == nil || !strings.Contains(out, "bearer token") {
		t.Fatalf("stated kv get without a token: %v, want a refusal about the bearer token\n%s", err, out)
	}

	// A checkpoint needs admin on "*": the ops token takes one, the
	// reader may not.
	trigger := func(token string) (string, error) {
		out, err := exec.Command(bin, "checkpoint", "trigger", "--wait", "--addr", n.socket, "--timeout", "30s", "--token", token).CombinedOutput()
		return string(out), err
	}
	if out, err := trigger("ops-tok"); err != nil {
		t.Fatalf("stated checkpoint trigger with an admin token: %v\n%s", err, out)
	}
	if out, err := trigger("reader-tok"); err == nil || !strings.Contains(out, "may not admin") {
		t.Fatalf("stated checkpoint trigger with a read token: %v, want a refusal naming admin\n%s", err, out)
	}

	// SIGHUP: a new file takes effect for new calls.
	writeTokens(fmt.Sprintf("- {name: next, sha256: %s, namespaces: [\"*\"], operations: [read]}\n", sha256Hex("next-tok")))
	n.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the reloaded token file grants next-tok", func() bool {
		out, err := kvGet("next-tok")
		return err == nil && strings.Contains(out, "granted")
	})
	if out, err := kvGet("reader-tok"); err == nil {
		t.Fatalf("a token the reloaded file dropped still reads:\n%s", out)
	}
	// A malformed file is refused, logged, and the old grants stay.
	writeTokens("- {name: next, sha256: " + sha256Hex("next-tok") + ", namespaces: [\"*\"], operations: [reed]}\n")
	n.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the refused reload is logged", func() bool {
		return strings.Contains(n.logs.String(), "token file reload refused")
	})
	if !strings.Contains(n.logs.String(), `operations[0] \"reed\"`) && !strings.Contains(n.logs.String(), `operations[0] "reed"`) {
		t.Errorf("the refused reload's log does not name the field:\n%s", n.logs)
	}
	if out, err := kvGet("next-tok"); err != nil || !strings.Contains(out, "granted") {
		t.Fatalf("after a refused reload the kept grant: %v\n%s", err, out)
	}
}

func TestRunRefusesAMalformedTokenFileAndOpenNonLoopbackTCP(t *testing.T) {
	t.Parallel()
	bad := filepath.Join(t.TempDir(), "tokens.yaml")
	if err := os.WriteFile(bad, []byte("- {name: a, sha256: 00, namespaces: [ns], operations: [read]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := statedBinary(t)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"malformed token file", []string{"--grpc-addr", "127.0.0.1:0", "--token-file", bad}, []string{bad, `grant 0 ("a"): sha256`}},
		{"every interface, plaintext, no tokens", []string{"--grpc-addr", "0.0.0.0:0"}, []string{"--token-file", "--tls-cert", "--insecure"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sockDir, err := os.MkdirTemp("", "stated")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(sockDir)
			args := append([]string{"run", "--data-dir", t.TempDir(), "--socket", sockDir + "/s.sock", "--raft-addr", "127.0.0.1:0"}, tc.args...)
			cmd := daemontest.DieWithParent(exec.Command(bin, args...))
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("stated run %v started:\n%s", tc.args, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Fatalf("output does not contain %q:\n%s", w, out)
				}
			}
			if _, err := os.Stat(sockDir + "/s.sock"); !os.IsNotExist(err) {
				t.Fatalf("the refused start left its socket: %v", err)
			}
		})
	}
}
