package uploader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// PrehashStats say what a Prehash did.
type PrehashStats struct {
	Tables      int   // tables found in the directory
	FilesHashed int   // of which hashed now (the others were cached)
	BytesHashed int64 // bytes read to hash them
}

// Prehash computes the checksums of the tables (*.sst) directly in dir
// that the cache does not hold yet, one at a time, and caches them, so
// that a later Upload of a checkpoint holding the same tables (hard links
// of them: same name, size, mtime and inode) reads only what is new. A
// node that does not upload calls it on its live Pebble directory, so
// that if it becomes the leader its first checkpoint costs about what an
// incremental one does. Entries of tables no longer in dir are dropped,
// and the cache is saved to Config.HashCacheFile, if set.
//
// A table that disappears (compacted away) or changes while it is read
// (still being written) is skipped. Prehash stops when ctx ends.
func (u *Uploader) Prehash(ctx context.Context, dir string) (PrehashStats, error) {
	var st PrehashStats
	u.seed(ctx)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return st, fmt.Errorf("uploader: prehash %s: %w", dir, local(err))
	}
	var keys []hashKey
	for _, e := range entries {
		if !immutable(e.Name()) || !e.Type().IsRegular() {
			continue
		}
		if err := context.Cause(ctx); err != nil {
			return st, err
		}
		p := filepath.Join(dir, e.Name())
		k, ok := statKey(p)
		if !ok {
			continue
		}
		st.Tables++
		keys = append(keys, k)
		if _, ok := u.cached(k); ok {
			continue
		}
		d, n, err := hashFile(p, u.wantMD5)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return st, fmt.Errorf("uploader: prehash: %w", err)
		}
		u.m.filesHashed.Add(1)
		u.m.bytesHashed.Add(n)
		st.FilesHashed++
		st.BytesHashed += n
		// Cache it only if the file is still what was stat'ed before the
		// read: a table being written grows, and gets another key.
		if again, ok := statKey(p); ok && again == k && n == k.size {
			u.remember(k, d)
		}
	}
	u.keepOnly(keys)
	u.saveCache()
	return st, nil
}

// statKey returns the cache key of the file at p.
func statKey(p string) (hashKey, bool) {
	fi, err := os.Stat(p)
	if err != nil || !fi.Mode().IsRegular() {
		return hashKey{}, false
	}
	return hashKey{name: filepath.Base(p), size: fi.Size(), mtime: fi.ModTime().UnixNano(), ino: inode(fi)}, true
}

// cacheFile is the checksum cache as Config.HashCacheFile holds it.
type cacheFile struct {
	Version int          `json:"version"`
	Tables  []cacheEntry `json:"tables"`
}

type cacheEntry struct {
	Name    string `json:"name"`
	Size    int64  `json:"size"`
	ModTime int64  `json:"mtime_ns"`
	Inode   uint64 `json:"inode"`
	SHA256  string `json:"sha256"`
	MD5     []byte `json:"md5,omitempty"`
}

const cacheFileVersion = 1

// loadCache adds the entries of Config.HashCacheFile to the cache. A
// missing file is an empty cache; an unreadable one is logged and
// ignored: the cache only saves time.
func (u *Uploader) loadCache() {
	p := u.cfg.HashCacheFile
	if p == "" {
		return
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var cf cacheFile
	if err == nil {
		err = json.Unmarshal(b, &cf)
	}
	if err == nil && cf.Version != cacheFileVersion {
		err = fmt.Errorf("version %d, want %d", cf.Version, cacheFileVersion)
	}
	if err != nil {
		u.logger.Warn("uploader: ignoring the checksum cache file", "path", p, "error", err)
		return
	}
	u.cacheMu.Lock()
	defer u.cacheMu.Unlock()
	for _, e := range cf.Tables {
		if !immutable(e.Name) || len(e.SHA256) != 64 || strings.Trim(e.SHA256, "0123456789abcdef") != "" {
			continue
		}
		k := hashKey{name: e.Name, size: e.Size, mtime: e.ModTime, ino: e.Inode}
		if _, ok := u.hashes[k]; !ok {
			u.hashes[k] = digest{sha256: e.SHA256, md5: e.MD5}
		}
	}
}

// saveCache writes the cache to Config.HashCacheFile, through a
// temporary file renamed into place so that a crash leaves the old file
// or the new one. It is not fsynced: losing it costs only hashing.
func (u *Uploader) saveCache() {
	p := u.cfg.HashCacheFile
	if p == "" {
		return
	}
	u.cacheMu.Lock()
	cf := cacheFile{Version: cacheFileVersion, Tables: make([]cacheEntry, 0, len(u.hashes))}
	for k, d := range u.hashes {
		cf.Tables = append(cf.Tables, cacheEntry{Name: k.name, Size: k.size, ModTime: k.mtime, Inode: k.ino, SHA256: d.sha256, MD5: d.md5})
	}
	u.cacheMu.Unlock()
	b, err := json.Marshal(cf)
	if err == nil {
		tmp := p + ".tmp"
		if err = os.WriteFile(tmp, b, 0o600); err == nil {
			err = os.Rename(tmp, p)
		}
	}
	if err != nil {
		u.logger.Warn("uploader: saving the checksum cache file", "path", p, "error", err)
	}
}
