package fsm

import (
	"fmt"
	"testing"

	"github.com/statedhq/stated/raftstore/command"
)

// BenchmarkDeleteCommits applies b.N commits that each delete a key and
// add to a counter (a read), the same memtable throughout. A delete was a
// range deletion of the key's prefix, and Pebble fragments all of a
// memtable's range deletions again on the first read after one is added:
// 1,000 commits averaged 0.20 ms each, 16,000 2.2 ms. Run it with
// -benchtime 20000x: ns/op must stay that of a short run.
func BenchmarkDeleteCommits(b *testing.B) {
	f, err := Open(b.TempDir()+"/state", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	run := benchApply(b, f)
	for i := range b.N {
		run(&command.Command{Type: command.TypeCommit, Now: 1, Commit: &command.Commit{Mutations: []command.Mutation{
			{Op: command.OpPut, Namespace: "n", Key: fmt.Appendf(nil, "k%d", i), Value: []byte("v")}}}})
	}
	b.ResetTimer()
	for i := range b.N {
		run(&command.Command{Type: command.TypeCommit, Now: 1, Commit: &command.Commit{Mutations: []command.Mutation{
			{Op: command.OpDelete, Namespace: "n", Key: fmt.Appendf(nil, "k%d", i)},
			{Op: command.OpCounterAdd, Namespace: "n", Key: []byte("c"), Delta: 1},
		}}})
	}
	b.StopTimer()
	if got := counterValue(b, f, "n", "c", 1); got != int64(b.N) {
		b.Fatalf("counter %d after %d adds", got, b.N)
	}
}
