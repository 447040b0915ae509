package command

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// version is the format of an encoded command. Bump it, and keep decoding
// the old one, whenever the layout changes.
const version = 1

// ErrCorrupt reports an encoding that cannot be decoded.
var ErrCorrupt = errors.New("command: corrupt encoding")

// Encode appends the encoding of c to dst and returns it.
func Encode(dst []byte, c *Command) []byte {
	if dst == nil {
		dst = make([]byte, 0, encodedSizeHint(c))
	}
	dst = append(dst, version, byte(c.Type))
	dst = binary.AppendVarint(dst, c.Now)
	switch c.Type {
	case TypeCommit:
		dst = encodeCommit(dst, c.Commit)
	case TypeExpire:
		dst = binary.AppendUvarint(dst, uint64(c.ExpireLimit))
	case TypeSetClusterID:
		dst = appendBytes(dst, []byte(c.ClusterID))
	case TypeSetMember, TypeRemoveMember:
		m := c.Member
		if m == nil {
			m = &Member{}
		}
		dst = appendBytes(dst, []byte(m.ID))
		dst = appendBytes(dst, []byte(m.RaftAddr))
		dst = appendBytes(dst, []byte(m.GRPCAddr))
	}
	return dst
}

// encodedSizeHint is an upper bound of the encoded size, so that Encode
// allocates once.
func encodedSizeHint(c *Command) int {
	n := 2 + binary.MaxVarintLen64*2 + len(c.ClusterID) + binary.MaxVarintLen64
	if m := c.Member; m != nil {
		n += len(m.ID) + len(m.RaftAddr) + len(m.GRPCAddr) + 3*binary.MaxVarintLen64
	}
	if m := c.Commit; m != nil {
		n += len(m.ClientID) + 3*binary.MaxVarintLen64
		for i := range m.Mutations {
			mu := &m.Mutations[i]
			n += 1 + len(mu.Namespace) + len(mu.Key) + len(mu.SubKey) + len(mu.Value) + 6*binary.MaxVarintLen64
		}
		for i := range m.Offsets {
			n += len(m.Offsets[i].Group) + len(m.Offsets[i].Topic) + 4*binary.MaxVarintLen64
		}
	}
	return n
}

func encodeCommit(dst []byte, m *Commit) []byte {
	if m == nil {
		m = &Commit{}
	}
	dst = appendBytes(dst, []byte(m.ClientID))
	dst = binary.AppendUvarint(dst, m.Seq)
	dst = binary.AppendUvarint(dst, uint64(len(m.Mutations)))
	for i := range m.Mutations {
		mu := &m.Mutations[i]
		dst = append(dst, byte(mu.Op))
		dst = appendBytes(dst, []byte(mu.Namespace))
		dst = appendBytes(dst, mu.Key)
		dst = appendBytes(dst, mu.SubKey)
		dst = appendBytes(dst, mu.Value)
		dst = binary.AppendVarint(dst, mu.Delta)
		dst = binary.AppendVarint(dst, mu.TTL)
	}
	dst = binary.AppendUvarint(dst, uint64(len(m.Offsets)))
	for i := range m.Offsets {
		o := &m.Offsets[i]
		dst = appendBytes(dst, []byte(o.Group))
		dst = appendBytes(dst, []byte(o.Topic))
		dst = binary.AppendVarint(dst, int64(o.Partition))
		dst = binary.AppendVarint(dst, o.Offset)
	}
	return dst
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// Decode parses an encoded command. The byte slices of the result alias
// buf, which the caller must not modify while the command is in use.
func Decode(buf []byte) (*Command, error) {
	d := decoder{buf: buf}
	if v := d.byte(); v != version {
		if d.err != nil {
			return nil, d.err
		}
		return nil, fmt.Errorf("%w: unknown format version %d", ErrCorrupt, v)
	}
	c := &Command{Type: Type(d.byte()), Now: d.varint()}
	switch c.Type {
	case TypeCommit:
		c.Commit = d.commit()
	case TypeExpire:
		c.ExpireLimit = uint32(d.uvarint())
	case TypeSetClusterID:
		c.ClusterID = string(d.bytes())
	case TypeSetMember, TypeRemoveMember:
		c.Member = &Member{ID: string(d.bytes()), RaftAddr: string(d.bytes()), GRPCAddr: string(d.bytes())}
	default:
		if d.err == nil {
			return nil, fmt.Errorf("%w: unknown command type %d", ErrCorrupt, c.Type)
		}
	}
	if d.err == nil && len(d.buf) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(d.buf))
	}
	if d.err != nil {
		return nil, d.err
	}
	return c, nil
}

type decoder struct {
	buf []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated %s", ErrCorrupt, what)
	}
	d.buf = nil
}

func (d *decoder) byte() byte {
	if len(d.buf) < 1 {
		d.fail("byte")
		return 0
	}
	b := d.buf[0]
	d.buf = d.buf[1:]
	return b
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail("uvarint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.buf)) {
		d.fail("bytes")
		return nil
	}
	if n == 0 {
		return nil
	}
	b := d.buf[:n:n]
	d.buf = d.buf[n:]
	return b
}

// count reads a length and checks it against the bytes left, so that a
// corrupt length cannot make Decode allocate without bound.
func (d *decoder) count(minSize int) int {
	n := d.uvarint()
	if n > uint64(len(d.buf)/minSize) {
		d.fail("count")
		return 0
	}
	return int(n)
}

func (d *decoder) commit() *Commit {
	m := &Commit{ClientID: string(d.bytes()), Seq: d.uvarint()}
	// A mutation takes at least 7 bytes, an offset at least 4.
	if n := d.count(7); n > 0 {
		m.Mutations = make([]Mutation, n)
		for i := range m.Mutations {
			mu := &m.Mutations[i]
			mu.Op = Op(d.byte())
			mu.Namespace = string(d.bytes())
			mu.Key = d.bytes()
			mu.SubKey = d.bytes()
			mu.Value = d.bytes()
			mu.Delta = d.varint()
			mu.TTL = d.varint()
		}
	}
	if n := d.count(4); n > 0 {
		m.Offsets = make([]Offset, n)
		for i := range m.Offsets {
			o := &m.Offsets[i]
			o.Group = string(d.bytes())
			o.Topic = string(d.bytes())
			o.Partition = int32(d.varint())
			o.Offset = d.varint()
		}
	}
	return m
}
