package grpccodec

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"unsafe"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// randomCommit is a CommitRequest of the shape decodeCommit decodes
// itself: mutations of every kind and field, offsets, session fields,
// with empty and extreme values among them.
func randomCommit(r *rand.Rand) *statedv1.CommitRequest {
	pick := func(vals ...[]byte) []byte { return vals[r.IntN(len(vals))] }
	req := &statedv1.CommitRequest{
		ClientId: []string{"", "c-1", "ünïcode"}[r.IntN(3)],
		Sequence: r.Uint64(), SessionId: uint64(r.IntN(3)), Lane: r.Uint32(),
	}
	for range r.IntN(40) {
		req.Mutations = append(req.Mutations, &statedv1.Mutation{
			Kind:      statedv1.MutationKind(r.IntN(9)),
			Namespace: []string{"ns", "ns", "other", "", "名前"}[r.IntN(5)],
			Key:       pick(nil, []byte{0}, fmt.Appendf(nil, "k%d", r.IntN(1000))),
			SubKey:    pick(nil, []byte("sub")),
			Value:     pick(nil, bytes.Repeat([]byte{byte(r.IntN(256))}, r.IntN(300))),
			Delta:     []int64{0, -1, 1 << 62, -1 << 63}[r.IntN(4)],
			TtlMillis: int64(r.IntN(2)) * 60_000,
		})
	}
	for range r.IntN(3) {
		req.Offsets = append(req.Offsets, &statedv1.Offset{
			Group: "g", Topic: []string{"t", ""}[r.IntN(2)], Partition: int32(r.IntN(5)) - 1,
			Offset: r.Int64(), Epoch: uint64(r.IntN(4)),
		})
	}
	return req
}

// sameAsProto decodes wire as a CommitRequest with proto.Unmarshal and
// with unmarshalWith, and fails unless both fail or both give the same
// message; sameAsProtoAs does so for a message like m.
func sameAsProto(t testing.TB, wire []byte) {
	t.Helper()
	sameAsProtoAs(t, wire, &statedv1.CommitRequest{})
}

func sameAsProtoAs(t testing.TB, wire []byte, m proto.Message) {
	t.Helper()
	want, got := m.ProtoReflect().New().Interface(), m.ProtoReflect().New().Interface()
	errWant := proto.Unmarshal(wire, want)
	decode := commitDecoder(got)
	if decode == nil {
		t.Fatalf("no commit decoder for a %T", m)
	}
	errGot := unmarshalWith(decode, bytes.Clone(wire), got)
	if (errWant == nil) != (errGot == nil) {
		t.Fatalf("%T: proto.Unmarshal: %v; unmarshalWith: %v", m, errWant, errGot)
	}
	if errWant == nil && !proto.Equal(want, got) {
		t.Fatalf("unmarshalWith decoded\n%v\nproto.Unmarshal\n%v", got, want)
	}
}

func TestACommitIsDecodedFromTheWireAsProtoUnmarshalDecodesIt(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		req := randomCommit(r)
		wire, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		// The shape is decodeCommit's own: it must not hand it to
		// proto.Unmarshal, or it saves nothing.
		var got statedv1.CommitRequest
		if !decodeCommit(bytes.Clone(wire), &got) {
			t.Fatalf("request %d: decodeCommit left its own shape to proto.Unmarshal", i)
		}
		if !proto.Equal(&got, req) {
			t.Fatalf("request %d: decoded\n%v\nsent\n%v", i, &got, req)
		}
		sameAsProto(t, wire)
	}
}

