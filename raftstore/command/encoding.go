package command

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// version is the format of an encoded command. Bump it, and keep decoding
// the old one, whenever the layout changes. Version 2 added claims and the
// epoch of each offset; version 1 commands decode with zero epochs.
// Version 3 added client sessions: a commit's session, lane and payload
// hash, and the session commands. Version 4 added window state: a
// commit's window adds, watermark hints, acknowledgements and timers, and
// the commands that define window namespaces and tick their watermarks.
// Version 5 added a member's incarnation to TypeSetMember, and
// TypeCommitBatch. Version 6 added a flags field (a uvarint, after Now) to
// TypeCheckpoint, whose bit 0 marks a changelog barrier; other bits are
// refused, so that a flag a newer release adds is never ignored.
//
// A command is written in the oldest version that holds it (see
// encodingVersion), so that a binary of the previous release, in a rolling
// upgrade, still decodes everything but what it cannot represent.
const (
	version   = 6
	versionV5 = 5
	versionV4 = 4
	versionV3 = 3
	versionV2 = 2
	versionV1 = 1
)

// checkpointChangelog is the flag of a changelog barrier in a
// TypeCheckpoint's flags (format version 6).
const checkpointChangelog = 1 << 0

// ErrCorrupt reports an encoding that cannot be decoded.
var ErrCorrupt = errors.New("command: corrupt encoding")

// Encode appends the encoding of c to dst and returns it.
func Encode(dst []byte, c *Command) []byte { return encode(dst, c, false) }

// EncodeProposal is Encode for the leader proposing c: each of its
// commits in a session (SessionID set) is first given its PayloadHash,
// which its lane records so that a retry is told from a reuse of its
// sequence. The hash is taken over the payload as it is encoded into the
// entry, the bytes PayloadHash would encode again, so that a commit's
// payload is encoded once.
func EncodeProposal(c *Command) []byte { return encode(nil, c, true) }

func encode(dst []byte, c *Command, hash bool) []byte {
	if dst == nil {
		dst = make([]byte, 0, encodedSizeHint(c))
	}
	v := encodingVersion(c)
	dst = append(dst, v, byte(c.Type))
	dst = binary.AppendVarint(dst, c.Now)
	switch c.Type {
	case TypeCommit:
		dst = encodeCommit(dst, c.Commit, hash)
	case TypeCommitBatch:
		dst = binary.AppendUvarint(dst, uint64(len(c.Batch)))
		for _, m := range c.Batch {
			dst = encodeCommit(dst, m, hash)
		}
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
		if v >= versionV5 {
			dst = appendBytes(dst, []byte(m.Incarnation))
		}
	case TypeClaim, TypeRelease:
		dst = encodeClaim(dst, c.Claim)
	case TypeOpenSession:
		s := c.Session
		if s == nil {
			s = &Session{}
		}
		dst = appendBytes(dst, []byte(s.ClientID))
		dst = binary.AppendUvarint(dst, s.ID)
		dst = binary.AppendVarint(dst, s.IdleTimeout)
	case TypeExpireSessions:
		dst = binary.AppendUvarint(dst, uint64(len(c.Expired)))
		for i := range c.Expired {
			r := &c.Expired[i]
			dst = appendBytes(dst, []byte(r.ClientID))
			dst = binary.AppendUvarint(dst, r.ID)
			dst = binary.AppendVarint(dst, r.LastActive)
		}
	case TypeDefineWindows:
		dst = appendWindowSpec(dst, c.Windows)
	case TypeWindowTick:
	case TypeCheckpoint:
		if v >= version {
			var flags uint64
			if c.Changelog {
				flags |= checkpointChangelog
			}
			dst = binary.AppendUvarint(dst, flags)
		}
	case TypeCheckpointDone:
		dst = binary.AppendUvarint(dst, c.Epoch)
		dst = binary.AppendUvarint(dst, uint64(len(c.Offsets)))
		for i := range c.Offsets {
			o := &c.Offsets[i]
			dst = appendBytes(dst, []byte(o.Group))
			dst = appendBytes(dst, []byte(o.Topic))
			dst = binary.AppendVarint(dst, int64(o.Partition))
			dst = binary.AppendVarint(dst, o.Offset)
		}
	}
	return dst
}

