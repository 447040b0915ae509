package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Files names the files of one certificate and the flags they came from,
// so that errors name the flag.
type Files struct {
	Cert, Key, CA             string
	CertFlag, KeyFlag, CAFlag string
}

// Validate reports a half-given pair: a certificate without its key or a
// key (or CA) without its certificate.
func (f Files) Validate() error {
	switch {
	case f.Cert != "" && f.Key == "":
		return fmt.Errorf("tlsutil: --%s is given without --%s", f.CertFlag, f.KeyFlag)
	case f.Cert == "" && f.Key != "":
		return fmt.Errorf("tlsutil: --%s is given without --%s", f.KeyFlag, f.CertFlag)
	case f.Cert == "" && f.CA != "":
		return fmt.Errorf("tlsutil: --%s is given without --%s and --%s", f.CAFlag, f.CertFlag, f.KeyFlag)
	}
	return nil
}

// Enabled reports whether a certificate is configured.
func (f Files) Enabled() bool { return f.Cert != "" }

type state struct {
	cert *tls.Certificate
	pool *x509.CertPool // nil without a CA file
	cas  []*x509.Certificate
}

// Reloader holds the current certificate (and CA pool) of one Files.
type Reloader struct {
	files Files
	now   func() time.Time
	mu    sync.Mutex // serializes Reload
	cur   atomic.Pointer[state]
}

// New loads files; an unreadable file, a key that does not match its
// certificate, or a certificate outside its validity period is an error
// naming the flag.
func New(files Files) (*Reloader, error) {
	if err := files.Validate(); err != nil {
		return nil, err
	}
	if !files.Enabled() {
		return nil, errors.New("tlsutil: no certificate configured")
	}
	r := &Reloader{files: files, now: time.Now}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload re-reads the files and swaps them in. On error the previous
// certificate and CA stay in use.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, err := load(r.files, r.now())
	if err != nil {
		return err
	}
	r.cur.Store(st)
	return nil
}

func load(f Files, now time.Time) (*state, error) {
	certPEM, err := os.ReadFile(f.Cert)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: --%s: %w", f.CertFlag, err)
	}
	keyPEM, err := os.ReadFile(f.Key)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: --%s: %w", f.KeyFlag, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: --%s %s and --%s %s: %w", f.CertFlag, f.Cert, f.KeyFlag, f.Key, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tlsutil: --%s %s: %w", f.CertFlag, f.Cert, err)
		}
		cert.Leaf = leaf
	}
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("tlsutil: --%s %s: certificate expired at %s", f.CertFlag, f.Cert, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("tlsutil: --%s %s: certificate is not valid before %s", f.CertFlag, f.Cert, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	st := &state{cert: &cert}
	if f.CA != "" {
		if st.cas, err = LoadCAs(f.CA, f.CAFlag); err != nil {
			return nil, err
		}
		st.pool = x509.NewCertPool()
		for _, c := range st.cas {
			st.pool.AddCert(c)
		}
	}
	return st, nil
}

// LoadCAs reads a PEM bundle of CA certificates; an error names flag.
func LoadCAs(path, flag string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: --%s: %w", flag, err)
	}
	var cas []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("tlsutil: --%s %s: %w", flag, path, err)
		}
		cas = append(cas, c)
	}
	if len(cas) == 0 {
		return nil, fmt.Errorf("tlsutil: --%s %s: no PEM certificate in it", flag, path)
	}
	return cas, nil
}

// CACerts are the CA certificates in use; nil without a CA file.
func (r *Reloader) CACerts() []*x509.Certificate { return r.cur.Load().cas }

// Leaf is the certificate in use.
func (r *Reloader) Leaf() *x509.Certificate { return r.cur.Load().cert.Leaf }

// CAPool is the CA pool in use; nil without a CA file.
func (r *Reloader) CAPool() *x509.CertPool { return r.cur.Load().pool }

// GetCertificate serves the current certificate (tls.Config.GetCertificate).
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cur.Load().cert, nil
}

// GetClientCertificate presents the current certificate
// (tls.Config.GetClientCertificate).
func (r *Reloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.cur.Load().cert, nil
}

// ServerConfig is a server tls.Config serving the current certificate.
// With requireClient it requires a client certificate verified against
// the current CA pool (mutual TLS); without it a client certificate is
// verified if one is given. extraClientCAs, when set, is called per
// handshake for CAs accepted besides this Reloader's. nextProtos sets ALPN.
func (r *Reloader) ServerConfig(requireClient bool, extraClientCAs func() []*x509.Certificate, nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: nextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			st := r.cur.Load()
			c := &tls.Config{
				MinVersion:   tls.VersionTLS12,
				NextProtos:   nextProtos,
				Certificates: []tls.Certificate{*st.cert},
			}
			cas := st.cas
			if extraClientCAs != nil {
				cas = append(append([]*x509.Certificate(nil), cas...), extraClientCAs()...)
			}
			var pool *x509.CertPool
			if len(cas) > 0 {
				pool = x509.NewCertPool()
				for _, ca := range cas {
					pool.AddCert(ca)
				}
			}
			switch {
			case requireClient:
				if pool == nil {
					return nil, errors.New("tlsutil: client certificates required but no CA to verify them")
				}
				c.ClientAuth = tls.RequireAndVerifyClientCert
				c.ClientCAs = pool
			case pool != nil:
				c.ClientAuth = tls.VerifyClientCertIfGiven
				c.ClientCAs = pool
			}
			return c, nil
		},
	}
}

// ClientConfig is a client tls.Config that presents the current
// certificate and verifies the server's certificate, and its name against
// serverName (a DNS name or an IP address), against the CA pool current at
// each handshake.
func (r *Reloader) ClientConfig(serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS12,
		ServerName:           serverName,
		GetClientCertificate: r.GetClientCertificate,
		// Verification happens in VerifyConnection against the CA pool
		// current at the handshake, so that a reloaded CA applies to new
		// connections; it is never skipped.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return r.verifyServer(cs, serverName)
		},
	}
}

func (r *Reloader) verifyServer(cs tls.ConnectionState, serverName string) error {
	pool := r.cur.Load().pool
	if pool == nil {
		return errors.New("tlsutil: no CA to verify the server's certificate")
	}
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tlsutil: the server sent no certificate")
	}
	if serverName == "" {
		return errors.New("tlsutil: no server name to verify the server's certificate against")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots: pool, Intermediates: inter, DNSName: serverName,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("tlsutil: server certificate: %w", err)
	}
	return nil
}
