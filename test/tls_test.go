package test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/internal/tlsutil/tlstest"
	stated "github.com/statedhq/stated/sdk/go"
)

// tlsSerial opens a new TLS connection to addr and returns the serial of
// the server's certificate.
func tlsSerial(addr string, cfg *tls.Config) (int64, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
}

// waitFor polls cond every 20ms until it holds or 20s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunServesTLSAndReloadsItsCertificateOnSIGHUP(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "ca")
	leaf := ca.Issue(t, dir, "server", 10, tlstest.Options{})
	n := newNode(t)
	n.args = []string{"--tls-cert", leaf.CertFile, "--tls-key", leaf.KeyFile}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	n.start(ctx)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	clientTLS := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}

	// The SDK with WithTLS commits and reads over TLS.
	c, err := stated.Dial(ctx, n.grpcAddr, stated.WithTLS(clientTLS), stated.WithBlock())
	if err != nil {
		t.Fatalf("SDK over TLS: %v", err)
	}
	defer c.Close()
	if _, err := c.Txn().Put("ns", []byte("k"), []byte("over-tls")).Commit(ctx); err != nil {
		t.Fatalf("Put over TLS: %v", err)
	}

	// The CLI with --tls-ca (and STATED_TLS_CA) reads it; without, it cannot.
	bin := statedBinary(t)
	out, err := exec.Command(bin, "kv", "get", "ns", "k", "--addr", n.grpcAddr, "--tls-ca", ca.File).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "over-tls") {
		t.Fatalf("stated kv get --tls-ca: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "kv", "get", "ns", "k", "--addr", n.grpcAddr)
	cmd.Env = append(os.Environ(), "STATED_TLS_CA="+ca.File)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "over-tls") {
		t.Fatalf("stated kv get with STATED_TLS_CA: %v\n%s", err, out)
	}
	// stated status reaches each member over TLS too.
	out, err = exec.Command(bin, "status", "--json", "--addr", n.grpcAddr, "--tls-ca", ca.File).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"reachable":true`) {
		t.Fatalf("stated status --tls-ca: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "kv", "get", "ns", "k", "--addr", n.grpcAddr, "--timeout", "2s").CombinedOutput(); err == nil {
		t.Fatalf("a plaintext stated kv get succeeded on the TLS port:\n%s", out)
	}

	if got, err := tlsSerial(n.grpcAddr, clientTLS); err != nil || got != 10 {
		t.Fatalf("serial %d (%v), want 10", got, err)
	}
	ca.Issue(t, dir, "server", 11, tlstest.Options{})
	n.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "new connections see the reloaded certificate (serial 11)", func() bool {
		got, err := tlsSerial(n.grpcAddr, clientTLS)
		return err == nil && got == 11
	})

	// A certificate that does not match the key: logged, 11 kept.
	other := ca.Issue(t, dir, "other", 12, tlstest.Options{})
	data, err := os.ReadFile(other.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(leaf.CertFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	n.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the refused reload is logged", func() bool {
		return strings.Contains(n.logs.String(), "certificate reload refused")
	})
	if !strings.Contains(n.logs.String(), "--tls-cert") {
		t.Errorf("the refused reload's log line does not name --tls-cert:\n%s", n.logs)
	}
	if got, err := tlsSerial(n.grpcAddr, clientTLS); err != nil || got != 11 {
		t.Fatalf("after a refused reload: serial %d (%v), want 11", got, err)
	}
	if _, _, err := c.Get(ctx, "ns", []byte("k")); err != nil {
		t.Fatalf("Get after reloads: %v", err)
	}
}

func TestRunRefusesBadTLSFlagsNamingTheFlag(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "ca")
	good := ca.Issue(t, dir, "good", 2, tlstest.Options{})
	other := ca.Issue(t, dir, "other", 3, tlstest.Options{})
	expired := ca.Issue(t, dir, "expired", 4, tlstest.Options{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	bin := statedBinary(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"certificate without key", []string{"--tls-cert", good.CertFile}, 64, "--tls-cert is given without --tls-key"},
		{"peer certificate without CA", []string{"--tls-cert", good.CertFile, "--tls-key", good.KeyFile, "--peer-tls-cert", good.CertFile, "--peer-tls-key", good.KeyFile}, 64, "--peer-tls-ca"},
		{"key of another certificate", []string{"--tls-cert", good.CertFile, "--tls-key", other.KeyFile}, 1, "--tls-cert"},
		{"expired certificate", []string{"--tls-cert", expired.CertFile, "--tls-key", expired.KeyFile}, 1, "expired"},
		{"unreadable client CA", []string{"--tls-cert", good.CertFile, "--tls-key", good.KeyFile, "--tls-client-ca", dir + "/missing.pem"}, 1, "--tls-client-ca"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sockDir, err := os.MkdirTemp("", "stated")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(sockDir)
			args := append([]string{"run", "--data-dir", t.TempDir(), "--socket", sockDir + "/s.sock", "--grpc-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0"}, tc.args...)
			cmd := daemontest.DieWithParent(exec.Command(bin, args...))
			out, err := cmd.CombinedOutput()
			if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != tc.code {
				t.Fatalf("exit %v (%v), want %d:\n%s", cmd.ProcessState, err, tc.code, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("output does not contain %q:\n%s", tc.want, out)
			}
		})
	}
}
