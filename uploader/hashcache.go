package uploader

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"maps"
	"os"
	"path"
	"strings"
	"sync"
)

// The checksum cache spares Upload from reading every table of the state
// at every checkpoint: a table's checksums are computed once and found
// again by the table's identity.

// hashKey identifies a local file whose content cannot have changed:
// Pebble never rewrites a table nor reuses its number, and a checkpoint
// hard-links them, so the same table keeps its inode and mtime from one
// checkpoint to the next.
type hashKey struct {
	name  string
	size  int64
	mtime int64
	ino   uint64
}

type digest struct {
	sha256 string
	md5    []byte // nil for an entry seeded from a manifest
}

// immutable reports whether a file is one Pebble never changes once
// written: its tables. WAL, MANIFEST, OPTIONS and marker files are
// hashed every time; they are small, or change.
func immutable(p string) bool { return strings.HasSuffix(p, ".sst") }

// seed fills the cache, on the first Upload, from the newest manifest:
// the tables it lists with this node's inode and mtime are the ones a
// restarted daemon would otherwise read again. Failing to seed only
// costs time.
func (u *Uploader) seed(ctx context.Context) {
	u.cacheMu.Lock()
	seeded := u.seeded
	u.seeded = true
	u.cacheMu.Unlock()
	if seeded {
		return
	}
	u.loadCache()
	m, err := u.Latest(ctx)
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			u.logger.Warn("uploader: cannot read the newest manifest to reuse its checksums; hashing every file", "error", err)
		}
		return
	}
	u.cacheMu.Lock()
	defer u.cacheMu.Unlock()
	for _, f := range m.Files {
		if immutable(f.Path) && f.LocalInode != 0 && f.LocalModTime != 0 {
			k := hashKey{name: path.Base(f.Path), size: f.Size, mtime: f.LocalModTime, ino: f.LocalInode}
			if _, ok := u.hashes[k]; !ok {
				u.hashes[k] = digest{sha256: f.SHA256}
			}
		}
	}
}

// cached returns the checksums of the table with key k, if known.
func (u *Uploader) cached(k hashKey) (digest, bool) {
	if !immutable(k.name) {
		return digest{}, false
	}
	u.cacheMu.Lock()
	defer u.cacheMu.Unlock()
	d, ok := u.hashes[k]
	return d, ok
}

// remember caches the checksums of the table with key k.
func (u *Uploader) remember(k hashKey, d digest) {
	if !immutable(k.name) {
		return
	}
	u.cacheMu.Lock()
	defer u.cacheMu.Unlock()
	u.hashes[k] = d
}

// keepOnly drops the entries of tables no longer in the checkpoint:
// Pebble never brings a deleted table back.
func (u *Uploader) keepOnly(keys []hashKey) {
	u.cacheMu.Lock()
	defer u.cacheMu.Unlock()
	keep := make(map[hashKey]digest, len(keys))
	for _, k := range keys {
		if d, ok := u.hashes[k]; ok {
			keep[k] = d
		}
	}
	u.hashes = keep
}

// forget drops every entry with this SHA-256.
func (u *Uploader) forget(sha string) {
	u.cacheMu.Lock()
	defer u.cacheMu.Unlock()
	maps.DeleteFunc(u.hashes, func(_ hashKey, d digest) bool { return d.sha256 == sha })
}

// wholeReadMax bounds the files that Upload reads into memory once, to
// hash them and send them from the same bytes; larger files are read
// twice (to hash, then to send while checking the hash again). Pebble's
// tables at the state machine's settings are a few MB. Each worker holds
// at most one such buffer.
const wholeReadMax = 16 << 20

// wholeBufs recycles the buffers of whole reads.
var wholeBufs = sync.Pool{New: func() any { b := make([]byte, wholeReadMax); return &b }}

// content is a file's bytes held in memory by a whole read, or nil.
type content struct{ buf *[]byte }

