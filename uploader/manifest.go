package uploader

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"gocloud.dev/gcerrors"
)

// FormatVersion is the format of a table checkpoint's manifest. This
// package writes and reads it and FormatVersionChangelog (changelog.go);
// a release from before changelog checkpoints reads FormatVersion only.
const FormatVersion = 1

// Bucket key layout; see the package documentation.
const (
	filesPrefix      = "files/"
	manifestsPrefix  = "manifests/"
	savepointsPrefix = "savepoints/"
)

// BlobKey is the bucket key of the file with this SHA-256 (hex).
func BlobKey(sha256Hex string) string { return filesPrefix + sha256Hex }

func manifestKey(epoch uint64) string { return fmt.Sprintf("%s%020d.json", manifestsPrefix, epoch) }

func savepointKey(name string) string { return savepointsPrefix + name + ".json" }

// Offset is a consumer group's next offset in a partition.
type Offset struct {
	Group     string `json:"group"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// Stats count the state a checkpoint holds, as its caller computed them.
type Stats struct {
	Keys  uint64 `json:"keys"`
	Bytes uint64 `json:"bytes"` // logical bytes of keys and values
	// KeysNotCounted, when set, says why Keys and Bytes were not counted
	// (they are zero) in a table checkpoint. Empty when they were, and in
	// manifests written before it: a release that does not know it reads
	// zero keys. A changelog checkpoint's are never counted, which its
	// Changelog says.
	KeysNotCounted string `json:"keys_not_counted,omitempty"`
	// Windows are the checkpoint's window namespaces, by name: empty when
	// it has none, nil when the manifest does not say (one written before
	// window state, or whose caller could not read them).
	Windows []WindowStats `json:"windows"`
}

// WindowStats is a window namespace as a checkpoint holds it.
type WindowStats struct {
	Namespace string `json:"namespace"`
	// Watermark is the namespace's watermark (ms since the Unix epoch),
	// -1 before any record or hint moved it.
	Watermark    int64 `json:"watermark_ms"`
	MaxEventTime int64 `json:"max_event_time_ms"`
	// Pending counts the emissions not acknowledged at the checkpoint: a
	// restore hands them to the application again.
	Pending     int64 `json:"pending_emissions"`
	OpenWindows int64 `json:"open_windows"`
}

// Meta is what the caller knows of a checkpoint; Upload stores it in the
// manifest as given.
type Meta struct {
	Epoch     uint64    `json:"epoch"` // from 1; names the manifest
	RaftIndex uint64    `json:"raft_index"`
	RaftTerm  uint64    `json:"raft_term"`
	ClusterID string    `json:"cluster_id"`
	CreatedAt time.Time `json:"created_at"`
	Offsets   []Offset  `json:"offsets"`
	Stats     Stats     `json:"stats"`
}

// File is one file of a checkpoint.
type File struct {
	// Path is relative to the checkpoint directory, slash-separated.
	Path string `json:"path"`
	Size int64  `json:"size"`
	// SHA256 is the content's checksum in lower-case hex; the file's
	// blob is BlobKey(SHA256).
	SHA256 string `json:"sha256"`
	// LocalInode and LocalModTime (Unix nanoseconds) identify the local
	// file the uploader read. They are hints that let an uploader
	// restarted on the same node reuse the checksums of unchanged SST
	// files instead of reading them again; nothing else uses them.
	LocalInode   uint64 `json:"local_inode,omitempty"`
	LocalModTime int64  `json:"local_mtime_ns,omitempty"`
	// Stored is set in an encrypted checkpoint: the blob the file is
	// kept as, sealed (see encrypt.go). Its checksum is checkable
	// without the key; SHA256 and Size stay the plaintext's.
	Stored *Stored `json:"stored,omitempty"`
}

// Manifest describes a completed checkpoint. Written last, it is the
// checkpoint's commit point: a manifest exists only once every file it
// lists is in the bucket.
type Manifest struct {
	FormatVersion int `json:"format_version"`
	Meta
	Files []File `json:"files"`
	// Encryption is set when the files are encrypted; every file then
	// has Stored.
	Encryption *Encryption `json:"encryption,omitempty"`
	// Savepoint is the name the checkpoint is pinned under, if any.
	Savepoint string `json:"savepoint,omitempty"`
	// Changelog is set in a changelog checkpoint (FormatVersionChangelog):
	// Files are then its base's and its segments.
	Changelog *Changelog `json:"changelog,omitempty"`
}

// Bytes is the total size of the manifest's files.
func (m *Manifest) Bytes() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// validate checks what Download and GC rely on: paths that stay inside
// the checkpoint directory, each once, well-formed checksums, and a
// changelog exactly when the format has one.
func (m *Manifest) validate() error {
	if err := checkVersion(m.FormatVersion); err != nil {
		return err
	}
	switch {
	case m.FormatVersion == FormatVersionChangelog && m.Changelog == nil:
		return fmt.Errorf("%w: checkpoint %d: format version %d without a changelog", ErrFormat, m.Epoch, m.FormatVersion)
	case m.FormatVersion != FormatVersionChangelog && m.Changelog != nil:
		return fmt.Errorf("%w: checkpoint %d: format version %d with a changelog, which only version %d has", ErrFormat, m.Epoch, m.FormatVersion, FormatVersionChangelog)
	}
	seen := make(map[string]bool, len(m.Files))
	for _, f := range m.Files {
		switch {
		case !validPath(f.Path):
			return fmt.Errorf("%w: checkpoint %d: file path %q is not a clean relative path", ErrFormat, m.Epoch, f.Path)
		case seen[f.Path]:
			return fmt.Errorf("%w: checkpoint %d: file %s is listed twice", ErrFormat, m.Epoch, f.Path)
		case f.Size < 0:
			return fmt.Errorf("%w: checkpoint %d: file %s has size %d", ErrFormat, m.Epoch, f.Path, f.Size)
		case !validSHA256(f.SHA256):
			return fmt.Errorf("%w: checkpoint %d: file %s has checksum %q, want 64 lower-case hex digits", ErrFormat, m.Epoch, f.Path, f.SHA256)
		case (m.Encryption != nil) != (f.Stored != nil):
			return fmt.Errorf("%w: checkpoint %d: file %s: encryption %t but stored blob %t", ErrFormat, m.Epoch, f.Path, m.Encryption != nil, f.Stored != nil)
		case f.Stored != nil && (!validSHA256(f.Stored.SHA256) || f.Stored.Size < 0):
			return fmt.Errorf("%w: checkpoint %d: file %s has a stored blob with checksum %q and size %d", ErrFormat, m.Epoch, f.Path, f.Stored.SHA256, f.Stored.Size)
		}
		seen[f.Path] = true
	}
	if m.Changelog != nil {
		if err := m.Changelog.validate(m.Meta, seen); err != nil {
			return fmt.Errorf("%w: checkpoint %d: %w", ErrFormat, m.Epoch, err)
		}
	}
	return nil
}

// checkVersion refuses a manifest format this package does not read.
func checkVersion(v int) error {
	if v != FormatVersion && v != FormatVersionChangelog {
		return fmt.Errorf("%w: format version %d; this stated reads versions %d and %d", ErrFormat, v, FormatVersion, FormatVersionChangelog)
	}
	return nil
}

func validPath(p string) bool {
	return p != "" && !strings.ContainsRune(p, 0) && path.Clean(p) == p && !path.IsAbs(p) && p != "." && p != ".." && !strings.HasPrefix(p, "../")
}

func validSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// CheckSavepointName reports whether name is a valid savepoint name: 1
// to 128 of [A-Za-z0-9._-], not "." or "..". It does not say whether a
// savepoint of that name exists.
func CheckSavepointName(name string) error { return checkName(name) }

// checkName validates a savepoint name: 1 to 128 of [A-Za-z0-9._-].
func checkName(name string) error {
	if name == "" || len(name) > 128 {
		return invalidf("savepoint name %q: want 1 to 128 characters", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return invalidf("savepoint name %q: invalid character %q; use [A-Za-z0-9._-]", name, c)
		}
	}
	if name == "." || name == ".." {
		return invalidf("savepoint name %q is reserved", name)
	}
	return nil
}

// readManifest reads and checks the manifest under key. A manifest that
// is missing is ErrNotFound; one of another format, or that does not
// parse, is ErrFormat.
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
	// The version first: a newer format may not fit today's struct.
	var v struct {
		FormatVersion int `json:"format_version"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("%w: manifest %s does not parse: %v", ErrFormat, key, err)
	}
	if err := checkVersion(v.FormatVersion); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", key, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: manifest %s does not parse: %v", ErrFormat, key, err)
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", key, err)
	}
	if strings.HasPrefix(key, manifestsPrefix) && key != manifestKey(m.Epoch) {
		return nil, fmt.Errorf("%w: manifest %s holds checkpoint %d", ErrFormat, key, m.Epoch)
	}
	return &m, nil
}

