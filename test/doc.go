// Package test holds stated's end-to-end tests: real `stated` processes
// built from cmd/stated, killed with SIGKILL and restarted on the same data
// directory, and the SDK against an in-process daemon.
//
// The chaos suite (chaos_test.go, helpers in chaos_*_test.go) runs three
// stated processes, load workers and examples/counter processes against
// kfake under a seeded random schedule of faults (SIGKILLs, a partition in
// network namespaces as root, a wiped disk, a total loss restored from the
// bucket) and checks that no acknowledged commit is lost, no commit is
// applied twice, the replicas agree, every record is counted once, and
// progress resumes after the last fault. Its short version runs with the other tests;
// STATED_CHAOS_DURATION runs a long one. docs/TESTING.md describes both.
package test
