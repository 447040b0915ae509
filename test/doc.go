// Package test holds stated's end-to-end tests: real `stated` processes
// built from cmd/stated, killed with SIGKILL and restarted on the same data
// directory, and the SDK against an in-process daemon.
package test
