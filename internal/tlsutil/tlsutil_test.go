package tlsutil_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/statedhq/stated/internal/tlsutil"
	"github.com/statedhq/stated/internal/tlsutil/tlstest"
)

func files(l tlstest.Leaf, ca string) tlsutil.Files {
	return tlsutil.Files{Cert: l.CertFile, Key: l.KeyFile, CA: ca, CertFlag: "tls-cert", KeyFlag: "tls-key", CAFlag: "tls-client-ca"}
}

func TestNewRefusesBadCertificatesNamingTheFlag(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "ca")
	good := ca.Issue(t, dir, "good", 2, tlstest.Options{})
	other := ca.Issue(t, dir, "other", 3, tlstest.Options{})
	expired := ca.Issue(t, dir, "expired", 4, tlstest.Options{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	future := ca.Issue(t, dir, "future", 5, tlstest.Options{NotBefore: time.Now().Add(time.Hour)})
	notPEM := dir + "/garbage.pem"
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		files tlsutil.Files
		want  string
	}{
		{"key of another certificate", tlsutil.Files{Cert: good.CertFile, Key: other.KeyFile, CertFlag: "tls-cert", KeyFlag: "tls-key"}, "--tls-cert"},
		{"expired", files(expired, ""), "expired"},
		{"not yet valid", files(future, ""), "not valid before"},
		{"unreadable cert", tlsutil.Files{Cert: dir + "/missing.pem", Key: good.KeyFile, CertFlag: "tls-cert", KeyFlag: "tls-key"}, "--tls-cert"},
		{"unreadable key", tlsutil.Files{Cert: good.CertFile, Key: dir + "/missing.pem", CertFlag: "tls-cert", KeyFlag: "tls-key"}, "--tls-key"},
		{"unreadable CA", files(good, dir+"/missing-ca.pem"), "--tls-client-ca"},
		{"CA without PEM", files(good, notPEM), "--tls-client-ca"},
		{"cert without key", tlsutil.Files{Cert: good.CertFile, CertFlag: "tls-cert", KeyFlag: "tls-key"}, "--tls-cert is given without --tls-key"},
		{"key without cert", tlsutil.Files{Key: good.KeyFile, CertFlag: "tls-cert", KeyFlag: "tls-key"}, "--tls-key is given without --tls-cert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tlsutil.New(tc.files)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestReloadSwapsAndKeepsTheOldOnBadInput(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "ca")
	first := ca.Issue(t, dir, "node", 10, tlstest.Options{})
	r, err := tlsutil.New(files(first, ca.File))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Leaf().SerialNumber.Int64(); got != 10 {
		t.Fatalf("serial %d, want 10", got)
	}
	ca.Issue(t, dir, "node", 11, tlstest.Options{})
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := r.Leaf().SerialNumber.Int64(); got != 11 {
		t.Fatalf("after reload: serial %d, want 11", got)
	}
	// A certificate whose key is another's: refused, 11 stays.
	other := ca.Issue(t, dir, "other", 12, tlstest.Options{})
	data, err := os.ReadFile(other.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(first.CertFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err == nil || !strings.Contains(err.Error(), "--tls-cert") {
		t.Fatalf("Reload of a mismatched pair: %v, want an error naming --tls-cert", err)
	}
	if got := r.Leaf().SerialNumber.Int64(); got != 11 {
		t.Fatalf("after a refused reload: serial %d, want 11 kept", got)
	}
	cert, err := r.GetCertificate(nil)
	if err != nil || cert.Leaf.SerialNumber.Int64() != 11 {
		t.Fatalf("GetCertificate after a refused reload: %v %v", cert, err)
	}
}
