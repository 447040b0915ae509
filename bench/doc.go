// Package bench is stated's one-command benchmark harness (bench/run.sh):
// its benchmarks measure stated through the public Go SDK against real
// `stated run` processes, side by side with the references a user would
// weigh it against, measured in the same run: the disk (fsync latency and
// sequential bandwidth), raw Pebble with the state store's options, and
// Redis with an fsynced append-only file. Report turns the `go test
// -bench` output of a run into one markdown table in which every row
// carries its reference and the ratio (go run ./bench/report).
//
// The benchmarks live in _test.go files and need a data dir's filesystem
// (TMPDIR, which run.sh points at the data dir), a stated binary
// (BENCH_STATED_BIN, or one built from the tree) and, for the Redis rows,
// the unix sockets of the redis-server processes run.sh starts. Nothing
// here is imported by stated itself.
package bench
