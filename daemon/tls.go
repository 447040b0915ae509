package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statedhq/stated/internal/tlsutil"
)

// TLS, in one place:
//
//   - The TCP gRPC port serves TLS with TLSCertFile/TLSKeyFile. With
//     TLSClientCAFile clients must present a certificate from it (mutual
//     TLS). The unix socket stays plaintext; its file mode guards it.
//   - With PeerTLS*, Raft's transport is mutual TLS against PeerTLSCAFile
//     (both ends present and verify), and the gRPC connections a node
//     opens to another (forwarding to the leader, joins) present the peer
//     certificate and verify the other node's gRPC certificate against
//     PeerTLSCAFile: every node's TLSCertFile must come from a CA in that
//     bundle (the peer certificate may serve as both). The TCP gRPC port
//     then accepts client certificates from PeerTLSCAFile besides
//     TLSClientCAFile, so forwarded calls pass where clients must present
//     one. Peer TLS therefore needs TLS on the TCP gRPC port.
//   - Reload (SIGHUP in stated run) re-reads every file; a bad new file
//     keeps the old certificate. New connections use the current one.

func (c *Config) clientTLSFiles() tlsutil.Files {
	return tlsutil.Files{Cert: c.TLSCertFile, Key: c.TLSKeyFile, CA: c.TLSClientCAFile,
		CertFlag: "tls-cert", KeyFlag: "tls-key", CAFlag: "tls-client-ca"}
}

func (c *Config) peerTLSFiles() tlsutil.Files {
	return tlsutil.Files{Cert: c.PeerTLSCertFile, Key: c.PeerTLSKeyFile, CA: c.PeerTLSCAFile,
		CertFlag: "peer-tls-cert", KeyFlag: "peer-tls-key", CAFlag: "peer-tls-ca"}
}

// validateTLS reports half-given TLS settings, naming the flags.
func (c *Config) validateTLS() []error {
	var errs []error
	client, peer := c.clientTLSFiles(), c.peerTLSFiles()
	if err := client.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("daemon: config: %w", err))
	}
	if err := peer.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("daemon: config: %w", err))
	}
	if peer.Enabled() && peer.CA == "" {
		errs = append(errs, errors.New("daemon: config: --peer-tls-cert is given without --peer-tls-ca: peers verify each other against it"))
	}
	if peer.Enabled() && !client.Enabled() && (c.GRPCAddr != "" || c.AdvertiseGRPCAddr != "") {
		errs = append(errs, errors.New("daemon: config: --peer-tls-cert needs --tls-cert and --tls-key: forwarding and joins between nodes go over the TCP gRPC port, which must then serve TLS"))
	}
	if client.Enabled() && c.GRPCAddr == "" {
		errs = append(errs, errors.New("daemon: config: --tls-cert is given but --grpc-addr is empty: TLS is served on the TCP gRPC port only"))
	}
	return errs
}

// ValidateTLS reports half-given TLS settings (a certificate without its
// key, peer TLS without its CA or without TLS on gRPC), naming the flags;
// Validate includes it. stated run calls it to report them as usage errors.
func (c *Config) ValidateTLS() error { return errors.Join(c.validateTLS()...) }

// nodeTLS holds the daemon's reloadable certificates; nil fields are off.
type nodeTLS struct {
	client *tlsutil.Reloader
	peer   *tlsutil.Reloader
}

func loadTLS(c *Config) (*nodeTLS, error) {
	var t nodeTLS
	var err error
	if f := c.clientTLSFiles(); f.Enabled() {
		if t.client, err = tlsutil.New(f); err != nil {
			return nil, fmt.Errorf("daemon: %w", err)
		}
	}
	if f := c.peerTLSFiles(); f.Enabled() {
		if t.peer, err = tlsutil.New(f); err != nil {
			return nil, fmt.Errorf("daemon: %w", err)
		}
	}
	return &t, nil
}

// reload re-reads every certificate; each that fails keeps its old one.
func (t *nodeTLS) reload() error {
	var errs []error
	for _, r := range []*tlsutil.Reloader{t.client, t.peer} {
		if r == nil {
			continue
		}
		if err := r.Reload(); err != nil {
			errs = append(errs, fmt.Errorf("daemon: reload: %w; the previous certificate stays in use", err))
		}
	}
	return errors.Join(errs...)
}

// wrapGRPCListener returns ln serving TLS when a client certificate is
// configured. gRPC over it negotiates h2 through ALPN.
func (t *nodeTLS) wrapGRPCListener(ln net.Listener) net.Listener {
	if t.client == nil {
		return ln
	}
	var peerCAs func() []*x509.Certificate
	if t.peer != nil {
		peerCAs = t.peer.CACerts
	}
	requireClient := t.client.CACerts() != nil
	return tls.NewListener(ln, t.client.ServerConfig(requireClient, peerCAs, "h2"))
}

// peerCreds are the credentials of a gRPC connection to the node at addr.
func (t *nodeTLS) peerCreds(addr string) credentials.TransportCredentials {
	if t.peer == nil {
		return insecure.NewCredentials()
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr // the dial fails on the address and says so
	}
	return credentials.NewTLS(t.peer.ClientConfig(host))
}

// raftLayer returns the Raft stream layer: mutual TLS with peer TLS, nil
// (raftstore's plain TCP) without.
func (t *nodeTLS) raftLayer(advertise string) func(ln net.Listener) raft.StreamLayer {
	if t.peer == nil {
		return nil
	}
	return func(ln net.Listener) raft.StreamLayer {
		l := &tlsLayer{
			Listener:  tls.NewListener(ln, t.peer.ServerConfig(true, nil)),
			advertise: ln.Addr(),
			peer:      t.peer,
		}
		if advertise != "" {
			l.advertise = advertAddr(advertise)
		}
		return l
	}
}

// tlsLayer is Raft's stream layer over mutual TLS.
type tlsLayer struct {
	net.Listener
	advertise net.Addr
	peer      *tlsutil.Reloader
}

func (l *tlsLayer) Addr() net.Addr { return l.advertise }

// Dial opens a TLS connection to a peer, presenting the current peer
// certificate and verifying the peer's against the peer CA, and completes
// the handshake before Raft writes to it.
func (l *tlsLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(string(addr))
	if err != nil {
		return nil, fmt.Errorf("daemon: raft peer address %q: %w", addr, err)
	}
	return tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", string(addr), l.peer.ClientConfig(host))
}

// advertAddr is an advertised host:port, which may name its host.
type advertAddr string

func (a advertAddr) Network() string { return "tcp" }
func (a advertAddr) String() string  { return string(a) }
