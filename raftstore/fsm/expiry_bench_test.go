package fsm

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// BenchmarkApplyTTLRewrites applies commits of 100 writes with a one-hour
// TTL to keys drawn in turn from 10,000 (so every write after the first
// 10,000 replaces an entry with a TTL): puts, or counter adds. A write
// with a TTL reads the entry it replaces to drop its expiry record (a
// counter add reads it anyway). Reported per write.
func BenchmarkApplyTTLRewrites(b *testing.B) {
	const keys, perCommit = 10_000, 100
	for _, op := range []command.Op{command.OpPut, command.OpCounterAdd} {
		name := map[command.Op]string{command.OpPut: "put", command.OpCounterAdd: "counter-add"}[op]
		b.Run(name, func(b *testing.B) {
			f, err := Open(b.TempDir()+"/state", nil)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			val := make([]byte, 100)
			idx, k, now := uint64(1), 0, int64(1e18)
			commit := func() *raft.Log {
				muts := make([]command.Mutation, perCommit)
				for j := range muts {
					k = (k + 1) % keys
					muts[j] = command.Mutation{Op: op, Namespace: "ns", Key: binary.BigEndian.AppendUint64(nil, uint64(k)), TTL: 3600e9}
					if op == command.OpPut {
						muts[j].Value = val
					} else {
						muts[j].Delta = 1
					}
				}
				now += 1e6 // every commit a millisecond later: a new expiry
				l := rlog(idx, command.Encode(nil, &command.Command{Type: command.TypeCommit, Now: now, Commit: &command.Commit{Mutations: muts}}))
				idx++
				return l
			}
			for range keys / perCommit {
				f.Apply(commit())
			}
			b.ResetTimer()
			for n := 0; n < b.N; n += perCommit {
				b.StopTimer()
				l := commit()
				b.StartTimer()
				if r, ok := f.Apply(l).(*Result); !ok || r.Err != nil {
					b.Fatal(fmt.Sprint(r))
				}
			}
		})
	}
}
