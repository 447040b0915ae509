package grpccodec

import (
	"errors"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// The SDK's twin of decodeCommit: protobuf-go marshals a CommitRequest by
// reflection, mutation by mutation (11.9% of a client's CPU under
// 1000-put commits, BENCHMARKS.md). commitSize and appendCommit write the
// same bytes as proto.Marshal, field by field in number order with zero
// values left out, for a request of mutations, offsets and session fields
// only; commitSize reports false for any other (window parts, unknown
// fields, a nil mutation or offset), which proto.Marshal writes.

// commitSize is the size of req on the wire, and whether appendCommit
// writes it.
func commitSize(req *statedv1.CommitRequest) (int, bool) {
	if len(req.WindowAdds)+len(req.WatermarkHints)+len(req.Acks)+len(req.Timers) > 0 || len(req.ProtoReflect().GetUnknown()) > 0 {
		return 0, false
	}
	n := 0
	for _, m := range req.Mutations {
		if m == nil || len(m.ProtoReflect().GetUnknown()) > 0 {
			return 0, false
		}
		n += 1 + protowire.SizeBytes(mutationSize(m))
	}
	for _, o := range req.Offsets {
		if o == nil || len(o.ProtoReflect().GetUnknown()) > 0 {
			return 0, false
		}
		n += 1 + protowire.SizeBytes(offsetSize(o))
	}
	n += stringSize(req.ClientId) + varintSize(req.Sequence) + varintSize(req.SessionId) + varintSize(uint64(req.Lane))
	return n, true
}

// appendCommit appends req's wire form to b; commitSize must have
// reported true for it.
func appendCommit(b []byte, req *statedv1.CommitRequest) []byte {
	for _, m := range req.Mutations {
		b = AppendMutation(b, m.Kind, m.Namespace, m.Key, m.SubKey, m.Value, m.Delta, m.TtlMillis)
	}
	for _, o := range req.Offsets {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(offsetSize(o)))
		b = appendString(b, 1, o.Group)
		b = appendString(b, 2, o.Topic)
		b = appendVarint(b, 3, uint64(int64(o.Partition)))
		b = appendVarint(b, 4, uint64(o.Offset))
		b = appendVarint(b, 5, o.Epoch)
	}
	b = appendString(b, 3, req.ClientId)
	b = appendVarint(b, 4, req.Sequence)
	b = appendVarint(b, 5, req.SessionId)
	return appendVarint(b, 6, uint64(req.Lane))
}

// AppendMutation appends to b the mutation of these fields as an element
// of a CommitRequest's mutations (field 1, length-prefixed), the bytes
// proto.Marshal writes for it: the SDK's Txn builds a large commit's
// mutations with it as they are added (sdk/go/txnwire.go), and
// appendCommit marshals a request's with it.
func AppendMutation(b []byte, kind statedv1.MutationKind, ns string, key, subKey, value []byte, delta, ttlMillis int64) []byte {
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(mutationFieldsSize(kind, ns, key, subKey, value, delta, ttlMillis)))
	b = appendVarint(b, 1, uint64(int64(kind)))
	b = appendString(b, 2, ns)
	b = appendBytes(b, 3, key)
	b = appendBytes(b, 4, subKey)
	b = appendBytes(b, 5, value)
	b = appendVarint(b, 6, uint64(delta))
	return appendVarint(b, 7, uint64(ttlMillis))
}

func mutationSize(m *statedv1.Mutation) int {
	return mutationFieldsSize(m.Kind, m.Namespace, m.Key, m.SubKey, m.Value, m.Delta, m.TtlMillis)
}

func mutationFieldsSize(kind statedv1.MutationKind, ns string, key, subKey, value []byte, delta, ttlMillis int64) int {
	return varintSize(uint64(int64(kind))) + stringSize(ns) + bytesSize(key) + bytesSize(subKey) +
		bytesSize(value) + varintSize(uint64(delta)) + varintSize(uint64(ttlMillis))
}

// WireCommit is a CommitRequest whose mutations are already in wire form:
// Mutations holds them as AppendMutation writes them, in order, and Rest
// everything else (Rest.Mutations must be empty). The codec marshals it to
// the bytes proto.Marshal writes for the whole request, since field 1
// comes first: Mutations, then Rest's fields. It is only ever sent.
type WireCommit struct {
	Mutations []byte
	Rest      *statedv1.CommitRequest
}

// marshalWire marshals w (see WireCommit).
func marshalWire(w *WireCommit) (mem.BufferSlice, error) {
	if w.Rest == nil || len(w.Rest.Mutations) > 0 {
		return nil, errors.New("grpccodec: a WireCommit needs a Rest without mutations")
	}
	rest, fast := commitSize(w.Rest)
	if !fast {
		rest = proto.Size(w.Rest)
	}
	opts := proto.MarshalOptions{UseCachedSize: true}
	return marshalled(w, len(w.Mutations)+rest, func(b []byte) ([]byte, error) {
		b = append(b, w.Mutations...)
		if fast {
			return appendCommit(b, w.Rest), nil
		}
		return opts.MarshalAppend(b, w.Rest)
	})
}

func offsetSize(o *statedv1.Offset) int {
	return stringSize(o.Group) + stringSize(o.Topic) + varintSize(uint64(int64(o.Partition))) +
		varintSize(uint64(o.Offset)) + varintSize(o.Epoch)
}

// The sizes and appends of a field of number below 16 (a one-byte tag),
// left out when zero, as proto3's implicit presence has it.

func varintSize(v uint64) int {
	if v == 0 {
		return 0
	}
	return 1 + protowire.SizeVarint(v)
}

func bytesSize(v []byte) int {
	if len(v) == 0 {
		return 0
	}
	return 1 + protowire.SizeBytes(len(v))
}

func stringSize(v string) int {
	if v == "" {
		return 0
	}
	return 1 + protowire.SizeBytes(len(v))
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
}

func appendString(b []byte, num protowire.Number, v string) []byte {
	if v == "" {
		return b
	}
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), v)
}