// writeManifest writes m under key, durably, and checks what the bucket
// then holds.
func (u *Uploader) writeManifest(ctx context.Context, key string, m *Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("uploader: encode %s: %w", key, err)
	}
	return u.writeDurably(ctx, key, b)
}

// writeDurably writes the JSON b under key, fsynced in a file:// bucket,
// and checks what the bucket then holds.
func (u *Uploader) writeDurably(ctx context.Context, key string, b []byte) error {
	return u.writeDurablyIf(ctx, key, b, false)
}

// writeDurablyIf is writeDurably; with ifNotExist it writes nothing where
// key exists, and fails with gcerrors.FailedPrecondition (writeBlobIf).
func (u *Uploader) writeDurablyIf(ctx context.Context, key string, b []byte, ifNotExist bool) error {
	sum := md5.Sum(b)
	return u.retry(ctx, "write "+key, func() error {
		p, err := u.writeBlobIf(ctx, key, bytes.NewReader(b), sum[:], "application/json", ifNotExist)
		if err != nil {
			return err
		}
		if err := u.syncFiles(ctx, []string{p}); err != nil {
			return err
		}
		return u.checkBlob(ctx, key, int64(len(b)), sum[:])
	})
}

// readAll reads the manifests under keys (one deleted since it was
// listed is left out); one that does not read fails it, as retention
// needs every manifest's files.
func (u *Uploader) readAll(ctx context.Context, keys []string) ([]*Manifest, error) {
	ms, unreadable, err := u.readReadable(ctx, keys)
	if err == nil && len(unreadable) > 0 {
		err = unreadable[0].Err
	}
	return ms, err
}

