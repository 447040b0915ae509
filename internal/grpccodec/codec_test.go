package grpccodec

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// commit returns a CommitRequest of n puts whose bytes differ by put, so
// that a stale byte left in a buffer shows.
func commit(n int) *statedv1.CommitRequest {
	req := &statedv1.CommitRequest{ClientId: "c", Sequence: 7}
	for i := range n {
		v := bytes.Repeat([]byte{byte(i)}, 100)
		req.Mutations = append(req.Mutations, &statedv1.Mutation{
			Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "ns",
			Key: fmt.Appendf(nil, "key-%08d", i), Value: v,
		})
	}
	return req
}

// dirtyThePool leaves a buffer of every class in the pool filled with
// 0xff, as a message that used it before would.
func dirtyThePool() {
	for shift := minShift; shift <= 22; shift++ {
		b := Pool.Get(1 << shift)
		for i := range *b {
			(*b)[i] = 0xff
		}
		Pool.Put(b)
	}
}

// sizes are messages around the pool's classes: below grpc-go's pooling
// threshold, in the first classes, and across many 16 KiB HTTP/2 frames.
var sizes = []int{0, 1, 8, 9, 100, 1000, 9000}

func TestAMarshalInADirtyBufferIsProtoMarshal(t *testing.T) {
	for _, n := range sizes {
		req := commit(n)
		want, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		dirtyThePool()
		got, err := Codec.Marshal(req)
		if err != nil {
			t.Fatalf("%d puts: Marshal: %v", n, err)
		}
		if b := got.Materialize(); !bytes.Equal(b, want) {
			t.Fatalf("%d puts: Marshal wrote %d bytes unlike proto.Marshal's %d", n, len(b), len(want))
		}
		got.Free()
	}
}

func TestAnUnmarshalOfAMessageInFramesIsProtoUnmarshal(t *testing.T) {
	for _, n := range sizes {
		req := commit(n)
		wire, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		frames := inFrames(wire)
		dirtyThePool()
		var got statedv1.CommitRequest
		if err := Codec.Unmarshal(frames, &got); err != nil {
			t.Fatalf("%d puts: Unmarshal: %v", n, err)
		}
		if !proto.Equal(&got, req) {
			t.Fatalf("%d puts: Unmarshal read a message unlike the one sent", n)
		}
	}
}

// inFrames is wire as gRPC's transport hands a message over: in frames of
// at most 16 KiB, each its own buffer.
func inFrames(wire []byte) mem.BufferSlice {
	var frames mem.BufferSlice
	for rest := wire; len(rest) > 0; {
		k := min(len(rest), 16<<10)
		frames = append(frames, mem.SliceBuffer(bytes.Clone(rest[:k])))
		rest = rest[k:]
	}
	return frames
}

func TestTheCodecRefusesWhatIsNotAProtoMessage(t *testing.T) {
	if _, err := Codec.Marshal(struct{}{}); err == nil {
		t.Fatal("Marshal of a struct{}: no error")
	}
	if err := Codec.Unmarshal(nil, new(int)); err == nil {
		t.Fatal("Unmarshal into an *int: no error")
	}
}

func TestAPoolBufferIsOfItsClassAndTheLengthAsked(t *testing.T) {
	for _, tc := range []struct{ n, cap int }{
		{1, 1 << 10}, {1024, 1 << 10}, {1025, 2 << 10}, {130_000, 128 << 10}, {131_073, 256 << 10},
		{1 << 20, 1 << 20}, {1<<20 + 1, 2 << 20}, {1 << maxShift, 1 << maxShift},
		{1<<maxShift + 1, 1<<maxShift + 1}, // past the last class: its own
	} {
		b := Pool.Get(tc.n)
		if len(*b) != tc.n || cap(*b) != tc.cap {
			t.Errorf("Get(%d): len %d cap %d, want len %d cap %d", tc.n, len(*b), cap(*b), tc.n, tc.cap)
		}
		Pool.Put(b)
	}
	// A buffer whose capacity is not a class's size is not kept: a
	// later Get of its class must not get a buffer too small for it.
	odd := make([]byte, 3000)
	Pool.Put(&odd)
	for range 100 {
		if b := Pool.Get(4096); cap(*b) != 4096 {
			t.Fatalf("Get(4096) after a Put of a 3000-byte buffer: cap %d", cap(*b))
		}
	}
}

// echo is a State server whose Commit answers with the size of the
// request it decoded, and whose Get answers with a value of the size
// asked, so that both directions carry large messages.
type echo struct {
	statedv1.UnimplementedStateServer
	got chan *statedv1.CommitRequest
}

func (e *echo) Commit(_ context.Context, req *statedv1.CommitRequest) (*statedv1.CommitResponse, error) {
	e.got <- req
	return &statedv1.CommitResponse{Index: uint64(proto.Size(req))}, nil
}

func (e *echo) Get(_ context.Context, req *statedv1.GetRequest) (*statedv1.GetResponse, error) {
	var n int
	fmt.Sscan(string(req.GetKey()), &n)
	return &statedv1.GetResponse{Found: true, Value: bytes.Repeat([]byte{0xa5}, n)}, nil
}

func TestMessagesCrossARealConnectionIntactBothWays(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(Codec))
	e := &echo{got: make(chan *statedv1.CommitRequest, 1)}
	statedv1.RegisterStateServer(srv, e)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(Codec)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := statedv1.NewStateClient(conn)
	ctx := context.Background()
	for round := range 3 { // later rounds reuse the pool's buffers
		for _, n := range sizes {
			req := commit(n)
			resp, err := c.Commit(ctx, req)
			if err != nil {
				t.Fatalf("round %d, %d puts: Commit: %v", round, n, err)
			}
			if got := <-e.got; !proto.Equal(got, req) {
				t.Fatalf("round %d, %d puts: the server decoded another request", round, n)
			}
			if resp.GetIndex() != uint64(proto.Size(req)) {
				t.Fatalf("round %d, %d puts: answer %d, want %d", round, n, resp.GetIndex(), proto.Size(req))
			}
		}
		for _, n := range []int{0, 5000, 300_000, 3 << 20} {
			resp, err := c.Get(ctx, &statedv1.GetRequest{Key: fmt.Append(nil, n)})
			if err != nil {
				t.Fatalf("round %d, Get of %d bytes: %v", round, n, err)
			}
			if !bytes.Equal(resp.GetValue(), bytes.Repeat([]byte{0xa5}, n)) {
				t.Fatalf("round %d, Get of %d bytes: the client decoded %d other bytes", round, n, len(resp.GetValue()))
			}
		}
	}
}