func (c content) bytes(n int64) []byte { return (*c.buf)[:n] }

// release returns the buffer for reuse.
func (c *content) release() {
	if c.buf != nil {
		wholeBufs.Put(c.buf)
		c.buf = nil
	}
}

// hashFile returns the SHA-256 of the file at p and, where the bucket
// reports or checks MD5s (not a file:// bucket), its MD5, and its length.
// A file of at most wholeReadMax bytes (size is what its stat said) is
// read into memory, which it returns to be sent from; the caller
// releases it.
func (u *Uploader) hashFile(p string, size int64) (digest, int64, content, error) {
	var d digest
	var n int64
	var c content
	var err error
	if size <= wholeReadMax {
		d, n, c, err = hashWhole(p, u.wantMD5)
	} else {
		d, n, err = hashFile(p, u.wantMD5)
	}
	if err == nil {
		u.m.filesHashed.Add(1)
		u.m.bytesHashed.Add(n)
	}
	return d, n, c, err
}

// hashWhole reads the file at p into a pooled buffer and hashes it. A
// file that grew past the buffer is hashed by streaming instead.
func hashWhole(p string, withMD5 bool) (digest, int64, content, error) {
	f, err := os.Open(p)
	if err != nil {
		return digest{}, 0, content{}, local(err)
	}
	defer f.Close()
	c := content{buf: wholeBufs.Get().(*[]byte)}
	n, err := io.ReadFull(f, *c.buf)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
	case err == nil: // as large as the buffer, or larger: stream it
		c.release()
		d, n, err := hashFile(p, withMD5)
		return d, n, content{}, err
	default:
		c.release()
		return digest{}, 0, content{}, local(fmt.Errorf("read %s: %w", p, err))
	}
	b := (*c.buf)[:n]
	sum := sha256.Sum256(b)
	d := digest{sha256: hex.EncodeToString(sum[:])}
	if withMD5 {
		m := md5.Sum(b)
		d.md5 = m[:]
	}
	return d, int64(n), c, nil
}

// hashFile returns the SHA-256 of the file at p, with its MD5 if
// withMD5, and its length.
func hashFile(p string, withMD5 bool) (digest, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return digest{}, 0, local(err)
	}
	defer f.Close()
	sh := sha256.New()
	var w io.Writer = sh
	var mh hash.Hash
	if withMD5 {
		mh = md5.New()
		w = io.MultiWriter(sh, mh)
	}
	buf := make([]byte, 1<<20) // 32 KiB reads cost more in syscalls than in hashing
	n, err := io.CopyBuffer(w, onlyReader{f}, buf)
	if err != nil {
		return digest{}, 0, local(fmt.Errorf("read %s: %w", p, err))
	}
	d := digest{sha256: hex.EncodeToString(sh.Sum(nil))}
	if mh != nil {
		d.md5 = mh.Sum(nil)
	}
	return d, n, nil
}

// onlyReader hides a reader's WriteTo, so that io.CopyBuffer uses the
// buffer it is given.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(b []byte) (int, error) { return o.r.Read(b) }

// shaCheck fails the read that reaches EOF if the bytes read do not have
// the SHA-256 want, so that a write of a file that changed since it was
// hashed is abandoned rather than stored under a name that is not its
// checksum.
type shaCheck struct {
	r        io.Reader
	want     string
	h        hash.Hash
	mismatch bool
}

func newSHACheck(r io.Reader, want string) *shaCheck {
	return &shaCheck{r: r, want: want, h: sha256.New()}
}

func (c *shaCheck) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.h.Write(b[:n])
	if err == io.EOF {
		if got := hex.EncodeToString(c.h.Sum(nil)); got != c.want {
			c.mismatch = true
			return n, local(fmt.Errorf("the file changed after it was hashed, or the checksum it was seeded with is wrong: SHA-256 %s, want %s", got, c.want))
		}
	}
	return n, err
}