// Unreadable is a manifest or savepoint pin in the bucket that this
// version cannot read (ErrFormat: a newer release's format, a damaged
// file). Listing, selecting and restoring other checkpoints leave it out
// rather than fail on it; retention does not (it cannot know which files
// it references, so it deletes nothing while one is there).
type Unreadable struct {
	Key   string
	Epoch uint64 // a manifest's, from its key; 0 for a savepoint
	Err   error
}

// readReadable reads the manifests under keys in parallel, leaving out
// those deleted since they were listed, and returns apart those that do
// not read (ErrFormat).
func (u *Uploader) readReadable(ctx context.Context, keys []string) ([]*Manifest, []Unreadable, error) {
	out := make([]*Manifest, len(keys))
	bad := make([]error, len(keys))
	err := u.parallel(ctx, len(keys), func(ctx context.Context, i int) error {
		m, err := u.readManifest(ctx, keys[i])
		switch {
		case errors.Is(err, ErrNotFound):
			return nil
		case errors.Is(err, ErrFormat):
			bad[i] = err
			return nil
		}
		out[i] = m
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	var unreadable []Unreadable
	for i, err := range bad {
		if err == nil {
			continue
		}
		un := Unreadable{Key: keys[i], Err: err}
		if strings.HasPrefix(keys[i], manifestsPrefix) {
			un.Epoch, _ = manifestKeyEpoch(keys[i])
		}
		unreadable = append(unreadable, un)
	}
	return slices.DeleteFunc(out, func(m *Manifest) bool { return m == nil }), unreadable, nil
}

// savepoints returns the savepoints that read, by name, and those that
// do not.
func (u *Uploader) savepoints(ctx context.Context) (map[string]*Manifest, []Unreadable, error) {
	keys, _, err := u.keys(ctx, savepointsPrefix)
	if err != nil {
		return nil, nil, err
	}
	ms, unreadable, err := u.readReadable(ctx, keys)
	if err != nil {
		return nil, nil, err
	}
	out := make(map[string]*Manifest, len(ms))
	for _, m := range ms {
		out[m.Savepoint] = m
	}
	return out, unreadable, nil
}

// readableSavepoints is savepoints, logging those that do not read.
func (u *Uploader) readableSavepoints(ctx context.Context) (map[string]*Manifest, error) {
	sps, unreadable, err := u.savepoints(ctx)
	u.warnUnreadable(unreadable)
	return sps, err
}

func (u *Uploader) warnUnreadable(unreadable []Unreadable) {
	for _, un := range unreadable {
		u.logger.Warn("uploader: a manifest or savepoint in the bucket does not read; it is left out", "key", un.Key, "error", un.Err)
	}
}

// pinnedAs returns the savepoint names of each pinned epoch, sorted.
func pinnedAs(sps map[string]*Manifest) map[uint64][]string {
	out := map[uint64][]string{}
	for name, m := range sps {
		out[m.Epoch] = append(out[m.Epoch], name)
	}
	for _, names := range out {
		slices.Sort(names)
	}
	return out
}

// List returns the completed checkpoints, oldest first. A checkpoint
// pinned as a savepoint carries its name; a savepoint whose manifest
// retention or Delete removed is listed from its savepoint copy. A
// manifest or savepoint that does not read is left out, and logged.
func (u *Uploader) List(ctx context.Context) ([]*Manifest, error) {
	ms, unreadable, err := u.Catalog(ctx)
	u.warnUnreadable(unreadable)
	return ms, err
}

// Catalog is List, and the manifests and savepoints that do not read.
func (u *Uploader) Catalog(ctx context.Context) ([]*Manifest, []Unreadable, error) {
	var (
		wg           sync.WaitGroup
		sps          map[string]*Manifest
		spErr, mErr  error
		ms           []*Manifest
		spBad, mBad  []Unreadable
		manifestKeys []string
	)
	wg.Go(func() { sps, spBad, spErr = u.savepoints(ctx) })
	wg.Go(func() {
		if manifestKeys, _, mErr = u.keys(ctx, manifestsPrefix); mErr == nil {
			ms, mBad, mErr = u.readReadable(ctx, manifestKeys)
		}
	})
	wg.Wait()
	if err := errors.Join(mErr, spErr); err != nil {
		return nil, nil, err
	}
	byEpoch := make(map[uint64]*Manifest, len(ms))
	for _, m := range ms {
		byEpoch[m.Epoch] = m
	}
	for epoch, names := range pinnedAs(sps) {
		sp := sps[names[0]]
		if m, ok := byEpoch[epoch]; ok {
			m.Savepoint = sp.Savepoint
		} else {
			byEpoch[epoch] = sp
		}
	}
	out := make([]*Manifest, 0, len(byEpoch))
	for _, m := range byEpoch {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b *Manifest) int { return cmpUint(a.Epoch, b.Epoch) })
	return out, append(mBad, spBad...), nil
}

// manifestKeyEpoch is the epoch a key under manifests/ names.
func manifestKeyEpoch(key string) (uint64, error) {
	return strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(key, manifestsPrefix), ".json"), 10, 64)
}

