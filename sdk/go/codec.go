package stated

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/proto"
)

// Codec turns values of type T into bytes and back, for the typed handles
// (Value, Map, List). Implementations must be safe for concurrent use, and
// Decode must accept every output of Encode.
type Codec[T any] interface {
	Encode(v T) ([]byte, error)
	Decode(b []byte) (T, error)
}

// Bytes returns the identity codec for raw bytes.
func Bytes() Codec[[]byte] { return bytesCodec{} }

type bytesCodec struct{}

func (bytesCodec) Encode(v []byte) ([]byte, error) { return v, nil }
func (bytesCodec) Decode(b []byte) ([]byte, error) { return b, nil }

// String returns a codec that stores a string as its bytes.
func String() Codec[string] { return stringCodec{} }

type stringCodec struct{}

func (stringCodec) Encode(v string) ([]byte, error) { return []byte(v), nil }
func (stringCodec) Decode(b []byte) (string, error) { return string(b), nil }

// Int64 returns a codec that stores an int64 as 8 bytes big-endian.
func Int64() Codec[int64] { return int64Codec{} }

type int64Codec struct{}

func (int64Codec) Encode(v int64) ([]byte, error) {
	return binary.BigEndian.AppendUint64(nil, uint64(v)), nil
}

func (int64Codec) Decode(b []byte) (int64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("int64: %d bytes, want 8", len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

// JSON returns a codec that stores values as JSON with encoding/json.
func JSON[T any]() Codec[T] { return jsonCodec[T]{} }

type jsonCodec[T any] struct{}

func (jsonCodec[T]) Encode(v T) ([]byte, error) { return json.Marshal(v) }

func (jsonCodec[T]) Decode(b []byte) (T, error) {
	var v T
	err := json.Unmarshal(b, &v)
	return v, err
}

// Proto returns a codec for a generated protobuf message type, used through
// pointers. Name the message type, not the pointer:
//
//	offsets := stated.NewValue(c, "checkpoints", stated.Proto[statedv1.Offset]())
//	// offsets is a *stated.Value[*statedv1.Offset]
//
// Encoding is deterministic, so equal messages are stored as equal bytes.
func Proto[T any, PT interface {
	*T
	proto.Message
}]() Codec[PT] {
	return protoCodec[T, PT]{}
}

type protoCodec[T any, PT interface {
	*T
	proto.Message
}] struct{}

func (protoCodec[T, PT]) Encode(v PT) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(v)
}

func (protoCodec[T, PT]) Decode(b []byte) (PT, error) {
	v := PT(new(T))
	if err := proto.Unmarshal(b, v); err != nil {
		return nil, err
	}
	return v, nil
}