// encodingVersion is the oldest format version that holds c: version 6
// for a changelog barrier (a TypeCheckpoint with Changelog set), version 5
// for a member with an incarnation and for a batch of commits, version 4
// for everything else, a plain barrier included, which a release before
// changelog checkpoints then still decodes.
func encodingVersion(c *Command) byte {
	switch {
	case c.Type == TypeCheckpoint && c.Changelog:
		return version
	case c.Type == TypeSetMember && c.Member != nil && c.Member.Incarnation != "",
		c.Type == TypeCommitBatch:
		return versionV5
	}
	return versionV4
}

func encodeClaim(dst []byte, c *Claim) []byte {
	if c == nil {
		c = &Claim{}
	}
	dst = appendBytes(dst, []byte(c.Group))
	dst = appendBytes(dst, []byte(c.Owner))
	dst = binary.AppendUvarint(dst, uint64(len(c.Partitions)))
	for i := range c.Partitions {
		p := &c.Partitions[i]
		dst = appendBytes(dst, []byte(p.Topic))
		dst = binary.AppendVarint(dst, int64(p.Partition))
		dst = binary.AppendUvarint(dst, p.Epoch)
	}
	return dst
}

// encodedSizeHint is an upper bound of the encoded size, so that Encode
// allocates once.
func encodedSizeHint(c *Command) int {
	n := 2 + binary.MaxVarintLen64*2 + len(c.ClusterID) + binary.MaxVarintLen64
	if m := c.Member; m != nil {
		n += len(m.ID) + len(m.RaftAddr) + len(m.GRPCAddr) + len(m.Incarnation) + 4*binary.MaxVarintLen64
	}
	for i := range c.Offsets {
		n += len(c.Offsets[i].Group) + len(c.Offsets[i].Topic) + 4*binary.MaxVarintLen64
	}
	if cl := c.Claim; cl != nil {
		n += len(cl.Group) + len(cl.Owner) + 3*binary.MaxVarintLen64
		for i := range cl.Partitions {
			n += len(cl.Partitions[i].Topic) + 3*binary.MaxVarintLen64
		}
	}
	if s := c.Session; s != nil {
		n += len(s.ClientID) + 3*binary.MaxVarintLen64
	}
	for i := range c.Expired {
		n += len(c.Expired[i].ClientID) + 3*binary.MaxVarintLen64
	}
	if w := c.Windows; w != nil {
		n += len(w.Namespace) + 4 + 10*binary.MaxVarintLen64
	}
	for _, m := range c.Batch {
		n += commitSizeHint(m)
	}
	if m := c.Commit; m != nil {
		n += commitSizeHint(m)
	}
	return n
}

// commitSizeHint is an upper bound of a commit's encoded size.
func commitSizeHint(m *Commit) int {
	if m == nil {
		return 6
	}
	n := windowSizeHint(m)
	n += len(m.ClientID) + 5*binary.MaxVarintLen64 + len(m.Hash)
	// The mutations exactly, as they are most of a commit: an upper bound
	// of ten bytes per varint would allocate half as much again as a
	// commit of small puts takes.
	for i := range m.Mutations {
		mu := &m.Mutations[i]
		n += 1 + bytesSize(len(mu.Namespace)) + bytesSize(len(mu.Key)) + bytesSize(len(mu.SubKey)) + bytesSize(len(mu.Value)) +
			varintSize(mu.Delta) + varintSize(mu.TTL)
	}
	for i := range m.Offsets {
		n += len(m.Offsets[i].Group) + len(m.Offsets[i].Topic) + 5*binary.MaxVarintLen64
	}
	return n
}

// encodeCommit appends m's encoding; with hash set, a commit in a session
// is first given its PayloadHash, taken over the payload just encoded.
func encodeCommit(dst []byte, m *Commit, hash bool) []byte {
	if m == nil {
		m = &Commit{}
	}
	dst = appendBytes(dst, []byte(m.ClientID))
	dst = binary.AppendUvarint(dst, m.Seq)
	dst = binary.AppendUvarint(dst, m.SessionID)
	dst = binary.AppendUvarint(dst, uint64(m.Lane))
	if m.SessionID == 0 {
		return appendPayload(dst, m)
	}
	at := len(dst)
	dst = append(dst, m.Hash[:]...)
	if !hash {
		return appendPayload(dst, m)
	}
	start := len(dst)
	dst = appendStatePayload(dst, m)
	end := len(dst)
	dst = appendWindowPayload(dst, m)
	if hasWindowParts(m) {
		end = len(dst)
	}
	m.Hash = digest(dst[start:end])
	copy(dst[at:], m.Hash[:])
	return dst
}