// checkAhead refuses epoch (ErrBucketAhead) when the bucket holds a
// checkpoint at or above it, naming the newest, before anything is sent.
// It lists manifests/ and savepoints/, reads a savepoint once while the
// listing shows it unchanged, and reads the newest checkpoint only to
// name it.
func (u *Uploader) checkAhead(ctx context.Context, epoch uint64) error {
	mkeys, _, err := u.keys(ctx, manifestsPrefix)
	if err != nil {
		return err
	}
	var top uint64
	topKey := ""
	if n := len(mkeys); n > 0 {
		if top, err = manifestKeyEpoch(mkeys[n-1]); err != nil {
			return fmt.Errorf("%w: manifest %s: %v", ErrFormat, mkeys[n-1], err)
		}
		topKey = mkeys[n-1]
	}
	sps, err := u.savepointEpochs(ctx)
	if err != nil {
		return err
	}
	for key, ep := range sps {
		if ep > top {
			top, topKey = ep, key
		}
	}
	if top < epoch {
		return nil
	}
	e := &BucketAheadError{Epoch: epoch, Newest: top}
	if m, err := u.readManifest(ctx, topKey); err == nil {
		e.ClusterID, e.CreatedAt, e.Savepoint = m.ClusterID, m.CreatedAt, m.Savepoint
	}
	return e
}

// seenSavepoint is a savepoint's epoch as read under a listing's info.
type seenSavepoint struct {
	info  blobInfo
	epoch uint64
}

