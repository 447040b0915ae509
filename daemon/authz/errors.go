package authz

import "errors"

var (
	// ErrNoToken is a call without an "authorization: Bearer" header.
	ErrNoToken = errors.New("authz: no bearer token: send 'authorization: Bearer <token>' (SDK WithToken, CLI --token or STATED_TOKEN)")
	// ErrUnknownToken is a bearer token no grant holds the hash of.
	ErrUnknownToken = errors.New("authz: unknown bearer token")
)
