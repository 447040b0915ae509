package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

// escapedByByte is the escaping the key encoding defines, one byte at a
// time: 0x00 becomes 0x00 0xFF.
func escapedByByte(dst, s []byte) []byte {
	for _, c := range s {
		dst = append(dst, c)
		if c == escByte {
			dst = append(dst, escEsc)
		}
	}
	return dst
}

// randomComponent is a component of up to 3*maxBytewiseEscape bytes, most
// of them the bytes the escaping treats apart.
func randomComponent(r *rand.Rand) []byte {
	s := make([]byte, r.IntN(3*maxBytewiseEscape))
	for i := range s {
		switch r.IntN(4) {
		case 0:
			s[i] = escByte
		case 1:
			s[i] = []byte{escEsc, escTerm}[r.IntN(2)]
		default:
			s[i] = byte(r.Uint32())
		}
	}
	return s
}

// Every component, short or long, with zero bytes anywhere, is escaped as
// the encoding defines, after what dst holds, reads back as itself, and
// keeps the order of the components.
func TestAppendEscapedWritesTheEncodingsEscaping(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	prefix := []byte{prefixState, 'n', 's'}
	var prev []byte
	for i := range 20_000 {
		s := randomComponent(r)
		if i%3 == 0 {
			s = binary.BigEndian.AppendUint64([]byte("key/"), r.Uint64N(1<<20))
		}
		dst := append(make([]byte, 0, r.IntN(2*len(s)+8)), prefix...)
		got := appendEscaped(dst, s)
		want := escapedByByte(append([]byte(nil), prefix...), s)
		if !bytes.Equal(got, want) {
			t.Fatalf("appendEscaped(%x, %x) = %x, want %x", prefix, s, got, want)
		}
		comp, rest, err := readComponent(appendComponent(nil, s))
		if err != nil || !bytes.Equal(comp, s) || len(rest) != 0 {
			t.Fatalf("component %x reads back as %x, rest %x, err %v", s, comp, rest, err)
		}
		if prev != nil {
			if a, b := bytes.Compare(prev, s), bytes.Compare(appendComponent(nil, prev), appendComponent(nil, s)); a != b {
				t.Fatalf("components %x and %x compare %d, their encodings %d", prev, s, a, b)
			}
		}
		prev = s
	}
}

// BenchmarkAppendComponent is a state key's component: a string key, and a
// big-endian integer's, which has zero bytes to escape.
func BenchmarkAppendComponent(b *testing.B) {
	for _, shape := range []string{"string", "uint64"} {
		b.Run("key="+shape, func(b *testing.B) {
			keys := make([][]byte, 1000)
			for i := range keys {
				if shape == "string" {
					keys[i] = fmt.Appendf(nil, "user-%08d", i*7919)
				} else {
					keys[i] = binary.BigEndian.AppendUint64([]byte("key/"), uint64(i*7919))
				}
			}
			buf := make([]byte, 0, 64)
			for b.Loop() {
				for _, k := range keys {
					buf = appendComponent(buf[:0], k)
				}
			}
		})
	}
}