func TestACommitDecodeTheCodecDoesNotKnowIsProtoUnmarshals(t *testing.T) {
	base, err := proto.Marshal(&statedv1.CommitRequest{ClientId: "c", Mutations: []*statedv1.Mutation{{Namespace: "ns", Key: []byte("k")}}})
	if err != nil {
		t.Fatal(err)
	}
	mutation := func(fields ...[]byte) []byte {
		b := protowire.AppendTag(nil, 1, protowire.BytesType)
		return protowire.AppendBytes(b, bytes.Join(fields, nil))
	}
	offset := func(fields ...[]byte) []byte {
		b := protowire.AppendTag(nil, 2, protowire.BytesType)
		return protowire.AppendBytes(b, bytes.Join(fields, nil))
	}
	varint := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
	}
	str := func(num protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
	}
	windowAdd, err := proto.Marshal(&statedv1.CommitRequest{WindowAdds: []*statedv1.WindowAdd{{Namespace: "w", Key: []byte("k")}}})
	if err != nil {
		t.Fatal(err)
	}
	with := func(parts ...[]byte) []byte { return bytes.Join(append([][]byte{base}, parts...), nil) }
	for name, wire := range map[string][]byte{
		"window parts":                         with(windowAdd),
		"an unknown field":                     with(varint(99, 7)),
		"an unknown varint in a mutation":      with(mutation(str(2, "ns"), varint(42, 1))),
		"an unknown bytes field in a mutation": with(mutation(str(2, "ns"), str(42, "x"))),
		"an unknown varint in an offset":       with(offset(str(1, "g"), varint(9, 1))),
		"an unknown bytes field in an offset":  with(offset(str(1, "g"), str(9, "x"))),
		"mutations as a varint":                with(varint(1, 3)),
		"a key as a varint":                    with(mutation(varint(3, 5))),
		"a kind as bytes":                      with(mutation(str(1, "x"))),
		"a sequence as bytes":                  with(str(4, "x")),
		"fields repeated, the last wins":       with(str(3, "second"), mutation(varint(1, 2), varint(1, 3), str(2, "a"), str(2, "b"))),
		"fields out of order":                  bytes.Join([][]byte{varint(4, 9), mutation(str(5, "v"), str(3, "k"), varint(1, 1)), str(3, "c")}, nil),
		"strings of bad UTF-8, as protobuf-go": with(mutation(str(2, "\xff\xfe")), str(3, "\xc3"), offset(str(2, "\xff"))),
		"a truncated mutation":                 append(bytes.Clone(base), protowire.AppendTag(nil, 1, protowire.BytesType)[0], 50, 1, 2),
		"a truncated varint":                   append(bytes.Clone(base), 0x20, 0xff),
		"a negative kind, a 10-byte varint":    with(mutation(varint(1, ^uint64(0)))),
		"a group":                              with(protowire.AppendTag(nil, 11, protowire.StartGroupType)),
		// Eight bytes that read as four varint fields if taken for one.
		"a sequence as a fixed64": with(protowire.AppendFixed64(protowire.AppendTag(nil, 4, protowire.Fixed64Type),
			binary.LittleEndian.Uint64([]byte{0x09, 0x28, 0x87, 0x01, 0x30, 0x01, 0x20, 0x05}))),
		"a delta as a fixed32": with(mutation(protowire.AppendFixed32(protowire.AppendTag(nil, 6, protowire.Fixed32Type), 9))),
		"empty":                nil,
		"a lane past 32 bits":  with(varint(6, 1<<40|5)),
	} {
		t.Run(name, func(t *testing.T) { sameAsProto(t, wire) })
	}
}

