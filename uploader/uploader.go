package uploader

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/azureblob" // azblob://
	_ "gocloud.dev/blob/fileblob"  // file://
	_ "gocloud.dev/blob/gcsblob"   // gs://
	_ "gocloud.dev/blob/memblob"   // mem://
	_ "gocloud.dev/blob/s3blob"    // s3://
	"gocloud.dev/gcerrors"
)

// FormatVersion is the manifest format this package writes and reads.
const FormatVersion = 1

// Bucket key layout.
const (
	filesPrefix      = "files/"
	manifestsPrefix  = "manifests/"
	savepointsPrefix = "savepoints/"
)

var (
	// ErrNotFound is returned for a checkpoint or savepoint the bucket
	// does not hold.
	ErrNotFound = errors.New("uploader: not found")
	// ErrFormat is returned for a manifest this version cannot read.
	ErrFormat = errors.New("uploader: unsupported manifest format")
	// ErrInvalid is returned for a bad argument, e.g. a savepoint name.
	ErrInvalid = errors.New("uploader: invalid argument")
)

// Schemes are the bucket URL schemes OpenBucket supports.
var Schemes = []string{"file", "mem", "s3", "gs", "azblob"}

// OpenBucket opens a bucket URL through gocloud.dev/blob: file:///path
// (the directory is created), mem://, s3://bucket (with endpoint=,
// use_path_style=true, region= and disable_https=true for S3-compatible
// servers), gs://bucket and azblob://container. A prefix=some/path/
// parameter confines stated to that part of the bucket. An unknown scheme
// or a URL that cannot be opened is an error naming it.
func OpenBucket(ctx context.Context, rawURL string) (*blob.Bucket, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("uploader: bucket URL %q: %w", rawURL, err)
	}
	if !slices.Contains(Schemes, u.Scheme) {
		return nil, fmt.Errorf("uploader: bucket URL %q: unknown scheme %q; supported: %s", rawURL, u.Scheme, strings.Join(Schemes, "://, ")+"://")
	}
	if u.Scheme == "file" {
		if u.Path == "" {
			return nil, fmt.Errorf("uploader: bucket URL %q: file:// needs an absolute path, e.g. file:///var/lib/stated/checkpoints", rawURL)
		}
		if err := os.MkdirAll(u.Path, 0o700); err != nil {
			return nil, fmt.Errorf("uploader: bucket URL %q: %w", rawURL, err)
		}
	}
	b, err := blob.OpenBucket(ctx, rawURL)
	if err != nil {
		return nil, fmt.Errorf("uploader: open bucket %q: %w", rawURL, err)
	}
	return b, nil
}

// Config configures an Uploader.
type Config struct {
	Bucket *blob.Bucket
	// Workers is how many files are uploaded or downloaded at once.
	// Default 4.
	Workers int
	// MaxAttempts bounds the attempts of one blob operation; transient
	// errors are retried with exponential backoff and jitter. Default 5.
	MaxAttempts int
	// Backoff is the first retry's wait. Default 100ms.
	Backoff time.Duration
	// GCGrace protects unreferenced blobs modified more recently than
	// this from garbage collection: an upload in progress (possibly on
	// another node, after a leader change) may still reference them.
	// Default 10 minutes; a negative grace means none.
	GCGrace time.Duration
	// Logger receives warnings about retries; nil discards them.
	Logger *slog.Logger
}

// Uploader moves checkpoints to and from a bucket. It is safe for
// concurrent use, but Upload and Retain are meant to run one at a time,
// from the leader's coordinator.
type Uploader struct {
	cfg    Config
	b      *blob.Bucket
	logger *slog.Logger

	mu     sync.Mutex
	hashes map[hashKey]fileSum // hashes of local files, by identity
}

// hashKey identifies a local file whose content cannot have changed:
// Pebble never rewrites an SST, and a checkpoint hard-links them.
type hashKey struct {
	name  string
	size  int64
	mtime int64
	ino   uint64
}

