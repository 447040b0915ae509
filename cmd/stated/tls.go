package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/statedhq/stated/internal/tlsutil"
	stated "github.com/statedhq/stated/sdk/go"
)

// tlsOnlyOptions are the SDK options of client commands: TLS when --tls-ca
// or a client certificate (--tls-cert/--tls-key, for a daemon with
// --tls-client-ca) is given, trusting --tls-ca (else the system's CAs);
// none otherwise. A file that cannot be used is a usage error naming the
// flag; it never falls back to plaintext.
func (c *cli) tlsOnlyOptions() ([]stated.Option, error) {
	client := tlsutil.Files{Cert: c.tlsCert, Key: c.tlsKey, CertFlag: "tls-cert", KeyFlag: "tls-key"}
	if err := client.Validate(); err != nil {
		return nil, &exitError{code: exitUsage, err: errors.New(strings.TrimPrefix(err.Error(), "tlsutil: "))}
	}
	if c.tlsCA == "" && !client.Enabled() {
		if c.tlsServerName != "" {
			return nil, &exitError{code: exitUsage, err: errors.New("--tls-server-name is given without --tls-ca")}
		}
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.tlsServerName}
	if c.tlsCA != "" {
		pem, err := os.ReadFile(c.tlsCA)
		if err != nil {
			return nil, &exitError{code: exitUsage, err: fmt.Errorf("--tls-ca: %w", err)}
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, &exitError{code: exitUsage, err: fmt.Errorf("--tls-ca %s: no PEM certificate in it", c.tlsCA)}
		}
	}
	if client.Enabled() {
		// tlsutil checks that the key matches the certificate and that the
		// certificate is within its validity, naming the flag.
		r, err := tlsutil.New(client)
		if err != nil {
			return nil, &exitError{code: exitUsage, err: errors.New(strings.TrimPrefix(err.Error(), "tlsutil: "))}
		}
		cfg.GetClientCertificate = r.GetClientCertificate
	}
	return []stated.Option{stated.WithTLS(cfg)}, nil
}
