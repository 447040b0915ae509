package grpccodec

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// marshalBoth marshals req with the codec and with proto.Marshal.
func marshalBoth(t *testing.T, req *statedv1.CommitRequest) (got, want []byte) {
	t.Helper()
	want, errWant := proto.Marshal(req)
	data, errGot := Codec.Marshal(req)
	if (errWant == nil) != (errGot == nil) {
		t.Fatalf("proto.Marshal: %v; the codec: %v", errWant, errGot)
	}
	if errGot == nil {
		got = data.Materialize()
		data.Free()
	}
	return got, want
}

func TestACommitIsMarshalledToTheBytesProtoMarshalWrites(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for i := range 500 {
		req := randomCommit(r)
		if i%50 == 0 {
			req.Mutations = append(req.Mutations, &statedv1.Mutation{Kind: -1, Delta: -5}) // negative enum and varint
			req.Offsets = append(req.Offsets, &statedv1.Offset{Partition: -3})
		}
		if _, ok := commitSize(req); !ok {
			t.Fatalf("request %d: commitSize left its own shape to proto.Marshal", i)
		}
		got, want := marshalBoth(t, req)
		if !bytes.Equal(got, want) {
			t.Fatalf("request %d: the codec wrote %d bytes unlike proto.Marshal's %d", i, len(got), len(want))
		}
	}
}

func TestACommitTheMarshalDoesNotKnowIsProtoMarshals(t *testing.T) {
	unknown := func(m proto.Message) proto.Message {
		m.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1))
		return m
	}
	for name, req := range map[string]*statedv1.CommitRequest{
		"window adds":                 {WindowAdds: []*statedv1.WindowAdd{{Namespace: "w", Key: []byte("k")}}},
		"watermark hints":             {WatermarkHints: []*statedv1.WatermarkHint{{Namespace: "w"}}},
		"acks":                        {Acks: []*statedv1.EmissionAck{{Namespace: "w"}}},
		"timers":                      {Timers: []*statedv1.TimerOp{{Namespace: "w"}}},
		"unknown fields":              unknown(&statedv1.CommitRequest{ClientId: "c"}).(*statedv1.CommitRequest),
		"a mutation's unknown fields": {Mutations: []*statedv1.Mutation{unknown(&statedv1.Mutation{Key: []byte("k")}).(*statedv1.Mutation)}},
		"an offset's unknown fields":  {Offsets: []*statedv1.Offset{unknown(&statedv1.Offset{Group: "g"}).(*statedv1.Offset)}},
		"a nil mutation":              {Mutations: []*statedv1.Mutation{{Key: []byte("k")}, nil}},
		"a nil offset":                {Offsets: []*statedv1.Offset{nil}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, ok := commitSize(req); ok {
				t.Fatal("commitSize took it")
			}
			got, want := marshalBoth(t, req)
			if !bytes.Equal(got, want) {
				t.Fatalf("the codec wrote %d bytes unlike proto.Marshal's %d", len(got), len(want))
			}
		})
	}
}

// TestAWireCommitIsMarshalledToTheBytesOfItsWholeRequest: a WireCommit
// (the SDK's large Txn, sdk/go/txnwire.go) is its mutations as
// AppendMutation writes them, then the rest of the request, which must be
// the bytes proto.Marshal writes for the whole request: on the codec's
// own path and, with window parts, on protobuf-go's.
func TestAWireCommitIsMarshalledToTheBytesOfItsWholeRequest(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for i := range 500 {
		req := randomCommit(r)
		if i%3 == 0 {
			req.WindowAdds = []*statedv1.WindowAdd{{Namespace: "w", Key: []byte("k"), EventTimeMs: int64(i)}}
		}
		want, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		var muts []byte
		for _, m := range req.Mutations {
			muts = AppendMutation(muts, m.Kind, m.Namespace, m.Key, m.SubKey, m.Value, m.Delta, m.TtlMillis)
		}
		rest := proto.Clone(req).(*statedv1.CommitRequest)
		rest.Mutations = nil
		data, err := Codec.Marshal(&WireCommit{Mutations: muts, Rest: rest})
		if err != nil {
			t.Fatal(err)
		}
		got := data.Materialize()
		data.Free()
		if !bytes.Equal(got, want) {
			t.Fatalf("request %d: the codec wrote %d bytes unlike proto.Marshal's %d", i, len(got), len(want))
		}
	}
	for name, w := range map[string]*WireCommit{
		"no rest":               {Mutations: []byte{0x0a, 0}},
		"mutations in the rest": {Rest: &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{Key: []byte("k")}}}},
	} {
		if _, err := Codec.Marshal(w); err == nil {
			t.Fatalf("%s: marshalled", name)
		}
	}
}

func BenchmarkMarshalCommit(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		req := commit(n)
		b.Run(fmt.Sprintf("puts=%d/encode=wire", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				data, err := Codec.Marshal(req)
				if err != nil {
					b.Fatal(err)
				}
				data.Free()
			}
		})
		b.Run(fmt.Sprintf("puts=%d/encode=proto", n), func(b *testing.B) {
			b.ReportAllocs()
			opts := proto.MarshalOptions{UseCachedSize: true}
			for b.Loop() {
				buf := Pool.Get(proto.Size(req))
				if _, err := opts.MarshalAppend((*buf)[:0], req); err != nil {
					b.Fatal(err)
				}
				Pool.Put(buf)
			}
		})
	}
}