// appendPayload appends what a commit changes: its mutations, offsets and
// window parts.
func appendPayload(dst []byte, m *Commit) []byte {
	return appendWindowPayload(appendStatePayload(dst, m), m)
}

// appendStatePayload appends a commit's mutations and offsets, the whole
// payload of format versions 1 to 3.
func appendStatePayload(dst []byte, m *Commit) []byte {
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
		dst = binary.AppendUvarint(dst, o.Epoch)
	}
	return dst
}

// uvarintSize is the length of x's uvarint encoding.
func uvarintSize(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

// varintSize is the length of x's varint encoding (zigzag, as
// binary.AppendVarint writes it).
func varintSize(x int64) int { return uvarintSize(uint64(x<<1) ^ uint64(x>>63)) }

// bytesSize is the encoded length of a byte string of length n.
func bytesSize(n int) int { return uvarintSize(uint64(n)) + n }

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// Decode parses an encoded command. The byte slices of the result alias
// buf, which the caller must not modify while the command is in use.
func Decode(buf []byte) (*Command, error) { return decode(buf, nil) }

// A Decoder decodes commands as Decode does, but decodes their commits'
// mutations into memory it keeps for the next command: the command it
// returns is valid only until its next Decode or Release. The state
// machine keeps nothing of a command once it is applied, and its Decoder
// spares it an allocation of about the entry's size for every commit
// (BENCHMARKS.md). The zero Decoder is ready for use; one may not be used
// by two goroutines at once.
type Decoder struct {
	// muts is the memory the mutations are decoded into; used is how
	// much of it the command decoded last holds.
	muts []Mutation
	used int
}

// maxKeptMutations bounds what a Decoder keeps between commands: a
// commit with more mutations than this decodes into memory of its own,
// which the collector takes back with the command.
const maxKeptMutations = 1 << 14

// Decode parses an encoded command into memory dec keeps (see Decoder).
// It releases the command decoded before.
func (dec *Decoder) Decode(buf []byte) (*Command, error) {
	dec.Release()
	return decode(buf, dec)
}

// Release ends the use of the command decoded last: the memory it was
// decoded into is cleared (so that it keeps no entry's bytes alive) for
// the next.
func (dec *Decoder) Release() {
	clear(dec.muts[:dec.used])
	dec.used = 0
}

// mutations returns n zero mutations for one commit of the command being
// decoded, from dec's memory when it has room.
func (dec *Decoder) mutations(n int) []Mutation {
	if dec == nil || n > maxKeptMutations {
		return make([]Mutation, n)
	}
	if dec.used+n > len(dec.muts) {
		// The commits decoded before keep the old memory; the new one
		// is what dec keeps from now on.
		dec.muts = make([]Mutation, min(max(dec.used+n, 2*len(dec.muts)), maxKeptMutations))
		dec.used = 0
	}
	m := dec.muts[dec.used : dec.used+n : dec.used+n]
	dec.used += n
	return m
}

func decode(buf []byte, dec *Decoder) (*Command, error) {
	d := decoder{buf: buf, dec: dec}
	d.version = d.byte()
	if d.err != nil {
		return nil, d.err
	}
	if d.version < versionV1 || d.version > version {
		return nil, fmt.Errorf("%w: unknown format version %d", ErrCorrupt, d.version)
	}
	c := &Command{Type: Type(d.byte()), Now: d.varint(), Version: d.version}
	switch c.Type {
	case TypeCommit:
		c.Commit = d.commit()
	case TypeCommitBatch:
		if d.version < versionV5 {
			return nil, fmt.Errorf("%w: command type %d in format version %d", ErrCorrupt, c.Type, d.version)
		}
		// A commit takes at least 6 bytes: its client id's length, its
		// sequence, session, lane and its two empty lists.
		if n := d.count(6); n > 0 {
			c.Batch = make([]*Commit, n)
			for i := range c.Batch {
				c.Batch[i] = d.commit()
			}
		}
	case TypeExpire:
		c.ExpireLimit = uint32(d.uvarint())
	case TypeSetClusterID:
		c.ClusterID = string(d.bytes())
	case TypeSetMember, TypeRemoveMember:
		c.Member = &Member{ID: string(d.bytes()), RaftAddr: string(d.bytes()), GRPCAddr: string(d.bytes())}
		if c.Type == TypeSetMember && d.version >= versionV5 {
			c.Member.Incarnation = string(d.bytes())
		}
	case TypeClaim, TypeRelease:
		if d.version == versionV1 {
			return nil, fmt.Errorf("%w: command type %d in format version 1", ErrCorrupt, c.Type)
		}
		c.Claim = d.claim()
	case TypeDefineWindows, TypeWindowTick:
		if d.version < versionV4 {
			return nil, fmt.Errorf("%w: command type %d in format version %d", ErrCorrupt, c.Type, d.version)
		}
		if c.Type == TypeDefineWindows {
			c.Windows = d.windowSpec()
		}
	case TypeOpenSession, TypeExpireSessions:
		if d.version < versionV3 {
			return nil, fmt.Errorf("%w: command type %d in format version %d", ErrCorrupt, c.Type, d.version)
		}
		if c.Type == TypeOpenSession {
			c.Session = &Session{ClientID: string(d.bytes()), ID: d.uvarint(), IdleTimeout: d.varint()}
		} else if n := d.count(3); n > 0 {
			c.Expired = make([]SessionRef, n)
			for i := range c.Expired {
				c.Expired[i] = SessionRef{ClientID: string(d.bytes()), ID: d.uvarint(), LastActive: d.varint()}
			}
		}
	case TypeCheckpoint:
		if d.version == versionV1 {
			return nil, fmt.Errorf("%w: command type %d in format version 1", ErrCorrupt, c.Type)
		}
		if d.version >= version {
			flags := d.uvarint()
			if unknown := flags &^ checkpointChangelog; unknown != 0 {
				return nil, fmt.Errorf("%w: unknown checkpoint flags %#x", ErrCorrupt, unknown)
			}
			c.Changelog = flags&checkpointChangelog != 0
		}
	case TypeCheckpointDone:
		if d.version == versionV1 {
			return nil, fmt.Errorf("%w: command type %d in format version 1", ErrCorrupt, c.Type)
		}
		c.Epoch = d.uvarint()
		if n := d.count(4); n > 0 {
			c.Offsets = make([]Offset, n)
			for i := range c.Offsets {
				o := &c.Offsets[i]
				o.Group = string(d.bytes())
				o.Topic = string(d.bytes())
				o.Partition = int32(d.varint())
				o.Offset = d.varint()
			}
		}
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
	buf     []byte
	err     error
	version byte
	// ns is the namespace of the mutation decoded last: the mutations of a
	// commit mostly share one, which is then allocated once.
	ns string
	// dec, when set, is the Decoder whose memory the mutations go into.
	dec *Decoder
}

// namespace reads a mutation's namespace.
func (d *decoder) namespace() string {
	b := d.bytes()
	if string(b) != d.ns { // no allocation: the conversion is compared, not kept
		d.ns = string(b)
	}
	return d.ns
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
	if d.version >= versionV3 {
		m.SessionID = d.uvarint()
		m.Lane = uint32(d.uvarint())
		if m.SessionID != 0 {
			if len(d.buf) < len(m.Hash) {
				d.fail("hash")
				return m
			}
			copy(m.Hash[:], d.buf)
			d.buf = d.buf[len(m.Hash):]
		}
	}
	// A mutation takes at least 7 bytes, an offset at least 4.
	if n := d.count(7); n > 0 {
		m.Mutations = d.dec.mutations(n)
		for i := range m.Mutations {
			mu := &m.Mutations[i]
			mu.Op = Op(d.byte())
			mu.Namespace = d.namespace()
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
			if d.version > versionV1 {
				o.Epoch = d.uvarint()
			}
		}
	}
	if d.version >= versionV4 {
		d.windowPayload(m)
	}
	return m
}

func (d *decoder) claim() *Claim {
	c := &Claim{Group: string(d.bytes()), Owner: string(d.bytes())}
	// A partition takes at least 3 bytes.
	if n := d.count(3); n > 0 {
		c.Partitions = make([]PartitionEpoch, n)
		for i := range c.Partitions {
			p := &c.Partitions[i]
			p.Topic = string(d.bytes())
			p.Partition = int32(d.varint())
			p.Epoch = d.uvarint()
		}
	}
	return c
}

// EncodeVersion2 encodes a commit in format version 2, which had no
// sessions; it exists for tests of logs written by older versions.
func EncodeVersion2(c *Command) []byte {
	dst := []byte{versionV2, byte(TypeCommit)}
	dst = binary.AppendVarint(dst, c.Now)
	dst = appendBytes(dst, []byte(c.Commit.ClientID))
	dst = binary.AppendUvarint(dst, c.Commit.Seq)
	return appendStatePayload(dst, c.Commit)
}
