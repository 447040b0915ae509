package grpccodec

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// A CommitRequest is the one message whose decoding shows in the daemon's
// profile: protobuf-go decodes it by reflection, with an allocation for
// each mutation and for each of its keys and values (4,012 for 1000 puts),
// 13.5% of the daemon's CPU under 1000-put commits (BENCHMARKS.md).
// decodeCommit decodes the common shape of one, its mutations, offsets and
// session fields, straight from the wire: the mutations from one block,
// their keys and values aliasing the buffer it is given, which the caller
// must never change or reuse. Anything else (window parts, a field it does
// not know, a wire type it does not expect, a truncated field) makes it
// report false, and the caller decodes with proto.Unmarshal, which gives
// the same message or the error. A field repeated on the wire is decoded
// as protobuf-go does: the last value wins. Strings are taken as they
// come, as protobuf-go takes them here: stated.proto turns its UTF-8
// validation off (the daemon checks names itself).
func decodeCommit(b []byte, req *statedv1.CommitRequest) bool {
	// Count the mutations first, for one block of them.
	n := 0
	for rest := b; len(rest) > 0; {
		num, typ, k := protowire.ConsumeTag(rest)
		if k < 0 {
			return false
		}
		k2 := protowire.ConsumeFieldValue(num, typ, rest[k:])
		if k2 < 0 {
			return false
		}
		if num == 1 {
			n++
		}
		rest = rest[k+k2:]
	}
	if n > 0 {
		req.Mutations = make([]*statedv1.Mutation, 0, n)
	}
	block := make([]statedv1.Mutation, n)
	var ns string // the last namespace decoded: commits mostly write one
	return fields(b, func(num protowire.Number, v []byte) bool {
		switch num {
		case 1:
			m := &block[len(req.Mutations)]
			if !fields(v, func(num protowire.Number, v []byte) bool { return mutationBytes(num, v, m, &ns) },
				func(num protowire.Number, v uint64) bool { return mutationVarint(num, v, m) }) {
				return false
			}
			req.Mutations = append(req.Mutations, m)
		case 2:
			o := new(statedv1.Offset)
			if !fields(v, func(num protowire.Number, v []byte) bool { return offsetBytes(num, v, o) },
				func(num protowire.Number, v uint64) bool { return offsetVarint(num, v, o) }) {
				return false
			}
			req.Offsets = append(req.Offsets, o)
		case 3:
			req.ClientId = string(v)
		default:
			return false
		}
		return true
	}, func(num protowire.Number, v uint64) bool {
		switch num {
		case 4:
			req.Sequence = v
		case 5:
			req.SessionId = v
		case 6:
			req.Lane = uint32(v)
		default:
			return false
		}
		return true
	})
}

func mutationBytes(num protowire.Number, v []byte, m *statedv1.Mutation, ns *string) bool {
	v = v[:len(v):len(v)]
	switch num {
	case 2:
		if string(v) != *ns {
			*ns = string(v)
		}
		m.Namespace = *ns
	case 3:
		m.Key = v
	case 4:
		m.SubKey = v
	case 5:
		m.Value = v
	default:
		return false
	}
	return true
}

func mutationVarint(num protowire.Number, v uint64, m *statedv1.Mutation) bool {
	switch num {
	case 1:
		m.Kind = statedv1.MutationKind(int32(v))
	case 6:
		m.Delta = int64(v)
	case 7:
		m.TtlMillis = int64(v)
	default:
		return false
	}
	return true
}

func offsetBytes(num protowire.Number, v []byte, o *statedv1.Offset) bool {
	switch num {
	case 1:
		o.Group = string(v)
	case 2:
		o.Topic = string(v)
	default:
		return false
	}
	return true
}

func offsetVarint(num protowire.Number, v uint64, o *statedv1.Offset) bool {
	switch num {
	case 3:
		o.Partition = int32(v)
	case 4:
		o.Offset = int64(v)
	case 5:
		o.Epoch = v
	default:
		return false
	}
	return true
}

// decodeBatch decodes a CommitBatchRequest (the SDK's coalesced commits)
// as decodeCommit does each of its commits.
func decodeBatch(b []byte, batch *statedv1.CommitBatchRequest) bool {
	return fields(b, func(num protowire.Number, v []byte) bool {
		c := new(statedv1.CommitRequest)
		if num != 1 || !decodeCommit(v, c) {
			return false
		}
		batch.Commits = append(batch.Commits, c)
		return true
	}, noVarint)
}

// decodeStream decodes a CommitStreamRequest as decodeBatch does its
// batch. A batch repeated on the wire is merged, as protobuf-go merges a
// message field: its commits are appended.
func decodeStream(b []byte, req *statedv1.CommitStreamRequest) bool {
	return fields(b, func(num protowire.Number, v []byte) bool {
		if num != 3 {
			return false
		}
		if req.Batch == nil {
			req.Batch = new(statedv1.CommitBatchRequest)
		}
		return decodeBatch(v, req.Batch)
	}, func(num protowire.Number, v uint64) bool {
		switch num {
		case 1:
			req.Id = v
		case 2:
			req.TimeoutMicros = int64(v)
		default:
			return false
		}
		return true
	})
}

// fields walks the fields of the message b, calling bytesField with each
// length-delimited one and varintField with each varint, and reports false
// as soon as one of them does, at any other wire type, or at a malformed
// field.
func fields(b []byte, bytesField func(protowire.Number, []byte) bool, varintField func(protowire.Number, uint64) bool) bool {
	for len(b) > 0 {
		num, typ, k := protowire.ConsumeTag(b)
		if k < 0 {
			return false
		}
		b = b[k:]
		switch typ {
		case protowire.BytesType:
			v, k := protowire.ConsumeBytes(b)
			if k < 0 || !bytesField(num, v) {
				return false
			}
			b = b[k:]
		case protowire.VarintType:
			v, k := protowire.ConsumeVarint(b)
			if k < 0 || !varintField(num, v) {
				return false
			}
			b = b[k:]
		default:
			return false
		}
	}
	return true
}

func noVarint(protowire.Number, uint64) bool { return false }

// commitDecoder returns the decoder for m, a CommitRequest,
// CommitBatchRequest or CommitStreamRequest (decodeCommit, decodeBatch or
// decodeStream), and nil for any other message.
func commitDecoder(m proto.Message) func(b []byte) bool {
	switch m := m.(type) {
	case *statedv1.CommitRequest:
		return func(b []byte) bool { return decodeCommit(b, m) }
	case *statedv1.CommitBatchRequest:
		return func(b []byte) bool { return decodeBatch(b, m) }
	case *statedv1.CommitStreamRequest:
		return func(b []byte) bool { return decodeStream(b, m) }
	}
	return nil
}

// unmarshalWith decodes b, which decode may alias, into m with decode (m's
// commitDecoder), or with proto.Unmarshal where decode declines.
func unmarshalWith(decode func([]byte) bool, b []byte, m proto.Message) error {
	proto.Reset(m)
	if decode(b) {
		return nil
	}
	proto.Reset(m) // as proto.Unmarshal does: no merge
	return proto.Unmarshal(b, m)
}
