package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
)

// Every Pebble key starts with one of these bytes.
const (
	prefixSystem     = 0x00 // applied index and other metadata
	prefixOffset     = 0x01 // group, topic, partition -> next offset
	prefixState      = 0x02 // namespace, key, kind, sub-key -> entry
	prefixExpiry     = 0x03 // expiry time, state key -> nothing
	prefixDedup      = 0x04 // client id, sequence -> index of the commit (format version 2 commits only)
	prefixClaim      = 0x05 // group, topic, partition -> epoch, owner
	prefixCkptOffset = 0x06 // group, topic, partition -> offset in the newest completed checkpoint
	prefixSession    = 0x07 // client id -> its current session (see session.go)
	prefixLane       = 0x08 // client id, lane -> the lane's highest sequence
	// Window state (see windows_keys.go).
	prefixWindowSpec   = 0x09 // ns -> window spec
	prefixWindowMeta   = 0x0A // ns -> watermark and counters
	prefixWindowSource = 0x0B // ns, source -> the source's watermark
	prefixWindowData   = 0x0C // ns, segment, key, start[, last] -> aggregate
	prefixWindowIndex  = 0x0D // ns, close time, key, start -> segment
	prefixWindowOutbox = 0x0E // ns, emission id -> emission
	prefixWindowTimer  = 0x0F // ns, time, key -> nothing
	// Ended client sessions (see session.go, "Ended sessions").
	prefixEndedSession = 0x10 // client id, session id -> when it ended, when the record expires
	prefixEndedExpiry  = 0x11 // expiry time, client id, session id -> nothing
)

var (
	keyAppliedIndex = []byte{prefixSystem, 'a'}
	keyClusterID    = []byte{prefixSystem, 'c'}
	// keyCheckpointEpoch is the epoch of the newest checkpoint barrier;
	// keyCheckpointDone the newest completed epoch and when it completed.
	keyCheckpointEpoch = []byte{prefixSystem, 'e'}
	keyCheckpointDone  = []byte{prefixSystem, 'd'}
	prefixMember       = []byte{prefixSystem, 'n'} // node id -> raft and gRPC addresses
)

func memberKey(id string) []byte {
	return appendComponent(append([]byte(nil), prefixMember...), []byte(id))
}

func dedupKey(clientID string, seq uint64) []byte {
	k := appendComponent([]byte{prefixDedup}, []byte(clientID))
	return binary.BigEndian.AppendUint64(k, seq)
}

// Variable-length components are escaped so that order is preserved and a
// component's prefix is a prefix of its encoding: 0x00 becomes 0x00 0xFF and
// every component ends with 0x00 0x01.
const (
	escByte  = 0x00
	escEsc   = 0xFF
	escTerm  = 0x01
	termSize = 2
)

// appendEscaped appends s escaped. Up to its first 0x00 it is copied
// whole; a short rest is escaped a byte at a time, since keys with many
// zero bytes (big-endian integers) would otherwise cost a search and two
// appends for each; a long rest a search at a time. The first search
// stands apart from the long rest's loop: folded into one loop, string
// keys (no 0x00) took 1.17× the time (BenchmarkAppendComponent).
func appendEscaped(dst, s []byte) []byte {
	i := bytes.IndexByte(s, escByte)
	if i < 0 {
		return append(dst, s...)
	}
	dst, s = append(dst, s[:i]...), s[i:]
	if len(s) > maxBytewiseEscape {
		for {
			i := bytes.IndexByte(s, escByte)
			if i < 0 {
				return append(dst, s...)
			}
			dst = append(dst, s[:i]...)
			dst = append(dst, escByte, escEsc)
			s = s[i+1:]
		}
	}
	n := len(dst)
	dst = slices.Grow(dst, 2*len(s))[:n+2*len(s)]
	for _, c := range s {
		dst[n] = c
		n++
		if c == escByte {
			dst[n] = escEsc
			n++
		}
	}
	return dst[:n]
}

// maxBytewiseEscape is the longest rest of a component that appendEscaped
// escapes a byte at a time.
const maxBytewiseEscape = 64

func appendComponent(dst, s []byte) []byte {
	return append(appendEscaped(dst, s), escByte, escTerm)
}

// readComponent decodes one escaped component from b and returns it and the
// rest of b.
func readComponent(b []byte) (comp, rest []byte, err error) {
	var out []byte
	for {
		i := bytes.IndexByte(b, escByte)
		if i < 0 || i+1 >= len(b) {
			return nil, nil, fmt.Errorf("%w: unterminated key component", ErrCorrupt)
		}
		out = append(out, b[:i]...)
		switch b[i+1] {
		case escTerm:
			return out, b[i+2:], nil
		case escEsc:
			out = append(out, escByte)
			b = b[i+2:]
		default:
			return nil, nil, fmt.Errorf("%w: bad escape 0x%02x in key", ErrCorrupt, b[i+1])
		}
	}
}

// namespacePrefix is the start of every state key of ns.
func namespacePrefix(ns string) []byte {
	return appendComponent([]byte{prefixState}, []byte(ns))
}

// keyPrefix is the start of every state key of (ns, key), of every kind.
func keyPrefix(ns string, key []byte) []byte {
	return appendComponent(namespacePrefix(ns), key)
}

// stateKey is where an entry of kind lives. For a value or a counter sub is
// empty; for a map it is the sub-key; for a list it is the 8-byte position,
// and the empty sub-key of a list holds the list's next position.
func stateKey(ns string, key []byte, kind Kind, sub []byte) []byte {
	return appendStateKey(make([]byte, 0, 1+len(ns)+len(key)+len(sub)+2*termSize+1+8), ns, key, kind, sub)
}

// appendStateKey appends the state key to dst, for callers that reuse a
// buffer.
func appendStateKey(dst []byte, ns string, key []byte, kind Kind, sub []byte) []byte {
	dst = append(dst, prefixState)
	dst = appendComponent(dst, []byte(ns))
	dst = appendComponent(dst, key)
	dst = append(dst, byte(kind))
	return append(dst, sub...)
}

// decodeStateKey splits a state key of a known namespace prefix length.
func decodeStateKey(k []byte, nsPrefixLen int) (key []byte, kind Kind, sub []byte, err error) {
	key, rest, err := readComponent(k[nsPrefixLen:])
	if err != nil {
		return nil, 0, nil, err
	}
	if len(rest) < 1 {
		return nil, 0, nil, fmt.Errorf("%w: state key without kind", ErrCorrupt)
	}
	return key, Kind(rest[0]), rest[1:], nil
}

func offsetKey(group, topic string, partition int32) []byte {
	k := appendComponent([]byte{prefixOffset}, []byte(group))
	k = appendComponent(k, []byte(topic))
	return binary.BigEndian.AppendUint32(k, uint32(partition))
}

func checkpointedOffsetKey(group, topic string, partition int32) []byte {
	k := appendComponent([]byte{prefixCkptOffset}, []byte(group))
	k = appendComponent(k, []byte(topic))
	return binary.BigEndian.AppendUint32(k, uint32(partition))
}

func offsetGroupPrefix(group string) []byte {
	return appendComponent([]byte{prefixOffset}, []byte(group))
}

func appendExpiryKey(dst []byte, expiresAt int64, sk []byte) []byte {
	dst = append(dst, prefixExpiry)
	dst = binary.BigEndian.AppendUint64(dst, uint64(expiresAt))
	return append(dst, sk...)
}

// prefixEnd returns the smallest key greater than every key with prefix p,
// or nil when there is none.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}

func listPosition(pos uint64) []byte { return binary.BigEndian.AppendUint64(nil, pos) }
