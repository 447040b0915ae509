package main

import (
	stated "github.com/statedhq/stated/sdk/go"
)

// tlsOptions are the SDK options every client command connects with: TLS
// (tlsOnlyOptions) and the bearer token of --token (STATED_TOKEN), if any.
func (c *cli) tlsOptions() ([]stated.Option, error) {
	opts, err := c.tlsOnlyOptions()
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		opts = append(opts, stated.WithToken(c.token))
	}
	return opts, nil
}
