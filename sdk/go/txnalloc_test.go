package stated

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"testing"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // grpc-go's codec, to compare

	"github.com/statedhq/stated/internal/grpccodec"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

func TestATxnKeepsItsOwnCopiesOfEveryByteArgument(t *testing.T) {
	// One buffer the caller rewrites after each builder call, as the
	// package documentation allows, with sizes that fill blocks, cross
	// them, and pass the largest copy a block takes.
	kbuf, vbuf := make([]byte, 64), make([]byte, 20<<10)
	sizes := []int{0, 1, 16, 100, 255, 256, 257, 4000, maxCopyBlock / 4, maxCopyBlock/4 + 1, 20 << 10}
	fill := func(buf []byte, n int, b byte) []byte {
		s := buf[:n]
		for i := range s {
			s[i] = b
		}
		return s
	}
	for _, form := range []struct {
		name   string
		wireAt int
	}{{"messages", math.MaxInt}, {"wire", -1}} {
		t.Run(form.name, func(t *testing.T) { keepsOwnCopies(t, form.wireAt, kbuf, vbuf, sizes, fill) })
	}
}

func keepsOwnCopies(t *testing.T, wireAt int, kbuf, vbuf []byte, sizes []int, fill func([]byte, int, byte) []byte) {
	txn := newFakeClient(&fakeState{}).Txn()
	txn.wireAt = wireAt
	var want [][3][]byte
	for i := range 300 {
		n := sizes[i%len(sizes)]
		b := byte(i)
		key, sub, val := fill(kbuf, min(n, 64), b), []byte(nil), []byte(nil)
		want1 := [3][]byte{bytes.Clone(key)}
		switch i % 3 {
		case 0:
			txn.Put("ns", key, fill(vbuf, n, b+1))
			want1[2] = bytes.Repeat([]byte{b + 1}, n)
		case 1:
			txn.MapPut("ns", key, sub, val)
		case 2:
			txn.Delete("ns", key)
		}
		fill(kbuf, len(kbuf), 0xee) // the caller reuses its buffers
		fill(vbuf, len(vbuf), 0xee)
		want = append(want, want1)
	}
	sent := sentRequest(t, txn, &lane{session: 1, next: 1}).Mutations
	if len(sent) != len(want) {
		t.Fatalf("%d mutations, want %d", len(sent), len(want))
	}
	for i, m := range sent {
		if !bytes.Equal(m.GetKey(), want[i][0]) || !bytes.Equal(m.GetValue(), want[i][2]) {
			t.Fatalf("mutation %d: key %q value of %d bytes, want key %q and %d bytes", i, m.GetKey(), len(m.GetValue()), want[i][0], len(want[i][2]))
		}
	}
	if (txn.wire != nil) != (wireAt < 0) {
		t.Fatalf("in wire form: %v, with wireAt %d", txn.wire != nil, wireAt)
	}
	for i, m := range txn.mutations { // the messages' own copies
		// An append to a copy must not reach the next one.
		if k := m.GetKey(); cap(k) != len(k) {
			t.Fatalf("mutation %d: its key has room past it (len %d, cap %d)", i, len(k), cap(k))
		}
	}
}

func TestATxnCopiesNilAsNilAndEmptyAsEmpty(t *testing.T) {
	txn := (&Txn{}).Put("ns", nil, []byte{}).MapPut("ns", []byte{}, nil, nil)
	put, mapPut := txn.mutations[0], txn.mutations[1]
	if put.Key != nil || put.Value == nil || len(put.Value) != 0 {
		t.Fatalf("Put(nil, []byte{}): key %#v value %#v", put.Key, put.Value)
	}
	if mapPut.Key == nil || mapPut.SubKey != nil || mapPut.Value != nil {
		t.Fatalf("MapPut([]byte{}, nil, nil): key %#v sub-key %#v value %#v", mapPut.Key, mapPut.SubKey, mapPut.Value)
	}
	if put.Kind != statedv1.MutationKind_MUTATION_KIND_PUT || mapPut.Kind != statedv1.MutationKind_MUTATION_KIND_MAP_PUT {
		t.Fatalf("kinds %v, %v", put.Kind, mapPut.Kind)
	}
}

func TestATxnOf1000PutsAllocatesInBlocks(t *testing.T) {
	var key [16]byte
	value := make([]byte, 100)
	allocs := testing.AllocsPerRun(20, func() {
		txn := &Txn{wireAt: math.MaxInt} // messages (txnwire.go has the wire form's)
		for i := range 1000 {
			binary.BigEndian.PutUint64(key[8:], uint64(i))
			txn.Put("ns", key[:], value)
		}
	})
	// 1000 puts: 14 blocks of mutations, about 10 of copies, and the
	// mutations slice's growth (about 16), against 3,000 allocations
	// with one per mutation and per copy.
	if allocs > 60 {
		t.Fatalf("a Txn of 1000 puts made %.0f allocations, want at most 60", allocs)
	}
}

// BenchmarkTxnPuts builds a Txn of n puts of 16-byte keys and 100-byte
// values, as bench's commit rows do, and marshals its request as the SDK
// sends it: build=wire is Put, in wire form past maxCoalescedWrites
// mutations (txnwire.go); build=blocks is Put building messages only, as
// before txnwire.go; build=each makes a mutation and two copies a put, as
// Put did before txnalloc.go; codec=stated is internal/grpccodec,
// codec=grpc grpc-go's own.
func BenchmarkTxnPuts(b *testing.B) {
	codecs := map[string]encoding.CodecV2{"stated": grpccodec.Codec, "grpc": encoding.GetCodecV2("proto")}
	for _, n := range []int{1, 100, 1000} {
		for _, build := range []string{"wire", "blocks", "each"} {
			for _, codec := range []string{"stated", "grpc"} {
				b.Run(fmt.Sprintf("puts=%d/build=%s/codec=%s", n, build, codec), func(b *testing.B) {
					if build == "wire" && codec == "grpc" {
						b.Skip("grpc-go's codec cannot marshal a Txn in wire form")
					}
					var key [16]byte
					value := make([]byte, 100)
					b.ReportAllocs()
					for b.Loop() {
						txn := &Txn{}
						if build == "blocks" {
							txn.wireAt = math.MaxInt
						}
						for i := range n {
							binary.BigEndian.PutUint64(key[8:], uint64(i))
							if build != "each" {
								txn.Put("ns", key[:], value)
								continue
							}
							txn.add(&statedv1.Mutation{
								Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "ns",
								Key: bytes.Clone(key[:]), Value: bytes.Clone(value),
							})
						}
						var req any = &statedv1.CommitRequest{Mutations: txn.mutations}
						if txn.wire != nil {
							req = &grpccodec.WireCommit{Mutations: *txn.wire, Rest: &statedv1.CommitRequest{}}
						}
						data, err := codecs[codec].Marshal(req)
						if err != nil {
							b.Fatal(err)
						}
						data.Free()
						txn.releaseWire() // as Commit does
					}
				})
			}
		}
	}
}
