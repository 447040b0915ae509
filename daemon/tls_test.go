package daemon_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/internal/tlsutil/tlstest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

func caPool(ca *tlstest.CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// serverSerial opens a new TLS connection to addr trusting ca and returns
// the serial of the certificate the server presented.
func serverSerial(t *testing.T, addr string, cfg *tls.Config) int64 {
	t.Helper()
	conn, err := tls.DialWithDialer(&dialer, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

var dialer = netDialer()

func healthCheck(ctx context.Context, addr string, creds credentials.TransportCredentials) error {
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestTCPServesTLSAndAReloadedCertificateIsUsedByNewConnections(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "ca")
	leaf := ca.Issue(t, dir, "server", 10, tlstest.Options{})
	d := daemontest.Start(t, func(c *daemon.Config) { c.TLSCertFile, c.TLSKeyFile = leaf.CertFile, leaf.KeyFile })
	ctx := testContext(t)
	clientTLS := &tls.Config{RootCAs: caPool(ca), ServerName: "127.0.0.1"}

	if err := healthCheck(ctx, d.TCPAddr(), credentials.NewTLS(clientTLS)); err != nil {
		t.Fatalf("TLS client trusting the CA: %v", err)
	}
	if err := healthCheck(ctx, d.TCPAddr(), insecure.NewCredentials()); err == nil {
		t.Fatal("a plaintext client was served on the TLS port")
	}
	// The unix socket stays plaintext.
	if _, err := statedv1.NewStateClient(dial(t, "unix://"+d.SocketPath())).Commit(ctx, putReq("k", "v")); err != nil {
		t.Fatalf("commit on the unix socket: %v", err)
	}
	if got := serverSerial(t, d.TCPAddr(), clientTLS); got != 10 {
		t.Fatalf("serial %d, want 10", got)
	}

	ca.Issue(t, dir, "server", 11, tlstest.Options{})
	if err := d.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := serverSerial(t, d.TCPAddr(), clientTLS); got != 11 {
		t.Fatalf("after Reload: serial %d, want 11", got)
	}

	// A certificate whose key is another's: refused, 11 stays in use.
	other := ca.Issue(t, dir, "other", 12, tlstest.Options{})
	copyFile(t, other.CertFile, leaf.CertFile)
	err := d.Reload()
	if err == nil || !strings.Contains(err.Error(), "--tls-cert") || !strings.Contains(err.Error(), "previous certificate stays in use") {
		t.Fatalf("Reload of a mismatched pair: %v, want an error naming --tls-cert and keeping the old one", err)
	}
	if got := serverSerial(t, d.TCPAddr(), clientTLS); got != 11 {
		t.Fatalf("after a refused Reload: serial %d, want 11", got)
	}
}

func TestClientCARequiresAClientCertificate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "ca")
	srv := ca.Issue(t, dir, "server", 2, tlstest.Options{})
	cli := ca.Issue(t, dir, "client", 3, tlstest.Options{})
	d := daemontest.Start(t, func(c *daemon.Config) {
		c.TLSCertFile, c.TLSKeyFile, c.TLSClientCAFile = srv.CertFile, srv.KeyFile, ca.File
	})
	ctx := testContext(t)
	if err := healthCheck(ctx, d.TCPAddr(), credentials.NewTLS(&tls.Config{RootCAs: caPool(ca)})); err == nil {
		t.Fatal("a client without a certificate was served though --tls-client-ca is set")
	}
	pair, err := tls.LoadX509KeyPair(cli.CertFile, cli.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := healthCheck(ctx, d.TCPAddr(), credentials.NewTLS(&tls.Config{RootCAs: caPool(ca), Certificates: []tls.Certificate{pair}})); err != nil {
		t.Fatalf("client with a certificate from the client CA: %v", err)
	}
}

func TestStartRefusesBadTLSSettingsNamingTheFlag(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "ca")
	good := ca.Issue(t, dir, "good", 2, tlstest.Options{})
	other := ca.Issue(t, dir, "other", 3, tlstest.Options{})
	expired := ca.Issue(t, dir, "expired", 4, tlstest.Options{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	for _, tc := range []struct {
		name string
		set  func(c *daemon.Config)
		want string
	}{
		{"key of another certificate", func(c *daemon.Config) { c.TLSCertFile, c.TLSKeyFile = good.CertFile, other.KeyFile }, "--tls-cert"},
		{"expired certificate", func(c *daemon.Config) { c.TLSCertFile, c.TLSKeyFile = expired.CertFile, expired.KeyFile }, "expired"},
		{"unreadable client CA", func(c *daemon.Config) {
			c.TLSCertFile, c.TLSKeyFile, c.TLSClientCAFile = good.CertFile, good.KeyFile, dir+"/missing.pem"
		}, "--tls-client-ca"},
		{"certificate without key", func(c *daemon.Config) { c.TLSCertFile = good.CertFile }, "--tls-cert is given without --tls-key"},
		{"peer certificate without CA", func(c *daemon.Config) {
			c.TLSCertFile, c.TLSKeyFile = good.CertFile, good.KeyFile
			c.PeerTLSCertFile, c.PeerTLSKeyFile = good.CertFile, good.KeyFile
		}, "--peer-tls-ca"},
		{"peer TLS without TLS on gRPC", func(c *daemon.Config) {
			c.PeerTLSCertFile, c.PeerTLSKeyFile, c.PeerTLSCAFile = good.CertFile, good.KeyFile, ca.File
		}, "--peer-tls-cert needs --tls-cert"},
		{"unreadable peer CA", func(c *daemon.Config) {
			c.TLSCertFile, c.TLSKeyFile = good.CertFile, good.KeyFile
			c.PeerTLSCertFile, c.PeerTLSKeyFile, c.PeerTLSCAFile = good.CertFile, good.KeyFile, dir+"/missing.pem"
		}, "--peer-tls-ca"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := daemontest.Config(t, "n1")
			tc.set(&cfg)
			d, err := daemon.Start(testContext(t), cfg)
			if err == nil {
				d.Close()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start: %v, want an error containing %q", err, tc.want)
			}
			if _, err := os.Stat(cfg.SocketPath); err == nil {
				t.Errorf("a refused Start left its socket %s", cfg.SocketPath)
			}
		})
	}
}

// peerTLS sets a node's gRPC and peer certificates to leaf from ca.
func peerTLS(ca *tlstest.CA, leaf tlstest.Leaf) func(*daemon.Config) {
	return func(c *daemon.Config) {
		c.TLSCertFile, c.TLSKeyFile = leaf.CertFile, leaf.KeyFile
		c.PeerTLSCertFile, c.PeerTLSKeyFile, c.PeerTLSCAFile = leaf.CertFile, leaf.KeyFile, ca.File
	}
}

func TestPeerMutualTLSClusterReplicatesAndRefusesOutsiders(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "ca")
	leaf := ca.Issue(t, dir, "peer", 20, tlstest.Options{})
	nodes := daemontest.StartCluster(t, 3, peerTLS(ca, leaf))
	ctx := testContext(t)
	pair, err := tls.LoadX509KeyPair(leaf.CertFile, leaf.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	clientTLS := &tls.Config{RootCAs: caPool(ca), ServerName: "127.0.0.1", Certificates: []tls.Certificate{pair}}
	grpcCreds := func() grpc.DialOption { return grpc.WithTransportCredentials(credentials.NewTLS(clientTLS.Clone())) }

	// A commit on a follower is forwarded to the leader over mutual TLS
	// and replicated to every node over the TLS Raft transport.
	follower, err := grpc.NewClient("passthrough:///"+nodes[2].TCPAddr(), grpcCreds())
	if err != nil {
		t.Fatal(err)
	}
	defer follower.Close()
	var resp *statedv1.CommitResponse
	err = daemontest.WhileUnavailable(ctx, func() (err error) {
		resp, err = statedv1.NewStateClient(follower).Commit(ctx, putReq("k", "over-tls"))
		return err
	})
	if err != nil {
		t.Fatalf("commit on a follower: %v", err)
	}
	for _, n := range nodes {
		eventually(t, n.NodeID()+" applied the commit", func() error {
			if n.Store().Status().AppliedIndex < resp.GetIndex() {
				return context.DeadlineExceeded
			}
			return nil
		})
	}
	leaderCC, err := grpc.NewClient("passthrough:///"+nodes[0].TCPAddr(), grpcCreds())
	if err != nil {
		t.Fatal(err)
	}
	defer leaderCC.Close()
	members := func() []string {
		r, err := statedv1.NewClusterClient(leaderCC).Members(ctx, &statedv1.MembersRequest{})
		if err != nil {
			t.Fatalf("members: %v", err)
		}
		var ids []string
		for _, m := range r.GetMembers() {
			ids = append(ids, m.GetNodeId())
		}
		slices.Sort(ids)
		return ids
	}
	before := members()
	lastIndex, lastTerm := nodes[0].Store().Status().AppliedIndex, nodes[0].Store().Term()

	other := tlstest.NewCA(t, dir, "other")
	otherLeaf := other.Issue(t, dir, "intruder", 30, tlstest.Options{})
	for _, tc := range []struct {
		name string
		set  func(*daemon.Config)
	}{
		{"plaintext node", func(*daemon.Config) {}},
		{"node with a certificate from another CA", peerTLS(other, otherLeaf)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := daemontest.Config(t, "intruder")
			tc.set(&cfg)
			cfg.Join = []string{nodes[0].TCPAddr()}
			cfg.JoinTimeout = 2 * time.Second
			d, err := daemon.Start(ctx, cfg)
			if err == nil {
				d.Close()
				t.Fatal("the node joined")
			}
		})
	}
	// Raft itself refuses them too: a plaintext connection and one from
	// another CA to the leader's Raft port get no handshake.
	raftAddr := nodes[0].Store().RaftAddr()
	otherPair, err := tls.LoadX509KeyPair(otherLeaf.CertFile, otherLeaf.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if conn, err := tls.DialWithDialer(&dialer, "tcp", raftAddr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{otherPair}}); err == nil {
		// TLS 1.3 reports the server's refusal of the client certificate
		// on the first read.
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err == nil {
			t.Error("the Raft port accepted a certificate from another CA")
		}
		conn.Close()
	}
	plain, err := dialer.DialContext(ctx, "tcp", raftAddr)
	if err != nil {
		t.Fatal(err)
	}
	plain.SetDeadline(time.Now().Add(5 * time.Second))
	plain.Write([]byte{0, 0, 0, 0, 0, 0, 0, 0}) // not a TLS record
	if n, err := plain.Read(make([]byte, 64)); err == nil && n > 0 {
		// A TLS alert is all a plaintext peer may get back.
		t.Logf("the Raft port answered plaintext with %d bytes (a TLS alert)", n)
	}
	plain.Close()

	if after := members(); !slices.Equal(after, before) {
		t.Errorf("members after refused joins = %v, want %v", after, before)
	}
	// Within one term: a new leader (one that missed its lease under
	// -race on a loaded machine) appends an entry of its own.
	if got := nodes[0].Store().Status().AppliedIndex; got != lastIndex && nodes[0].Store().Term() == lastTerm {
		t.Errorf("applied index moved from %d to %d while outsiders tried to join", lastIndex, got)
	}

	// A reloaded peer certificate is what new Raft connections see.
	ca.Issue(t, dir, "peer", 21, tlstest.Options{})
	if err := nodes[0].Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := serverSerial(t, raftAddr, clientTLS); got != 21 {
		t.Fatalf("Raft port after Reload: serial %d, want 21", got)
	}
	// And the cluster still replicates over new connections.
	if err := daemontest.WhileUnavailable(ctx, func() error {
		_, err := statedv1.NewStateClient(follower).Commit(ctx, putReq("k2", "after-reload"))
		return err
	}); err != nil {
		t.Fatalf("commit after Reload: %v", err)
	}
}

func netDialer() net.Dialer { return net.Dialer{Timeout: 5 * time.Second} }
