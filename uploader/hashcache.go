package uploader

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"strings"
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

// hashFile returns the SHA-256 and MD5 of the file at p, and its length.
func (u *Uploader) hashFile(p string) (digest, int64, error) {
	d, n, err := hashFile(p)
	if err == nil {
		u.m.filesHashed.Add(1)
		u.m.bytesHashed.Add(n)
	}
	return d, n, err
}

func hashFile(p string) (digest, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return digest{}, 0, local(err)
	}
	defer f.Close()
	sh, mh := sha256.New(), md5.New()
	buf := make([]byte, 1<<20) // 32 KiB reads cost more in syscalls than in hashing
	n, err := io.CopyBuffer(io.MultiWriter(sh, mh), onlyReader{f}, buf)
	if err != nil {
		return digest{}, 0, local(fmt.Errorf("read %s: %w", p, err))
	}
	return digest{sha256: hex.EncodeToString(sh.Sum(nil)), md5: mh.Sum(nil)}, n, nil
}

// onlyReader hides a reader's WriteTo, so that io.CopyBuffer uses the
// buffer it is given.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(b []byte) (int, error) { return o.r.Read(b) }