// savepointEpochs returns the epoch of every savepoint, by key. A
// savepoint is read once while the listing shows it unchanged (a pin
// deleted and made again under the same name is written anew: its time
// of modification, at least, differs).
func (u *Uploader) savepointEpochs(ctx context.Context) (map[string]uint64, error) {
	objs, err := u.list(ctx, savepointsPrefix)
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(objs))
	var unread []string
	u.spMu.Lock()
	for key, info := range objs {
		if !wellFormed(key) {
			continue
		}
		if seen, ok := u.spEpochs[key]; ok && seen.info.same(info) {
			out[key] = seen.epoch
		} else {
			unread = append(unread, key)
		}
	}
	u.spMu.Unlock()
	ms := make([]*Manifest, len(unread))
	err = u.parallel(ctx, len(unread), func(ctx context.Context, i int) error {
		m, err := u.readManifest(ctx, unread[i])
		switch {
		case errors.Is(err, ErrNotFound):
			return nil // deleted since it was listed
		case errors.Is(err, ErrFormat):
			// A pin this version cannot read (a newer format, say) holds no
			// epoch it can know: it does not stop every checkpoint, as it
			// did not before the check. It is read again next time.
			u.logger.Warn("uploader: a savepoint that does not read is left out of the check for newer checkpoints", "key", unread[i], "error", err)
			return nil
		}
		ms[i] = m
		return err
	})
	if err != nil {
		return nil, err
	}
	u.spMu.Lock()
	defer u.spMu.Unlock()
	for key := range u.spEpochs {
		if _, ok := objs[key]; !ok {
			delete(u.spEpochs, key)
		}
	}
	for i, m := range ms {
		if m != nil {
			out[unread[i]] = m.Epoch
			u.spEpochs[unread[i]] = seenSavepoint{info: objs[unread[i]], epoch: m.Epoch}
		}
	}
	return out, nil
}

// BucketAheadError is ErrBucketAhead with what the bucket holds: the
// newest checkpoint's epoch and, when its manifest read, its cluster,
// time and savepoint name.
type BucketAheadError struct {
	Epoch     uint64 // the refused checkpoint's
	Newest    uint64
	ClusterID string
	CreatedAt time.Time
	Savepoint string
}

func (e *BucketAheadError) Error() string {
	what := fmt.Sprintf("checkpoint %d", e.Newest)
	if e.ClusterID != "" {
		what += fmt.Sprintf(" of cluster %s, taken %s", e.ClusterID, e.CreatedAt.UTC().Format(time.RFC3339))
	}
	if e.Savepoint != "" {
		what += fmt.Sprintf(" (savepoint %q)", e.Savepoint)
	}
	return fmt.Sprintf("%v: %s, is at or above this checkpoint's epoch, %d; this one would replace it or sort below it, so restores would not take this one and retention would delete it first",
		ErrBucketAhead, what, e.Epoch)
}

// Unwrap makes errors.Is(err, ErrBucketAhead) hold.
func (e *BucketAheadError) Unwrap() error { return ErrBucketAhead }

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Get returns checkpoint epoch's manifest, marked with its savepoint name
// if it is pinned; ErrNotFound if the bucket holds neither its manifest
// nor a savepoint of it.
func (u *Uploader) Get(ctx context.Context, epoch uint64) (*Manifest, error) {
	m, err := u.readManifest(ctx, manifestKey(epoch))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	sps, err := u.readableSavepoints(ctx)
	if err != nil {
		return nil, err
	}
	if names := pinnedAs(sps)[epoch]; len(names) > 0 {
		if m == nil {
			return sps[names[0]], nil
		}
		m.Savepoint = names[0]
	}
	if m == nil {
		return nil, fmt.Errorf("%w: checkpoint %d is not in the bucket", ErrNotFound, epoch)
	}
	return m, nil
}

// Latest returns the newest completed checkpoint; ErrNotFound if there
// is none. When the newest manifest does not read, Latest fails with its
// error (ErrFormat) rather than return an older checkpoint as the latest.
func (u *Uploader) Latest(ctx context.Context) (*Manifest, error) {
	all, unreadable, err := u.Catalog(ctx)
	if err != nil {
		return nil, err
	}
	m, err := Newest(all, unreadable)
	if err == nil {
		u.warnUnreadable(unreadable)
	}
	return m, err
}

