// Package grpccodec is the protobuf codec of stated's gRPC servers and
// clients: grpc-go's own ("proto"), with its message buffers taken from a
// pool that does not clear them and that has a size class at every power
// of two.
//
// grpc-go's default pool clears every buffer it hands out, whole, and its
// size classes jump from 32 KiB to 1 MiB: a 130 KB commit of 1000 puts is
// marshalled into a cleared 1 MiB buffer on the client, and joined from
// its HTTP/2 frames into another on the server. The clearing took 8.9% of
// a client's CPU and 2.6% of the daemon's under 1000-mutation commits
// (BENCHMARKS.md). Neither buffer needs it: a marshal writes every byte it
// returns, and a join copies every byte of the message.
//
// It decodes a CommitRequest itself, straight from the wire, into
// mutations from one block whose keys and values alias a copy of the
// message (commit.go), and marshals one to the bytes protobuf-go would
// write (commit_marshal.go); everything else, and every request of a
// shape they do not know, goes to protobuf-go.
//
// The wire format is grpc-go's own, so either side may run grpc-go's
// codec instead.
package grpccodec

import (
	"fmt"
	"math/bits"
	"sync"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// Codec is the protobuf codec. Install it with grpc.ForceServerCodecV2 on
// a server and grpc.ForceCodecV2 on a client's calls.
var Codec encoding.CodecV2 = codec{}

type codec struct{}

// Name is grpc-go's, so the content-subtype on the wire does not change.
func (codec) Name() string { return "proto" }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	if w, ok := v.(*WireCommit); ok {
		return marshalWire(w)
	}
	m := messageOf(v)
	if m == nil {
		return nil, fmt.Errorf("grpccodec: cannot marshal %T, not a proto.Message", v)
	}
	if req, ok := m.(*statedv1.CommitRequest); ok {
		if size, ok := commitSize(req); ok {
			return marshalled(v, size, func(b []byte) ([]byte, error) { return appendCommit(b, req), nil })
		}
	}
	// UseCachedSize needs the Size call just before it, on a message no
	// one changes meanwhile, as grpc-go's codec does.
	opts := proto.MarshalOptions{UseCachedSize: true}
	return marshalled(v, proto.Size(m), func(b []byte) ([]byte, error) { return opts.MarshalAppend(b, m) })
}

// marshalled is the size bytes that write appends, in a buffer of the
// pool's unless they are too few to pool.
func marshalled(v any, size int, write func([]byte) ([]byte, error)) (mem.BufferSlice, error) {
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := write(make([]byte, 0, size))
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := Pool.Get(size)
	b, err := write((*buf)[:0])
	if err != nil {
		Pool.Put(buf)
		return nil, err
	}
	if len(b) != size {
		// The message changed between its sizing and its marshal: the
		// caller changed it while it was being sent.
		Pool.Put(buf)
		return nil, fmt.Errorf("grpccodec: %T changed while it was marshalled (%d bytes, then %d)", v, size, len(b))
	}
	return mem.BufferSlice{mem.NewBuffer(buf, Pool)}, nil
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	m := messageOf(v)
	if m == nil {
		return fmt.Errorf("grpccodec: cannot unmarshal into %T, not a proto.Message", v)
	}
	if decode := commitDecoder(m); decode != nil {
		// The commits' decoders alias the bytes they decode: they must
		// be the request's own, not a pooled buffer (commit.go).
		b := make([]byte, data.Len())
		data.CopyTo(b)
		return unmarshalWith(decode, b, m)
	}
	buf := data.MaterializeToBuffer(Pool)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

func messageOf(v any) proto.Message {
	switch v := v.(type) {
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(v)
	case protoadapt.MessageV2:
		return v
	}
	return nil
}

// Pool is the codec's buffer pool: a sync.Pool for each power of two from
// 1 KiB to 64 MiB (minShift, maxShift), whose buffers come back as they
// were left.
// A buffer larger than 64 MiB is allocated for its use alone. Every
// user of a buffer from Get must write each byte it reads.
var Pool mem.BufferPool = newPool()

const (
	minShift = 10 // 1 KiB: grpc-go pools nothing smaller
	maxShift = 26 // 64 MiB, the daemon's default message limit
)

type pool struct {
	classes [maxShift - minShift + 1]sync.Pool
}

func newPool() *pool { return &pool{} }

// class is the index of the smallest class that holds n bytes, and false
// for sizes no class holds.
func class(n int) (int, bool) {
	if n <= 0 || n > 1<<maxShift {
		return 0, false
	}
	shift := max(bits.Len(uint(n-1)), minShift)
	return shift - minShift, true
}

func (p *pool) Get(n int) *[]byte {
	c, ok := class(n)
	if !ok {
		b := make([]byte, n)
		return &b
	}
	if v := p.classes[c].Get(); v != nil {
		b := v.(*[]byte)
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<(c+minShift))
	return &b
}

func (p *pool) Put(b *[]byte) {
	n := cap(*b)
	c, ok := class(n)
	if !ok || n != 1<<(c+minShift) {
		return // not one of ours: a class's buffers have its size exactly
	}
	p.classes[c].Put(b)
}
