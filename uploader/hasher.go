package uploader

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
)

// Hashed is what the writer of a file computed from its bytes as it
// wrote them (with a Hasher), so that an upload sends the file without
// reading it first to hash it. Its SHA-256 names the blob; its CRC-32C
// is checked as the file is read to be sent, and the write is abandoned
// if the bytes read do not have it, so that a file hashed once, as it
// was written, is never stored under a name its bytes do not have. The
// MD5 is set where the bucket checks MD5s (Uploader.NewHasher decides);
// without it such a bucket's upload reads the file once more for it.
type Hashed struct {
	Size   int64
	SHA256 string // hex
	MD5    []byte // nil for a file:// bucket
	CRC32C uint32 // Castagnoli
}

// Hasher computes a file's Hashed from the bytes written to it, in
// order. It is not safe for concurrent use.
type Hasher struct {
	sha hash.Hash
	md5 hash.Hash // nil unless the bucket checks MD5s
	crc uint32
	n   int64
}

// castagnoli is the CRC-32C table.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// NewHasher returns a Hasher computing what this Uploader's bucket needs:
// the SHA-256 and CRC-32C, and the MD5 where the bucket checks MD5s.
func (u *Uploader) NewHasher() *Hasher {
	h := &Hasher{sha: sha256.New()}
	if u.wantMD5 {
		h.md5 = md5.New()
	}
	return h
}

// Write adds p to the file's bytes; it never fails.
func (h *Hasher) Write(p []byte) (int, error) {
	h.sha.Write(p)
	if h.md5 != nil {
		h.md5.Write(p)
	}
	h.crc = crc32.Update(h.crc, castagnoli, p)
	h.n += int64(len(p))
	return len(p), nil
}

// Sum returns what the bytes written so far hash to.
func (h *Hasher) Sum() Hashed {
	s := Hashed{Size: h.n, SHA256: hex.EncodeToString(h.sha.Sum(nil)), CRC32C: h.crc}
	if h.md5 != nil {
		s.MD5 = h.md5.Sum(nil)
	}
	return s
}

// crcCheck fails the read that reaches EOF if the bytes read do not have
// the CRC-32C of the bytes that were hashed, so that the write is
// abandoned.
type crcCheck struct {
	r    io.Reader
	want uint32
	crc  uint32
}

func (c *crcCheck) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.crc = crc32.Update(c.crc, castagnoli, b[:n])
	if err == io.EOF && c.crc != c.want {
		return n, local(fmt.Errorf("the file changed after it was hashed: CRC-32C %08x, want %08x", c.crc, c.want))
	}
	return n, err
}
