package stated

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"google.golang.org/protobuf/proto"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

type order struct {
	ID    string   `json:"id"`
	Cents int64    `json:"cents"`
	Tags  []string `json:"tags"`
}

// roundTrip encodes v with c and decodes the result.
func roundTrip[T any](t *testing.T, c Codec[T], v T) T {
	t.Helper()
	b, err := c.Encode(v)
	if err != nil {
		t.Fatalf("Encode(%v): %v", v, err)
	}
	got, err := c.Decode(b)
	if err != nil {
		t.Fatalf("Decode(%x): %v", b, err)
	}
	return got
}

func TestCodecsRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"bytes", func(t *testing.T) {
			for _, v := range [][]byte{{}, {0, 1, 0xff}, bytes.Repeat([]byte("x"), 1<<16)} {
				if got := roundTrip(t, Bytes(), v); !bytes.Equal(got, v) {
					t.Errorf("got %x, want %x", got, v)
				}
			}
		}},
		{"string", func(t *testing.T) {
			for _, v := range []string{"", "héllo", "\x00\xff not utf-8"} {
				if got := roundTrip(t, String(), v); got != v {
					t.Errorf("got %q, want %q", got, v)
				}
			}
		}},
		{"int64", func(t *testing.T) {
			for _, v := range []int64{0, 1, -1, math.MaxInt64, math.MinInt64} {
				if got := roundTrip(t, Int64(), v); got != v {
					t.Errorf("got %d, want %d", got, v)
				}
			}
		}},
		{"json struct", func(t *testing.T) {
			v := order{ID: "o-1", Cents: 1250, Tags: []string{"a", "b"}}
			got := roundTrip(t, JSON[order](), v)
			if got.ID != v.ID || got.Cents != v.Cents || len(got.Tags) != 2 || got.Tags[1] != "b" {
				t.Errorf("got %+v, want %+v", got, v)
			}
		}},
		{"json map", func(t *testing.T) {
			got := roundTrip(t, JSON[map[string]int](), map[string]int{"a": 1})
			if got["a"] != 1 || len(got) != 1 {
				t.Errorf("got %v", got)
			}
		}},
		{"proto", func(t *testing.T) {
			v := &statedv1.Offset{Group: "g", Topic: "orders", Partition: 3, Offset: 42}
			if got := roundTrip(t, Proto[statedv1.Offset](), v); !proto.Equal(got, v) {
				t.Errorf("got %v, want %v", got, v)
			}
		}},
		{"proto empty message", func(t *testing.T) {
			if got := roundTrip(t, Proto[statedv1.Offset](), &statedv1.Offset{}); got == nil || !proto.Equal(got, &statedv1.Offset{}) {
				t.Errorf("got %v, want an empty message", got)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.run)
	}
}

func TestInt64CodecEncodesBigEndianSoOrderIsPreservedForNonNegatives(t *testing.T) {
	b, _ := Int64().Encode(0x0102030405060708)
	if want := []byte{1, 2, 3, 4, 5, 6, 7, 8}; !bytes.Equal(b, want) {
		t.Fatalf("Encode = %x, want %x", b, want)
	}
}

func TestCodecsRefuseMalformedInput(t *testing.T) {
	if _, err := Int64().Decode([]byte{1, 2, 3}); err == nil {
		t.Error("Int64 decoded 3 bytes")
	}
	if _, err := JSON[order]().Decode([]byte("{not json")); err == nil {
		t.Error("JSON decoded malformed input")
	}
	if _, err := Proto[statedv1.Offset]().Decode([]byte{0xff, 0xff, 0xff}); err == nil {
		t.Error("Proto decoded malformed input")
	}
	if _, err := JSON[chan int]().Encode(make(chan int)); err == nil {
		t.Error("JSON encoded a channel")
	}
}

func TestCodecErrorMatchesErrCodecAndTheCause(t *testing.T) {
	cause := errors.New("boom")
	err := codecError("encode value of key \"k\"", cause)
	if !errors.Is(err, ErrCodec) || !errors.Is(err, cause) {
		t.Fatalf("%v: errors.Is(ErrCodec)=%v, errors.Is(cause)=%v", err, errors.Is(err, ErrCodec), errors.Is(err, cause))
	}
}
