package command

import (
	"encoding/binary"
	"fmt"
	"testing"
)

// benchCommit is a commit of n puts as the harness's rows send them: one
// namespace, 12-byte keys, 100-byte values, in a session.
func benchCommit(n int) *Command {
	c := &Commit{ClientID: "bench-client", SessionID: 1 << 40, Lane: 3, Seq: 7, Mutations: make([]Mutation, n)}
	value := make([]byte, 100)
	for i := range c.Mutations {
		c.Mutations[i] = Mutation{Op: OpPut, Namespace: "bench", Key: binary.BigEndian.AppendUint64([]byte("key/"), uint64(i)), Value: value}
	}
	c.Hash = c.PayloadHash()
	return &Command{Type: TypeCommit, Now: 1_700_000_000_000_000_000, Commit: c}
}

// BenchmarkEncode is the leader's encoding of a commit for the Raft log.
func BenchmarkEncode(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("mutations=%d", n), func(b *testing.B) {
			c := benchCommit(n)
			b.ReportAllocs()
			var size int
			for b.Loop() {
				size = len(Encode(nil, c))
			}
			b.SetBytes(int64(size))
		})
	}
}

// BenchmarkDecode is every replica's decoding of a commit's entry, on its
// own (Decode) and with the memory of the entry before it (a Decoder, as
// the state machine decodes).
func BenchmarkDecode(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		for _, with := range []string{"Decode", "Decoder"} {
			b.Run(fmt.Sprintf("mutations=%d/with=%s", n, with), func(b *testing.B) {
				buf := Encode(nil, benchCommit(n))
				b.SetBytes(int64(len(buf)))
				b.ReportAllocs()
				var dec Decoder
				decode := Decode
				if with == "Decoder" {
					decode = dec.Decode
				}
				for b.Loop() {
					if _, err := decode(buf); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkPayloadHash is the leader's digest of a session commit.
func BenchmarkPayloadHash(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("mutations=%d", n), func(b *testing.B) {
			c := benchCommit(n).Commit
			b.ReportAllocs()
			for b.Loop() {
				c.PayloadHash()
			}
		})
	}
}

// BenchmarkEncodeProposal is the leader's whole work on a session commit
// before proposing it: its payload hash and its encoding. "hash-then-
// encode" is the two passes a leader made before EncodeProposal, in the
// same run for comparison.
func BenchmarkEncodeProposal(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("mutations=%d/proposal", n), func(b *testing.B) {
			c := benchCommit(n)
			b.ReportAllocs()
			for b.Loop() {
				EncodeProposal(c)
			}
		})
		b.Run(fmt.Sprintf("mutations=%d/hash-then-encode", n), func(b *testing.B) {
			c := benchCommit(n)
			b.ReportAllocs()
			for b.Loop() {
				c.Commit.Hash = c.Commit.PayloadHash()
				Encode(nil, c)
			}
		})
	}
}
