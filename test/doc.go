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
//
// The tests mostly wait on the processes they start, so each calls
// t.Parallel and six run at once (testParallel; go test's -parallel
// overrides it), except the few that change the process's working
// directory, count its goroutines or fill a small disk, which run first,
// alone. Whatever they share is safe for that: the binaries are built
// once, freeAddr never hands out one port twice, the S3 tests'
// credentials are set once for the process (s3TestEnv), and network
// namespaces and podman names carry a tag of their own.
package test
