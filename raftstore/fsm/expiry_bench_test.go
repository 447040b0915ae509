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
// 10,000 replaces an entry with a TTL): puts, or counter adds. A counter
// add, which reads the entry it replaces anyway, drops that entry's expiry
// record; a put does not read it. Reported per write.
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

// BenchmarkExpireAfterTTLRewrites measures what expiry costs once the
// TTL of BenchmarkApplyTTLRewrites's writes ran out: 1,000 counters, each
// added to with a TTL 20 times, then Expire commands of 10,000 records
// until none is due. With a record per add Expire reads and deletes 20
// records per counter; with a record per counter, one. Reported per add.
func BenchmarkExpireAfterTTLRewrites(b *testing.B) {
	const keys, rewrites = 1000, 20
	for n := 0; n < b.N; n += keys * rewrites {
		b.StopTimer()
		f, err := Open(b.TempDir()+"/state", nil)
		if err != nil {
			b.Fatal(err)
		}
		idx, now := uint64(1), int64(1e18)
		for range rewrites {
			muts := make([]command.Mutation, keys)
			for k := range muts {
				muts[k] = command.Mutation{Op: command.OpCounterAdd, Namespace: "ns", Key: binary.BigEndian.AppendUint64(nil, uint64(k)), Delta: 1, TTL: 3600e9}
			}
			now += 1e6
			f.Apply(rlog(idx, command.Encode(nil, &command.Command{Type: command.TypeCommit, Now: now, Commit: &command.Commit{Mutations: muts}})))
			idx++
		}
		later := now + 7200e9
		b.StartTimer()
		for {
			due, err := f.ExpiryDue(later)
			if err != nil {
				b.Fatal(err)
			}
			if !due {
				break
			}
			f.Apply(rlog(idx, command.Encode(nil, &command.Command{Type: command.TypeExpire, Now: later, ExpireLimit: 10000})))
			idx++
		}
		b.StopTimer()
		if c, _ := f.Counts(); c.StateKeys != 0 || c.TTLPending != 0 {
			b.Fatalf("after expiry: %+v", c)
		}
		f.Close()
	}
}

// BenchmarkExpireRounds times a round of expiry as the leader runs it
// (ExpiryDue, then a TypeExpire entry) after every `due` puts with a TTL
// (untimed), all of them due by the round: one op is one round. Each
// round's scans started at the expiry index's first key and stepped over
// every record the rounds before deleted, not yet compacted away: with
// 100 a round, 200 rounds averaged 2.1 ms and 3,000 rounds 27 ms; with
// 10, 0.30 and 2.9 ms. Run it with -benchtime 3000x: due=10 must stay
// that of a short run. due=100 deletes its index records with a range
// deletion a round, which Pebble fragments with all of the memtable's
// others on the next read: 0.29 ms over 200 rounds, 0.60 ms over 3,000
// (one fragmentation per round, and a round per --expiry-interval).
func BenchmarkExpireRounds(b *testing.B) {
	for _, due := range []int{10, 100} {
		b.Run(fmt.Sprintf("due=%d", due), func(b *testing.B) {
			f := openFSM(b)
			apply := benchApply(b, f)
			now, k := int64(1e18), 0
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				for range due {
					apply(&command.Command{Type: command.TypeCommit, Now: now, Commit: &command.Commit{Mutations: []command.Mutation{
						{Op: command.OpPut, Namespace: "ns", Key: fmt.Appendf(nil, "k%d", k), Value: []byte("v"), TTL: 1000}}}})
					k++
					now += 10
				}
				b.StartTimer()
				if ok, err := f.ExpiryDue(now + 1000); err != nil || !ok {
					b.Fatalf("expiry due %v, %v; want due", ok, err)
				}
				apply(&command.Command{Type: command.TypeExpire, Now: now + 1000, ExpireLimit: 10_000})
			}
			b.StopTimer()
			if ok, err := f.ExpiryDue(now + 1000); err != nil || ok {
				b.Fatalf("expiry due %v, %v after the last round; want nothing due", ok, err)
			}
		})
	}
}