func TestABatchAndAStreamRequestAreDecodedAsProtoUnmarshalDecodesThem(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 100 {
		batch := &statedv1.CommitBatchRequest{}
		for range r.IntN(5) {
			batch.Commits = append(batch.Commits, randomCommit(r))
		}
		stream := &statedv1.CommitStreamRequest{Id: r.Uint64(), TimeoutMicros: int64(r.IntN(3)) - 1}
		if r.IntN(4) > 0 {
			stream.Batch = batch
		}
		for _, m := range []proto.Message{batch, stream} {
			wire, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			got := m.ProtoReflect().New().Interface()
			var ok bool
			switch got := got.(type) {
			case *statedv1.CommitBatchRequest:
				ok = decodeBatch(bytes.Clone(wire), got)
			case *statedv1.CommitStreamRequest:
				ok = decodeStream(bytes.Clone(wire), got)
			}
			if !ok {
				t.Fatalf("request %d: %T of its own shape left to proto.Unmarshal", i, m)
			}
			if !proto.Equal(got, m) {
				t.Fatalf("request %d: decoded\n%v\nsent\n%v", i, got, m)
			}
			sameAsProtoAs(t, wire, m)
		}
	}
	// What the stream's decoder leaves to protobuf-go, or must decode
	// as it does.
	one, err := proto.Marshal(&statedv1.CommitStreamRequest{Id: 1, Batch: &statedv1.CommitBatchRequest{Commits: []*statedv1.CommitRequest{{ClientId: "a"}}}})
	if err != nil {
		t.Fatal(err)
	}
	two, err := proto.Marshal(&statedv1.CommitStreamRequest{Id: 2, Batch: &statedv1.CommitBatchRequest{Commits: []*statedv1.CommitRequest{{ClientId: "b"}}}})
	if err != nil {
		t.Fatal(err)
	}
	withWindow, err := proto.Marshal(&statedv1.CommitStreamRequest{Batch: &statedv1.CommitBatchRequest{Commits: []*statedv1.CommitRequest{{WindowAdds: []*statedv1.WindowAdd{{Namespace: "w"}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	for name, wire := range map[string][]byte{
		"two requests' fields, merged":  append(bytes.Clone(one), two...),
		"a commit with window parts":    withWindow,
		"an unknown field":              protowire.AppendVarint(protowire.AppendTag(bytes.Clone(one), 9, protowire.VarintType), 1),
		"an empty batch":                protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), nil),
		"a truncated batch":             append(protowire.AppendTag(nil, 3, protowire.BytesType), 9, 1),
		"a batch's commits as a varint": protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 4)),
	} {
		t.Run(name, func(t *testing.T) { sameAsProtoAs(t, wire, &statedv1.CommitStreamRequest{}) })
	}
}

func TestTheCodecDecodesACommitInFramesIntoBytesOfItsOwn(t *testing.T) {
	req := commit(2000)
	wire, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	frames := inFrames(wire)
	var got statedv1.CommitRequest
	if err := Codec.Unmarshal(frames, &got); err != nil {
		t.Fatal(err)
	}
	// gRPC reuses its frames' buffers once Unmarshal returns.
	for _, f := range frames {
		clear(f.ReadOnlyData())
	}
	if !proto.Equal(&got, req) {
		t.Fatal("the request changed when the frames it came in were reused")
	}
	// An append to a key or value must not reach the next one.
	for i, m := range got.Mutations {
		if cap(m.Key) != len(m.Key) || cap(m.Value) != len(m.Value) {
			t.Fatalf("mutation %d: its key or value has room past it", i)
		}
	}
	// And it went through decodeCommit, not protobuf-go: its mutations
	// are one block's.
	for i := 1; i < len(got.Mutations); i++ {
		if d := uintptr(unsafe.Pointer(got.Mutations[i])) - uintptr(unsafe.Pointer(got.Mutations[i-1])); d != unsafe.Sizeof(statedv1.Mutation{}) {
			t.Fatalf("mutations %d and %d are %d bytes apart: not one block's", i-1, i, d)
		}
	}
}

func FuzzDecodeCommitIsProtoUnmarshal(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		wire, err := proto.Marshal(randomCommit(r))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(wire)
	}
	f.Fuzz(func(t *testing.T, wire []byte) { sameAsProto(t, wire) })
}

func BenchmarkDecodeCommit(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		wire, err := proto.Marshal(commit(n))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("puts=%d/decode=wire", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var req statedv1.CommitRequest
				if err := Codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &req); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("puts=%d/decode=proto", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var req statedv1.CommitRequest
				if err := proto.Unmarshal(wire, &req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
