package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	stated "github.com/statedhq/stated/sdk/go"
)

// tlsOptions are the SDK options of client commands: TLS trusting --tls-ca
// when it is given, none otherwise. A CA file that cannot be used is a
// usage error naming the flag; it never falls back to plaintext.
func (c *cli) tlsOnlyOptions() ([]stated.Option, error) {
	if c.tlsCA == "" {
		if c.tlsServerName != "" {
			return nil, &exitError{code: exitUsage, err: errors.New("--tls-server-name is given without --tls-ca")}
		}
		return nil, nil
	}
	pem, err := os.ReadFile(c.tlsCA)
	if err != nil {
		return nil, &exitError{code: exitUsage, err: fmt.Errorf("--tls-ca: %w", err)}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, &exitError{code: exitUsage, err: fmt.Errorf("--tls-ca %s: no PEM certificate in it", c.tlsCA)}
	}
	return []stated.Option{stated.WithTLS(&tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: c.tlsServerName})}, nil
}
