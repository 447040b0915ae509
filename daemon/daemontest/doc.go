// Package daemontest starts real stated daemons for tests: single nodes
// (Start) and clusters whose nodes join the first one (StartCluster).
//
// A daemon from Start keeps its data in t.TempDir(), listens on loopback
// ports the system picks and on a unix socket in a short temporary
// directory, and is closed by t.Cleanup. Its logs reach the test output only
// when they are warnings or errors, or when the test fails. It never mocks
// anything: Raft, Pebble and gRPC are the real ones.
package daemontest
