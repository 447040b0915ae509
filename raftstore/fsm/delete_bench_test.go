package fsm

import (
	"fmt"
	"testing"

	"github.com/statedhq/stated/raftstore/command"
)

// BenchmarkDeleteCommits applies b.N commits that each delete a key and
// add to a counter (a read), the same memtable throughout: in "distinct",
// b.N keys put before, one deleted per commit; in "one-key", one key put
// again and deleted by every commit. ns/op is per deleting commit (in
// "one-key", with the put's commit). Run it with -benchtime 20000x: ns/op
// must stay that of a short run.
//
// A delete was a range deletion of the key's prefix, and Pebble fragments
// all of a memtable's range deletions again on the first read after one
// is added: "distinct" averaged 0.20 ms over 1,000 commits and 2.2 ms
// over 16,000. A delete that stepped through the keys it covers with Next
// stepped over every older version of each still in the memtable:
// "one-key" averaged 75 µs over 1,000 and 867 µs over 20,000.
func BenchmarkDeleteCommits(b *testing.B) {
	for _, oneKey := range []bool{false, true} {
		name := map[bool]string{false: "distinct", true: "one-key"}[oneKey]
		b.Run(name, func(b *testing.B) {
			f := openFSM(b)
			run := benchApply(b, f)
			key := func(i int) []byte {
				if oneKey {
					return []byte("k")
				}
				return fmt.Appendf(nil, "k%d", i)
			}
			put := func(i int) {
				run(&command.Command{Type: command.TypeCommit, Now: 1, Commit: &command.Commit{Mutations: []command.Mutation{
					{Op: command.OpPut, Namespace: "n", Key: key(i), Value: []byte("v")}}}})
			}
			if !oneKey {
				for i := range b.N {
					put(i)
				}
			}
			b.ResetTimer()
			for i := range b.N {
				if oneKey {
					put(i)
				}
				run(&command.Command{Type: command.TypeCommit, Now: 1, Commit: &command.Commit{Mutations: []command.Mutation{
					{Op: command.OpDelete, Namespace: "n", Key: key(i)},
					{Op: command.OpCounterAdd, Namespace: "n", Key: []byte("c"), Delta: 1},
				}}})
			}
			b.StopTimer()
			if got := counterValue(b, f, "n", "c", 1); got != int64(b.N) {
				b.Fatalf("counter %d after %d adds", got, b.N)
			}
			if _, ok, err := f.Get("n", key(b.N-1), KindValue, nil, 1); err != nil || ok {
				b.Fatalf("the last key deleted: found %v, err %v", ok, err)
			}
		})
	}
}