type fileSum struct {
	sha256 string
	md5    []byte
}

// New returns an Uploader over cfg.Bucket.
func New(cfg Config) (*Uploader, error) {
	if cfg.Bucket == nil {
		return nil, fmt.Errorf("%w: Config.Bucket is nil", ErrInvalid)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 100 * time.Millisecond
	}
	switch {
	case cfg.GCGrace == 0:
		cfg.GCGrace = 10 * time.Minute
	case cfg.GCGrace < 0:
		cfg.GCGrace = 0
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Uploader{cfg: cfg, b: cfg.Bucket, logger: logger, hashes: map[hashKey]fileSum{}}, nil
}

// Offset is a consumer group's next offset for a partition.
type Offset struct {
	Group     string `json:"group"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// Stats count the state a checkpoint holds.
type Stats struct {
	Keys  uint64 `json:"keys"`
	Bytes uint64 `json:"bytes"`
}

// Meta is what the caller knows of a checkpoint.
type Meta struct {
	Epoch     uint64    `json:"epoch"`
	RaftIndex uint64    `json:"raft_index"`
	RaftTerm  uint64    `json:"raft_term"`
	ClusterID string    `json:"cluster_id"`
	CreatedAt time.Time `json:"created_at"`
	Offsets   []Offset  `json:"offsets"`
	Stats     Stats     `json:"stats"`
}

// File is one file of a checkpoint: its path relative to the checkpoint
// directory (slash-separated), its size and its SHA-256 (hex), which is
// also its blob's key under files/.
type File struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Manifest describes a completed checkpoint. Written last, it is the
// checkpoint's commit point: a manifest exists only once every file it
// lists is in the bucket.
type Manifest struct {
	FormatVersion int `json:"format_version"`
	Meta
	Files []File `json:"files"`
	// Savepoint is the name the checkpoint is pinned under, if any.
	Savepoint string `json:"savepoint,omitempty"`
}

// Bytes is the total size of the manifest's files.
func (m *Manifest) Bytes() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// BlobKey is the bucket key of a file with this SHA-256.
func BlobKey(sha string) string { return filesPrefix + sha }

func manifestKey(epoch uint64) string { return fmt.Sprintf("%s%020d.json", manifestsPrefix, epoch) }

func savepointKey(name string) string { return savepointsPrefix + name + ".json" }

// UploadStats say what an Upload sent.
type UploadStats struct {
	Files, FilesUploaded int
	Bytes, BytesUploaded int64
	Duration             time.Duration
}

// Progress is told the bytes done of a total; it may be called from
// several goroutines and must be cheap.
type Progress func(done, total int64)

type localFile struct {
	File
	abs string
	md5 []byte
}

// Upload sends the files of dir that the bucket does not hold yet, then
// writes the manifest: a file already in the bucket (same SHA-256) is
// never sent again. Before the manifest is written every file it lists
// is checked to be in the bucket with its size. If ctx ends or a file
// cannot be sent, no manifest is written and the error names the file.
func (u *Uploader) Upload(ctx context.Context, dir string, meta Meta, progress Progress) (*Manifest, UploadStats, error) {
	start := time.Now()
	files, err := u.scan(ctx, dir)
	if err != nil {
		return nil, UploadStats{}, err
	}
	st := UploadStats{Files: len(files)}
	m := &Manifest{FormatVersion: FormatVersion, Meta: meta, Files: make([]File, len(files))}
	var missing []localFile
	present, err := u.present(ctx, files)
	if err != nil {
		return nil, st, err
	}
	for i, f := range files {
		m.Files[i] = f.File
		st.Bytes += f.Size
		if !present[f.SHA256] {
			missing = append(missing, f)
			st.BytesUploaded += f.Size
		}
	}
	st.FilesUploaded = len(missing)
	var done atomic.Int64
	err = u.parallel(ctx, len(missing), func(ctx context.Context, i int) error {
		f := missing[i]
		if err := u.retry(ctx, "upload "+f.Path, func() error { return u.put(ctx, f) }); err != nil {
			return fmt.Errorf("uploader: checkpoint %d: file %s (blob %s): %w", meta.Epoch, f.Path, BlobKey(f.SHA256), err)
		}
		if progress != nil {
			progress(done.Add(f.Size), st.BytesUploaded)
		}
		return nil
	})
	if err != nil {
		return nil, st, err
	}
	// The commit point: every file is there, the manifest goes last.
	if err := u.verifyPresent(ctx, m); err != nil {
		return nil, st, err
	}
	if err := ctx.Err(); err != nil {
		return nil, st, fmt.Errorf("uploader: checkpoint %d: %w", meta.Epoch, err)
	}
	if err := u.writeJSON(ctx, manifestKey(meta.Epoch), m); err != nil {
		return nil, st, fmt.Errorf("uploader: checkpoint %d: write manifest: %w", meta.Epoch, err)
	}
	st.Duration = time.Since(start)
	return m, st, nil
}

// scan lists dir's regular files and their hashes; unchanged files keep
// the hash computed before.
func (u *Uploader) scan(ctx context.Context, dir string) ([]localFile, error) {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("uploader: list %s: %w", dir, err)
	}
	files := make([]localFile, len(paths))
	err = u.parallel(ctx, len(paths), func(ctx context.Context, i int) error {
		p := paths[i]
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("uploader: %w", err)
		}
		key := hashKey{name: filepath.Base(p), size: fi.Size(), mtime: fi.ModTime().UnixNano(), ino: inode(fi)}
		u.mu.Lock()
		sum, ok := u.hashes[key]
		u.mu.Unlock()
		if !ok {
			if sum, err = hashFile(p); err != nil {
				return err
			}
			if immutable(p) {
				u.mu.Lock()
				u.hashes[key] = sum
				u.mu.Unlock()
			}
		}
		files[i] = localFile{File: File{Path: filepath.ToSlash(rel), Size: fi.Size(), SHA256: sum.sha256}, abs: p, md5: sum.md5}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(files, func(a, b localFile) int { return strings.Compare(a.Path, b.Path) })
	return files, nil
}

// immutable reports whether a file is one Pebble never changes once
// written: its tables. WAL, MANIFEST and OPTIONS files are hashed every
// time.
func immutable(p string) bool { return strings.HasSuffix(p, ".sst") }

func hashFile(p string) (fileSum, error) {
	f, err := os.Open(p)
	if err != nil {
		return fileSum{}, fmt.Errorf("uploader: %w", err)
	}
	defer f.Close()
	sh, mh := sha256.New(), md5.New()
	if _, err := io.Copy(io.MultiWriter(sh, mh), f); err != nil {
		return fileSum{}, fmt.Errorf("uploader: read %s: %w", p, err)
	}
	return fileSum{sha256: hex.EncodeToString(sh.Sum(nil)), md5: mh.Sum(nil)}, nil
}

// present reports which of files' blobs the bucket holds with the right
// size, asking for each one.
func (u *Uploader) present(ctx context.Context, files []localFile) (map[string]bool, error) {
	var mu sync.Mutex
	out := map[string]bool{}
	err := u.parallel(ctx, len(files), func(ctx context.Context, i int) error {
		f := files[i]
		var ok bool
		err := u.retry(ctx, "stat "+f.Path, func() error {
			a, err := u.b.Attributes(ctx, BlobKey(f.SHA256))
			if gcerrors.Code(err) == gcerrors.NotFound {
				ok = false
				return nil
			}
			if err != nil {
				return err
			}
			ok = a.Size == f.Size && (len(a.MD5) == 0 || bytes.Equal(a.MD5, f.md5))
			return nil
		})
		if err != nil {
			return fmt.Errorf("uploader: file %s (blob %s): %w", f.Path, BlobKey(f.SHA256), err)
		}
		mu.Lock()
		out[f.SHA256] = out[f.SHA256] || ok
		mu.Unlock()
		return nil
	})
	return out, err
}

// put uploads one file and checks what the bucket then holds.
func (u *Uploader) put(ctx context.Context, f localFile) (err error) {
	defer func() {
		// gocloud's azureblob writer (v0.47.0) can dereference a nil pipe
		// in Close when the upload itself failed (its upload goroutine
		// clears the pipe while Close reads it): report that as the failed
		// upload it is rather than crash the daemon.
		if r := recover(); r != nil {
			err = fmt.Errorf("blob driver panicked while closing the upload: %v", r)
		}
	}()
	src, err := os.Open(f.abs)
	if err != nil {
		return err
	}
	defer src.Close()
	w, err := u.b.NewWriter(ctx, BlobKey(f.SHA256), &blob.WriterOptions{ContentMD5: f.md5, ContentType: "application/octet-stream"})
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, src); err != nil {
		w.Close()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	a, err := u.b.Attributes(ctx, BlobKey(f.SHA256))
	if err != nil {
		return err
	}
	if a.Size != f.Size || len(a.MD5) > 0 && !bytes.Equal(a.MD5, f.md5) {
		return fmt.Errorf("the bucket holds %d bytes (MD5 %x), want %d (MD5 %x)", a.Size, a.MD5, f.Size, f.md5)
	}
	return nil
}

// verifyPresent checks that every file m lists is in the bucket with its
// size: a blob that went missing since (another node's GC) is caught
// before the manifest refers to it.
func (u *Uploader) verifyPresent(ctx context.Context, m *Manifest) error {
	return u.parallel(ctx, len(m.Files), func(ctx context.Context, i int) error {
		f := m.Files[i]
		return u.retry(ctx, "check "+f.Path, func() error {
			a, err := u.b.Attributes(ctx, BlobKey(f.SHA256))
			if err != nil {
				return fmt.Errorf("uploader: checkpoint %d: file %s (blob %s): %w", m.Epoch, f.Path, BlobKey(f.SHA256), err)
			}
			if a.Size != f.Size {
				return fmt.Errorf("uploader: checkpoint %d: file %s (blob %s) has %d bytes, want %d", m.Epoch, f.Path, BlobKey(f.SHA256), a.Size, f.Size)
			}
			return nil
		})
	})
}

func (u *Uploader) writeJSON(ctx context.Context, key string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return u.retry(ctx, "write "+key, func() error {
		return u.b.WriteAll(ctx, key, b, &blob.WriterOptions{ContentType: "application/json"})
	})
}

// retry runs op until it succeeds, fails permanently, ctx ends or
// MaxAttempts ran out, with exponential backoff and jitter.
func (u *Uploader) retry(ctx context.Context, what string, op func() error) error {
	wait := u.cfg.Backoff
	var err error
	for attempt := 1; ; attempt++ {
		if err = op(); err == nil || !transient(err) || attempt >= u.cfg.MaxAttempts || ctx.Err() != nil {
			return err
		}
		u.logger.Warn("uploader: retrying", "op", what, "attempt", attempt, "error", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait/2 + rand.N(wait)):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// transient reports whether a failed blob operation may succeed when
// tried again.
func transient(err error) bool {
	var ce *errCorrupt
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ce) {
		return false
	}
	switch gcerrors.Code(err) {
	case gcerrors.NotFound, gcerrors.PermissionDenied, gcerrors.InvalidArgument, gcerrors.Unimplemented:
		return false
	}
	return true
}

// parallel runs fn for 0..n-1 on the configured workers and returns the
// first error; the others are cancelled.
func (u *Uploader) parallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range min(u.cfg.Workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err; cancel(err) })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// List returns the completed checkpoints, oldest first. A checkpoint
// pinned as a savepoint carries its name; a savepoint whose manifest was
// retired by retention is listed from its savepoint copy.
func (u *Uploader) List(ctx context.Context) ([]*Manifest, error) {
	byEpoch := map[uint64]*Manifest{}
	for _, prefix := range []string{manifestsPrefix, savepointsPrefix} {
		keys, err := u.keys(ctx, prefix)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			m, err := u.readManifest(ctx, k)
			if err != nil {
				return nil, err
			}
			if old, ok := byEpoch[m.Epoch]; ok && m.Savepoint == "" {
				continue // keep the savepoint's name
			} else if ok && old.Savepoint != "" {
				continue
			}
			byEpoch[m.Epoch] = m
		}
	}
	out := make([]*Manifest, 0, len(byEpoch))
	for _, m := range byEpoch {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b *Manifest) int { return cmpUint(a.Epoch, b.Epoch) })
	return out, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// keys lists the keys under prefix.
func (u *Uploader) keys(ctx context.Context, prefix string) ([]string, error) {
	var out []string
	err := u.retry(ctx, "list "+prefix, func() error {
		out = out[:0]
		it := u.b.List(&blob.ListOptions{Prefix: prefix})
		for {
			obj, err := it.Next(ctx)
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if !obj.IsDir {
				out = append(out, obj.Key)
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("uploader: list %s: %w", prefix, err)
	}
	return out, nil
}

func (u *Uploader) readManifest(ctx context.Context, key string) (*Manifest, error) {
	var b []byte
	err := u.retry(ctx, "read "+key, func() error {
		var err error
		b, err = u.b.ReadAll(ctx, key)
		return err
	})
	if gcerrors.Code(err) == gcerrors.NotFound {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil {
		return nil, fmt.Errorf("uploader: read %s: %w", key, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("uploader: manifest %s: %w", key, err)
	}
	if m.FormatVersion != FormatVersion {
		return nil, fmt.Errorf("%w: manifest %s has format version %d; this stated reads version %d", ErrFormat, key, m.FormatVersion, FormatVersion)
	}
	return &m, nil
}

// Get returns checkpoint epoch's manifest: its own, or a savepoint's copy.
func (u *Uploader) Get(ctx context.Context, epoch uint64) (*Manifest, error) {
	m, err := u.readManifest(ctx, manifestKey(epoch))
	if !errors.Is(err, ErrNotFound) {
		return m, err
	}
	all, lerr := u.List(ctx)
	if lerr != nil {
		return nil, lerr
	}
	for _, m := range all {
		if m.Epoch == epoch {
			return m, nil
		}
	}
	return nil, fmt.Errorf("%w: checkpoint %d is not in the bucket", ErrNotFound, epoch)
}

// Latest returns the newest completed checkpoint.
func (u *Uploader) Latest(ctx context.Context) (*Manifest, error) {
	all, err := u.List(ctx)
	if err != nil {
		return nil, err
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("%w: the bucket holds no checkpoint", ErrNotFound)
	}
	return all[len(all)-1], nil
}

// GetSavepoint returns the checkpoint pinned under name.
func (u *Uploader) GetSavepoint(ctx context.Context, name string) (*Manifest, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	m, err := u.readManifest(ctx, savepointKey(name))
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: no savepoint named %q", ErrNotFound, name)
	}
	return m, err
}

func checkName(name string) error {
	if name == "" || len(name) > 128 {
		return fmt.Errorf("%w: savepoint name %q: want 1 to 128 characters", ErrInvalid, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: savepoint name %q: invalid character %q; use [a-zA-Z0-9._-]", ErrInvalid, name, c)
		}
	}
	return nil
}

// Savepoint pins checkpoint epoch under name: a copy of its manifest
// under savepoints/, which retention keeps. Names are unique.
func (u *Uploader) Savepoint(ctx context.Context, epoch uint64, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if _, err := u.GetSavepoint(ctx, name); err == nil {
		return fmt.Errorf("%w: savepoint %q exists already", ErrInvalid, name)
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	m, err := u.Get(ctx, epoch)
	if err != nil {
		return err
	}
	sp := *m
	sp.Savepoint = name
	return u.writeJSON(ctx, savepointKey(name), &sp)
}

// Delete removes checkpoint epoch: its manifest and any savepoint of it.
// Its files go at the next Retain unless another kept checkpoint uses
// them.
func (u *Uploader) Delete(ctx context.Context, epoch uint64) error {
	m, err := u.Get(ctx, epoch)
	if err != nil {
		return err
	}
	keys := []string{manifestKey(epoch)}
	sps, err := u.keys(ctx, savepointsPrefix)
	if err != nil {
		return err
	}
	for _, k := range sps {
		sp, err := u.readManifest(ctx, k)
		if err != nil {
			return err
		}
		if sp.Epoch == m.Epoch {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		if err := u.delete(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

func (u *Uploader) delete(ctx context.Context, key string) error {
	err := u.retry(ctx, "delete "+key, func() error {
		err := u.b.Delete(ctx, key)
		if gcerrors.Code(err) == gcerrors.NotFound {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("uploader: delete %s: %w", key, err)
	}
	return nil
}

// GCStats say what Retain removed.
type GCStats struct {
	ManifestsDeleted int
	BlobsDeleted     int
	BytesDeleted     int64
	// BlobsKept counts unreferenced blobs younger than the grace period.
	BlobsKept int
}

// Retain keeps the newest keep checkpoints and every savepoint, deletes
// the other manifests, then deletes the blobs under files/ that no
// remaining manifest references and that are older than GCGrace (which
// also clears the leftovers of failed uploads).
func (u *Uploader) Retain(ctx context.Context, keep int) (GCStats, error) {
	var st GCStats
	if keep < 1 {
		return st, fmt.Errorf("%w: retain %d: keep at least one checkpoint", ErrInvalid, keep)
	}
	mkeys, err := u.keys(ctx, manifestsPrefix)
	if err != nil {
		return st, err
	}
	slices.Sort(mkeys) // zero-padded epochs: oldest first
	if len(mkeys) > keep {
		for _, k := range mkeys[:len(mkeys)-keep] {
			if err := u.delete(ctx, k); err != nil {
				return st, err
			}
			st.ManifestsDeleted++
		}
		mkeys = mkeys[len(mkeys)-keep:]
	}
	skeys, err := u.keys(ctx, savepointsPrefix)
	if err != nil {
		return st, err
	}
	referenced := map[string]bool{}
	for _, k := range append(mkeys, skeys...) {
		m, err := u.readManifest(ctx, k)
		if err != nil {
			// A manifest that cannot be read might reference anything:
			// collect nothing rather than guess.
			return st, fmt.Errorf("uploader: gc: %w", err)
		}
		for _, f := range m.Files {
			referenced[BlobKey(f.SHA256)] = true
		}
	}
	cutoff := time.Now().Add(-u.cfg.GCGrace)
	it := u.b.List(&blob.ListOptions{Prefix: filesPrefix})
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return st, fmt.Errorf("uploader: gc: list: %w", err)
		}
		if obj.IsDir || referenced[obj.Key] {
			continue
		}
		if obj.ModTime.After(cutoff) {
			st.BlobsKept++
			continue
		}
		if err := u.delete(ctx, obj.Key); err != nil {
			return st, err
		}
		st.BlobsDeleted++
		st.BytesDeleted += obj.Size
	}
	return st, nil
}

// DownloadStats say what a Download fetched.
type DownloadStats struct {
	Files, FilesDownloaded int
	Bytes, BytesDownloaded int64
	Duration               time.Duration
}

// Download writes m's files into dir, in parallel, verifying the size and
// SHA-256 of each; a file already in dir with the right size and checksum
// is kept (an incremental restore). Each file is written to a temporary
// name and renamed into place once verified. A missing or corrupt blob is
// an error naming the file, its blob and the checkpoint.
func (u *Uploader) Download(ctx context.Context, m *Manifest, dir string, progress Progress) (DownloadStats, error) {
	start := time.Now()
	st := DownloadStats{Files: len(m.Files)}
	for _, f := range m.Files {
		if !validPath(f.Path) {
			return st, fmt.Errorf("uploader: checkpoint %d: file path %q leaves the checkpoint directory", m.Epoch, f.Path)
		}
	}
	var need []File
	for _, f := range m.Files {
		st.Bytes += f.Size
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		if fi, err := os.Stat(p); err == nil && fi.Size() == f.Size {
			if sum, err := hashFile(p); err == nil && sum.sha256 == f.SHA256 {
				continue
			}
		}
		need = append(need, f)
		st.BytesDownloaded += f.Size
	}
	st.FilesDownloaded = len(need)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return st, fmt.Errorf("uploader: %w", err)
	}
	var done atomic.Int64
	err := u.parallel(ctx, len(need), func(ctx context.Context, i int) error {
		f := need[i]
		err := u.retry(ctx, "download "+f.Path, func() error { return u.get(ctx, f, dir) })
		if err != nil {
			return fmt.Errorf("uploader: checkpoint %d: file %s (blob %s): %w", m.Epoch, f.Path, BlobKey(f.SHA256), err)
		}
		if progress != nil {
			progress(done.Add(f.Size), st.BytesDownloaded)
		}
		return nil
	})
	st.Duration = time.Since(start)
	return st, err
}

func validPath(p string) bool {
	return p != "" && !strings.HasPrefix(p, "/") && !slices.Contains(strings.Split(p, "/"), "..")
}

// errCorrupt marks a blob whose content is not what the manifest says;
// it is not retried.
type errCorrupt struct{ msg string }

func (e *errCorrupt) Error() string { return e.msg }

func (u *Uploader) get(ctx context.Context, f File, dir string) error {
	dst := filepath.Join(dir, filepath.FromSlash(f.Path))
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	r, err := u.b.NewReader(ctx, BlobKey(f.SHA256), nil)
	if err != nil {
		if gcerrors.Code(err) == gcerrors.NotFound {
			return &errCorrupt{"missing from the bucket"}
		}
		return err
	}
	defer r.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), r)
	if err != nil {
		tmp.Close()
		return err
	}
	if err := verifyContent(n, h, f); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

func verifyContent(n int64, h hash.Hash, f File) error {
	if n != f.Size {
		return &errCorrupt{fmt.Sprintf("corrupt: %d bytes, the manifest says %d", n, f.Size)}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
		return &errCorrupt{fmt.Sprintf("corrupt: SHA-256 %s, the manifest says %s", got, f.SHA256)}
	}
	return nil
}

// FileProblem is a file of a checkpoint that is missing or not intact.
type FileProblem struct {
	Path    string
	BlobKey string
	Problem string
}

// Verify reads every blob m lists and reports those that are missing or
// whose size or SHA-256 is wrong. It returns an error only when the
// bucket cannot be read at all.
func (u *Uploader) Verify(ctx context.Context, m *Manifest) ([]FileProblem, error) {
	var mu sync.Mutex
	var out []FileProblem
	err := u.parallel(ctx, len(m.Files), func(ctx context.Context, i int) error {
		f := m.Files[i]
		var problem string
		err := u.retry(ctx, "verify "+f.Path, func() error {
			problem = ""
			r, err := u.b.NewReader(ctx, BlobKey(f.SHA256), nil)
			if gcerrors.Code(err) == gcerrors.NotFound {
				problem = "missing from the bucket"
				return nil
			}
			if err != nil {
				return err
			}
			defer r.Close()
			h := sha256.New()
			n, err := io.Copy(h, r)
			if err != nil {
				return err
			}
			if err := verifyContent(n, h, f); err != nil {
				problem = err.Error()
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("uploader: verify checkpoint %d: file %s: %w", m.Epoch, f.Path, err)
		}
		if problem != "" {
			mu.Lock()
			out = append(out, FileProblem{Path: f.Path, BlobKey: BlobKey(f.SHA256), Problem: problem})
			mu.Unlock()
		}
		return nil
	})
	slices.SortFunc(out, func(a, b FileProblem) int { return strings.Compare(a.Path, b.Path) })
	return out, err
}