// Newest is Latest over what Catalog returned.
func Newest(all []*Manifest, unreadable []Unreadable) (*Manifest, error) {
	var newest uint64
	if len(all) > 0 {
		newest = all[len(all)-1].Epoch
	}
	for _, un := range unreadable {
		if un.Epoch > newest {
			return nil, un.Err
		}
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

// Savepoint pins checkpoint epoch under name, which must be 1 to 128 of
// [A-Za-z0-9._-], neither all digits nor "latest", and not in use: a copy of its manifest goes under
// savepoints/, and retention keeps it and its files until
// DeleteSavepoint. A checkpoint has at most one savepoint name.
//
// Savepoint returns only once every file of the checkpoint is in the
// bucket with the pin in place, whatever retention runs meanwhile on any
// node. A checkpoint that retention took apart while it was being pinned
// is not pinned, and the error matches ErrNotFound.
func (u *Uploader) Savepoint(ctx context.Context, epoch uint64, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	// Where a checkpoint is selected by epoch, "latest" or savepoint name
	// in one argument (--checkpoint, checkpoint show), a number reads as
	// an epoch: a pin under such a name could not be selected by it.
	if name == "latest" || strings.Trim(name, "0123456789") == "" {
		return invalidf("savepoint name %q reads as an epoch or as latest where checkpoints are selected (--checkpoint N|latest|NAME); add a letter, e.g. %q", name, "sp-"+name)
	}
	sps, err := u.readableSavepoints(ctx)
	if err != nil {
		return err
	}
	if sp, ok := sps[name]; ok {
		return invalidf("savepoint %q exists already (checkpoint %d)", name, sp.Epoch)
	}
	if names := pinnedAs(sps)[epoch]; len(names) > 0 {
		return invalidf("checkpoint %d is pinned already as savepoint %q", epoch, names[0])
	}
	m, err := u.readManifest(ctx, manifestKey(epoch))
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: checkpoint %d is not in the bucket", ErrNotFound, epoch)
	}
	if err != nil {
		return err
	}
	m.Savepoint = name
	// The pin is written only where none is: of two calls pinning one
	// name at once, one pin stands, and the other call learns it.
	if err := u.writePin(ctx, name, m); errors.Is(err, errPinExists) {
		other, gerr := u.GetSavepoint(ctx, name)
		if gerr != nil {
			return fmt.Errorf("uploader: savepoint %q: the name was taken meanwhile, and its pin does not read: %w", name, gerr)
		}
		if other.Epoch != epoch {
			return invalidf("savepoint %q exists already (checkpoint %d)", name, other.Epoch)
		}
		// The same pin: this call's own, from an attempt whose answer
		// was lost, or another call's with the same arguments.
	} else if err != nil {
		return fmt.Errorf("uploader: savepoint %q: %w", name, err)
	}
	// A checkpoint has one savepoint name. Of two calls pinning it under
	// two names at once, each writes its pin before it reads the other's:
	// one that finds another name removes its own pin (both may, and both
	// fail then; a retry pins it once).
	sps, err = u.readableSavepoints(ctx)
	if err != nil {
		u.unpin(ctx, name)
		return fmt.Errorf("uploader: savepoint %q: checking that checkpoint %d has no other name: %w; it is not pinned", name, epoch, err)
	}
	if others := slices.DeleteFunc(pinnedAs(sps)[epoch], func(n string) bool { return n == name }); len(others) > 0 {
		u.unpin(ctx, name)
		return invalidf("checkpoint %d was pinned as savepoint %q meanwhile; it is not pinned as %q", epoch, others[0], name)
	}
	// A collection on another node may have decided to delete the
	// checkpoint's blobs before the pin was written: see announce.go.
	missing, err := u.settle(ctx, m)
	if err == nil && len(missing) == 0 {
		return nil
	}
	u.unpin(ctx, name)
	if err != nil {
		return fmt.Errorf("uploader: savepoint %q: checking that checkpoint %d is whole after pinning it: %w; it is not pinned", name, epoch, err)
	}
	return fmt.Errorf("%w: savepoint %q: checkpoint %d lost %d of its files to retention while it was being pinned (first: %s, blob %s); it is not pinned: pin a newer checkpoint",
		ErrNotFound, name, epoch, len(missing), missing[0].Path, missing[0].Blob())
}

// unpin removes the pin of a Savepoint that failed.
// errPinExists is writePin's error for a name pinned already.
var errPinExists = errors.New("uploader: the savepoint's name is pinned already")

// writePin writes the savepoint m under name unless a pin is there,
// durably, and checks what the bucket then holds.
func (u *Uploader) writePin(ctx context.Context, name string, m *Manifest) error {
	key := savepointKey(name)
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("uploader: encode %s: %w", key, err)
	}
	if !u.wantMD5 {
		// fileblob checks IfNotExist with a stat before its rename,
		// which two writers pass together: link the pin into place
		// instead, which only one can.
		sum := md5.Sum(b)
		var done bool
		err := u.retry(ctx, "write "+key, func() (err error) {
			done, err = u.linkPin(ctx, key, b, sum[:])
			return err
		})
		if done || err != nil {
			return err
		}
	}
	err = u.writeDurablyIf(ctx, key, b, true)
	if gcerrors.Code(err) == gcerrors.FailedPrecondition {
		return errPinExists
	}
	return err
}

