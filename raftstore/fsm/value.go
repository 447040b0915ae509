package fsm

import (
	"encoding/binary"
	"fmt"
)

// A stored entry is a flags byte, the expiry time when flagExpires is set,
// and the payload (the value, or a counter's 8 bytes).
const flagExpires = 1

func encodeEntry(dst []byte, expiresAt int64, payload []byte) []byte {
	if expiresAt != 0 {
		dst = append(dst, flagExpires)
		dst = binary.BigEndian.AppendUint64(dst, uint64(expiresAt))
	} else {
		dst = append(dst, 0)
	}
	return append(dst, payload...)
}

func decodeEntry(b []byte) (expiresAt int64, payload []byte, err error) {
	if len(b) < 1 {
		return 0, nil, fmt.Errorf("%w: empty entry", ErrCorrupt)
	}
	switch b[0] {
	case 0:
		return 0, b[1:], nil
	case flagExpires:
		if len(b) < 9 {
			return 0, nil, fmt.Errorf("%w: short expiry", ErrCorrupt)
		}
		return int64(binary.BigEndian.Uint64(b[1:9])), b[9:], nil
	}
	return 0, nil, fmt.Errorf("%w: unknown entry flags 0x%02x", ErrCorrupt, b[0])
}

// expired reports whether an entry with expiresAt is gone at time now.
func expired(expiresAt, now int64) bool { return expiresAt != 0 && expiresAt <= now }

func encodeCounter(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

func decodeCounter(b []byte) (int64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: counter of %d bytes", ErrCorrupt, len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}
