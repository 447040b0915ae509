package fsm

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// BenchmarkApplyBatch applies Raft batches of session commits of n puts
// each (100-byte values, fresh keys), as one ApplyBatch and entry by entry
// (Apply), to compare one Pebble commit per batch against one per entry.
// Reported per entry.
func BenchmarkApplyBatch(b *testing.B) {
	for _, tc := range []struct{ muts, entries int }{{1, 64}, {10, 64}, {100, 16}, {1000, 4}} {
		for _, mode := range []string{"batch", "one-by-one"} {
			b.Run(fmt.Sprintf("mutations=%d/entries=%d/%s", tc.muts, tc.entries, mode), func(b *testing.B) {
				f, err := Open(b.TempDir()+"/state", nil)
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				f.Apply(rlog(1, command.Encode(nil, openSessionCmd("c", 7, 0))))
				idx, seq, key := uint64(2), uint64(0), uint64(0)
				val := make([]byte, 100)
				logs := make([]*raft.Log, tc.entries)
				b.ResetTimer()
				for n := 0; n < b.N; n += tc.entries {
					b.StopTimer()
					for i := range logs {
						muts := make([]command.Mutation, tc.muts)
						for j := range muts {
							key++
							muts[j] = command.Mutation{Op: command.OpPut, Namespace: "ns", Key: binary.BigEndian.AppendUint64(nil, key), Value: val}
						}
						seq++
						cmd := &command.Command{Type: command.TypeCommit, Now: 1e18, Commit: &command.Commit{Mutations: muts}}
						inSession(cmd, 7, 0, seq)
						logs[i] = rlog(idx, command.Encode(nil, cmd))
						idx++
					}
					b.StartTimer()
					if mode == "batch" {
						f.Batching().ApplyBatch(logs)
					} else {
						for _, l := range logs {
							f.Apply(l)
						}
					}
				}
			})
		}
	}
}
