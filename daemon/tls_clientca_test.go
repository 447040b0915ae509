package daemon_test

import (
	"crypto/tls"
	"testing"

	"google.golang.org/grpc/credentials"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/internal/tlsutil/tlstest"
)

// TestTheClientCertificateCheckAdmitsTheClientAndPeerCAsOnly: README,
// TLS: with --tls-client-ca, clients present a certificate issued by it,
// or, with peer TLS on, by --peer-tls-ca (nodes forward calls with their
// peer certificate). A certificate from any other CA is refused.
func TestTheClientCertificateCheckAdmitsTheClientAndPeerCAsOnly(t *testing.T) {
	dir := t.TempDir()
	peerCA := tlstest.NewCA(t, dir, "peer")
	clientCA := tlstest.NewCA(t, dir, "clients")
	otherCA := tlstest.NewCA(t, dir, "other")
	node := peerCA.Issue(t, dir, "node", 2, tlstest.Options{})
	d := daemontest.Start(t, func(c *daemon.Config) {
		c.TLSCertFile, c.TLSKeyFile, c.TLSClientCAFile = node.CertFile, node.KeyFile, clientCA.File
		c.PeerTLSCertFile, c.PeerTLSKeyFile, c.PeerTLSCAFile = node.CertFile, node.KeyFile, peerCA.File
	})
	ctx := testContext(t)
	creds := func(leaf tlstest.Leaf) credentials.TransportCredentials {
		pair, err := tls.LoadX509KeyPair(leaf.CertFile, leaf.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		return credentials.NewTLS(&tls.Config{RootCAs: caPool(peerCA), ServerName: "127.0.0.1", Certificates: []tls.Certificate{pair}})
	}
	for _, tc := range []struct {
		name  string
		leaf  tlstest.Leaf
		serve bool
	}{
		{"a client of --tls-client-ca", clientCA.Issue(t, dir, "admitted", 3, tlstest.Options{}), true},
		{"a node of --peer-tls-ca", peerCA.Issue(t, dir, "node2", 4, tlstest.Options{}), true},
		{"a certificate of another CA", otherCA.Issue(t, dir, "outsider", 5, tlstest.Options{}), false},
	} {
		err := healthCheck(ctx, d.TCPAddr(), creds(tc.leaf))
		if (err == nil) != tc.serve {
			t.Errorf("%s: health check = %v, want served %v", tc.name, err, tc.serve)
		}
	}
}