// linkPin writes the pin b under key in a file:// bucket: under a
// temporary key first, fsynced, then hard-linked to key's file, which
// fails where a file is. It reports false, and writes nothing, for a
// bucket whose files it cannot find (opened without no_tmp_dir).
func (u *Uploader) linkPin(ctx context.Context, key string, b, sum []byte) (bool, error) {
	var salt [8]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return false, err
	}
	tmpKey := fmt.Sprintf("%s.pin-%x", key, salt) // not well formed: no listing reads it
	p, err := u.writeBlob(ctx, tmpKey, bytes.NewReader(b), sum, "application/json")
	if err != nil {
		return false, err
	}
	if p == "" {
		u.delete(ctx, tmpKey)
		return false, nil
	}
	defer os.Remove(p)
	if err := syncPath(p); err != nil {
		return true, err
	}
	final := filepath.Join(filepath.Dir(p), path.Base(key))
	if err := os.Link(p, final); errors.Is(err, fs.ErrExist) {
		return true, errPinExists
	} else if err != nil {
		return true, local(fmt.Errorf("pin %s: %w", key, err))
	}
	if err := u.syncFiles(ctx, []string{final}); err != nil {
		return true, err
	}
	return true, u.checkBlob(ctx, key, int64(len(b)), sum)
}

func (u *Uploader) unpin(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := u.delete(ctx, savepointKey(name)); err != nil {
		u.logger.Warn("uploader: a failed savepoint may have left its pin", "savepoint", name, "error", err)
	}
}

// DeleteSavepoint removes the pin name. The checkpoint stays while
// retention keeps its manifest; otherwise it, and the files no other
// checkpoint uses, go at the next Retain.
func (u *Uploader) DeleteSavepoint(ctx context.Context, name string) error {
	// A pin that does not read (a newer format, damaged) is deleted too:
	// otherwise only an edit of the bucket would remove it.
	if _, err := u.GetSavepoint(ctx, name); err != nil && !errors.Is(err, ErrFormat) {
		return err
	}
	return u.delete(ctx, savepointKey(name))
}

// Delete removes checkpoint epoch's manifest; its files go at the next
// Retain unless another kept checkpoint uses them. A checkpoint pinned as
// a savepoint is refused with ErrPinned, naming the savepoint: pins exist
// to survive mistakes, so removing one takes its own call,
// DeleteSavepoint. The newest checkpoint is refused with ErrNewest unless
// force is set: it is the one whose offsets the caller has handed on (to
// Kafka, say), and without it nothing restorable matches them.
func (u *Uploader) Delete(ctx context.Context, epoch uint64, force bool) error {
	sps, err := u.readableSavepoints(ctx)
	if err != nil {
		return err
	}
	if names := pinnedAs(sps)[epoch]; len(names) > 0 {
		return fmt.Errorf("%w: checkpoint %d is savepoint %q; delete the savepoint first", ErrPinned, epoch, names[0])
	}
	if !force {
		mkeys, _, err := u.keys(ctx, manifestsPrefix)
		if err != nil {
			return err
		}
		if len(mkeys) > 0 && mkeys[len(mkeys)-1] == manifestKey(epoch) {
			return fmt.Errorf("%w: checkpoint %d is the newest checkpoint in the bucket", ErrNewest, epoch)
		}
	}
	key := manifestKey(epoch)
	if _, err := u.readManifest(ctx, key); errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: checkpoint %d is not in the bucket", ErrNotFound, epoch)
	}
	// Another error (say, a newer format) does not stop the deletion.
	if err := u.delete(ctx, key); err != nil {
		return err
	}
	u.m.manifestsDeleted.Add(1)
	return nil
}
