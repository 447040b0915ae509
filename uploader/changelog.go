package uploader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// Changelog checkpoints.
//
// Between table checkpoints a checkpoint can be a changelog one: the
// tables of an earlier table checkpoint, its base, plus segment files
// holding the Raft log's commands since the base, which a restore
// replays in order. The uploader knows nothing of what a segment holds.
// It carries the previous checkpoint's files into the new manifest as
// they are (the node may have compacted the base's tables away: there is
// no local copy of them), sends the new segments like any file, and
// records the chain in Manifest.Changelog.
//
// Such a manifest has FormatVersionChangelog, so that a release from
// before changelog checkpoints, which reads FormatVersion only, refuses
// it rather than restore the base's tables as if they were the state at
// the checkpoint. Retention needs nothing new: every changelog manifest
// lists its base's blobs, which stay while it does.
//
// An inherited blob the bucket lost (a collection that ran while no
// retained manifest listed it) cannot be sent again: the upload fails
// with ErrCorrupt naming the file, and the caller takes a table
// checkpoint instead.

// FormatVersionChangelog is the format of a changelog checkpoint's
// manifest: FormatVersion's, with Changelog set.
const FormatVersionChangelog = 2

// changelogDir is where segments are, in a checkpoint's directory.
const changelogDir = "changelog/"

// Changelog is set in the manifest of a changelog checkpoint.
type Changelog struct {
	// BaseEpoch is the table checkpoint whose files the state starts
	// from, and BaseIndex its Raft (applied) index.
	BaseEpoch uint64 `json:"base_epoch"`
	BaseIndex uint64 `json:"base_raft_index"`
	// Segments are paths of the manifest's Files, in replay order; each
	// is under "changelog/".
	Segments []string `json:"segments"`
}

// NextChangelog is the changelog that a changelog checkpoint following m
// continues: m's own (its segments copied), or, when m is a table
// checkpoint, an empty one based on m.
func (m *Manifest) NextChangelog() Changelog {
	if m.Changelog != nil {
		cl := *m.Changelog
		cl.Segments = slices.Clone(cl.Segments)
		return cl
	}
	return Changelog{BaseEpoch: m.Epoch, BaseIndex: m.RaftIndex}
}

// validate checks c against the checkpoint meta whose files have paths.
func (c *Changelog) validate(meta Meta, paths map[string]bool) error {
	switch {
	case c.BaseEpoch == 0 || c.BaseEpoch >= meta.Epoch:
		return fmt.Errorf("changelog base checkpoint %d is not before checkpoint %d", c.BaseEpoch, meta.Epoch)
	case c.BaseIndex >= meta.RaftIndex:
		return fmt.Errorf("changelog base Raft index %d is not before the checkpoint's, %d", c.BaseIndex, meta.RaftIndex)
	case len(c.Segments) == 0:
		return errors.New("changelog lists no segment")
	}
	seen := make(map[string]bool, len(c.Segments))
	for _, s := range c.Segments {
		switch {
		case !strings.HasPrefix(s, changelogDir):
			return fmt.Errorf("changelog segment %q is not under %s", s, changelogDir)
		case !paths[s]:
			return fmt.Errorf("changelog segment %s is not a file of the checkpoint", s)
		case seen[s]:
			return fmt.Errorf("changelog segment %s is listed twice", s)
		}
		seen[s] = true
	}
	return nil
}

// UploadChangelog uploads a changelog checkpoint: the files of prev,
// carried as they are, and those of dir, the new segments (at paths under
// changelog/), sent as Upload sends files. hashed may give, by path in
// dir, what a file's writer computed with a Hasher as it wrote it: such a
// file is not read to be hashed, and is sent checked against its CRC-32C
// (see Hashed); the others are hashed first. Its manifest has
// FormatVersionChangelog, meta and cl. prev is the newest checkpoint of
// the chain: the base, a table checkpoint, or an earlier changelog
// checkpoint on it. cl.Segments are prev's segments (none for a table
// checkpoint), then the files of dir in replay order; cl.BaseEpoch and
// cl.BaseIndex are prev's base's (prev's own epoch and Raft index for a
// table checkpoint).
//
// Before anything is written it refuses, with ErrInvalid, a nil prev, a
// changelog that does not extend prev's so, a meta not after prev in
// epoch and Raft index, a file of dir that prev has, a hashed entry
// naming no file of dir or another size than the file's, and a prev
// encrypted otherwise than this Uploader encrypts (under another key:
// ErrWrongKey too). The bucket is listed at the commit point only, not
// before the files are sent as for a table checkpoint: segments are new,
// and prev's files were in the bucket when prev committed. The commit
// point is Upload's, prev's files included; a blob of
// prev the bucket does not hold, before or after the manifest is written,
// fails the upload with ErrCorrupt naming the file, as it cannot be sent
// again: take a table checkpoint then.
func (u *Uploader) UploadChangelog(ctx context.Context, prev *Manifest, dir string, meta Meta, cl Changelog, hashed map[string]Hashed, progress Progress) (*Manifest, UploadStats, error) {
	cl.Segments = slices.Clone(cl.Segments)
	return u.uploadTimed(ctx, dir, meta, progress, nil, &chain{prev: prev, cl: cl, meta: meta, hashed: hashed})
}

// Segment is a changelog checkpoint's new file held in memory rather
// than in a directory: its path in the checkpoint (under changelog/),
// what its bytes hash to, computed as they were made (a Hasher), and a
// source of those bytes, which each call of Open reads from the start.
// The upload reads it once to send it, checked against Hashed.CRC32C as
// a hashed file is, and again only to send it again.
type Segment struct {
	Path   string
	Hashed Hashed
	Open   func() io.Reader
}

// UploadChangelogSegments is UploadChangelog with the new files held in
// memory instead of in a directory: segs take the place of the
// directory's files (and of hashed), in replay order as cl.Segments
// lists them. Besides UploadChangelog's refusals, it refuses with
// ErrInvalid, before anything is written, no segment, a segment without a
// path or Open, two with one path, and a Hashed that is not one (no
// bytes, no hex SHA-256, or no MD5 for a bucket that checks MD5s).
func (u *Uploader) UploadChangelogSegments(ctx context.Context, prev *Manifest, meta Meta, cl Changelog, segs []Segment, progress Progress) (*Manifest, UploadStats, error) {
	cl.Segments = slices.Clone(cl.Segments)
	return u.uploadTimed(ctx, "", meta, progress, nil, &chain{prev: prev, cl: cl, meta: meta, mem: slices.Clone(segs), inMemory: true})
}

// chain is what a changelog checkpoint takes from the checkpoint before
// it. A table checkpoint has none: the methods of a nil chain do nothing.
type chain struct {
	prev   *Manifest
	cl     Changelog
	meta   Meta              // the new checkpoint's
	hashed map[string]Hashed // by path in the directory
	// inMemory is set when the new files are mem, held in memory, and
	// there is no directory.
	inMemory bool
	mem      []Segment
}

// memFiles returns the new files held in memory, sorted by path as a
// directory's are.
func (c *chain) memFiles(u *Uploader) ([]localFile, error) {
	if len(c.mem) == 0 {
		return nil, c.invalid("no segment to upload")
	}
	files := make([]localFile, 0, len(c.mem))
	seen := map[string]bool{}
	for i, sg := range c.mem {
		h := sg.Hashed
		switch {
		case sg.Path == "":
			return nil, c.invalid("segment %d has no path", i)
		case seen[sg.Path]:
			return nil, c.invalid("segment %s is given twice", sg.Path)
		case sg.Open == nil:
			return nil, c.invalid("segment %s has no Open", sg.Path)
		case h.Size <= 0:
			return nil, c.invalid("segment %s is of %d bytes", sg.Path, h.Size)
		case u.wantMD5 && len(h.MD5) == 0:
			return nil, c.invalid("segment %s: Hashed has no MD5, which this bucket checks (hash with Uploader.NewHasher)", sg.Path)
		}
		if !validSHA256(h.SHA256) {
			return nil, c.invalid("segment %s: Hashed.SHA256 %q is not a hex SHA-256", sg.Path, h.SHA256)
		}
		seen[sg.Path] = true
		f := localFile{File: File{Path: sg.Path, Size: h.Size}, abs: "(in memory) " + sg.Path, open: sg.Open}
		f.useHashed(h)
		files = append(files, f)
	}
	slices.SortFunc(files, func(a, b localFile) int { return strings.Compare(a.Path, b.Path) })
	return files, nil
}

// useHashed gives the files of the directory what their writer hashed.
func (c *chain) useHashed(files []localFile) error {
	if c == nil || len(c.hashed) == 0 {
		return nil
	}
	byPath := make(map[string]*localFile, len(files))
	for i := range files {
		byPath[files[i].Path] = &files[i]
	}
	for _, p := range slices.Sorted(maps.Keys(c.hashed)) {
		h, f := c.hashed[p], byPath[p]
		switch {
		case f == nil:
			return c.invalid("hashed names %q, which is not a file of the directory", p)
		case h.Size != f.Size:
			return c.invalid("hashed[%q] is of %d bytes; the file has %d", p, h.Size, f.Size)
		}
		if !validSHA256(h.SHA256) {
			return c.invalid("hashed[%q].SHA256 %q is not a hex SHA-256", p, h.SHA256)
		}
		f.useHashed(h)
	}
	return nil
}

func (c *chain) invalid(format string, args ...any) error {
	return invalidf("changelog checkpoint %d: "+format, append([]any{c.meta.Epoch}, args...)...)
}

// inherited returns the files carried from prev.
func (c *chain) inherited() []File {
	if c == nil {
		return nil
	}
	return c.prev.Files
}

// checkPrev checks that the checkpoint can follow prev, before dir is
// read.
func (c *chain) checkPrev(ctx context.Context, u *Uploader) error {
	if c == nil {
		return nil
	}
	p := c.prev
	if p == nil {
		return c.invalid("no previous checkpoint (prev is nil)")
	}
	if err := p.validate(); err != nil {
		return fmt.Errorf("uploader: changelog checkpoint %d: the previous checkpoint: %w", c.meta.Epoch, err)
	}
	next := p.NextChangelog()
	base, index := next.BaseEpoch, next.BaseIndex
	switch {
	case c.meta.Epoch <= p.Epoch:
		return c.invalid("Meta.Epoch %d is not after the previous checkpoint's, %d", c.meta.Epoch, p.Epoch)
	case c.meta.RaftIndex <= p.RaftIndex:
		return c.invalid("Meta.RaftIndex %d is not after the previous checkpoint's, %d", c.meta.RaftIndex, p.RaftIndex)
	case c.cl.BaseEpoch != base || c.cl.BaseIndex != index:
		return c.invalid("Changelog base is checkpoint %d at Raft index %d; checkpoint %d's is %d at %d", c.cl.BaseEpoch, c.cl.BaseIndex, p.Epoch, base, index)
	}
	return c.checkEncryption(ctx, u)
}

// checkEncryption checks that prev's files are sealed as this Uploader
// seals them, under its key: a manifest has one encryption.
func (c *chain) checkEncryption(ctx context.Context, u *Uploader) error {
	have, want := c.prev.Encryption, u.encryption()
	switch {
	case have == nil && want == nil:
		return nil
	case have == nil || want == nil || *have != *want:
		return c.invalid("checkpoint %d is %s but this Uploader's checkpoints are %s", c.prev.Epoch, describe(have), describe(want))
	case u.sealedAll(c.prev.Files):
		return nil // sealed here, with this key
	}
	err := u.CheckKey(ctx, c.prev)
	if errors.Is(err, ErrWrongKey) {
		return fmt.Errorf("%w: changelog checkpoint %d: %w", ErrInvalid, c.meta.Epoch, err)
	}
	return err
}

func describe(e *Encryption) string {
	if e == nil {
		return "not encrypted"
	}
	return fmt.Sprintf("encrypted (keeper %s, format %s, chunks of %d bytes)", e.Keeper, e.Format, e.ChunkSize)
}

// checkNew checks the files of dir against prev and the changelog.
func (c *chain) checkNew(files []localFile) error {
	if c == nil {
		return nil
	}
	paths := make(map[string]bool, len(c.prev.Files)+len(files))
	for _, f := range c.prev.Files {
		paths[f.Path] = true
	}
	fresh := make(map[string]bool, len(files))
	for _, f := range files {
		if paths[f.Path] {
			return c.invalid("file %s of the directory is a file of checkpoint %d already", f.Path, c.prev.Epoch)
		}
		paths[f.Path], fresh[f.Path] = true, true
	}
	var old []string
	if c.prev.Changelog != nil {
		old = c.prev.Changelog.Segments
	}
	segs := c.cl.Segments
	if len(segs) != len(old)+len(files) {
		return c.invalid("Changelog.Segments lists %d segments; want %d: the %d of checkpoint %d, then the %d files of the directory",
			len(segs), len(old)+len(files), len(old), c.prev.Epoch, len(files))
	}
	for i, s := range segs {
		switch {
		case i < len(old) && s != old[i]:
			return c.invalid("Changelog.Segments[%d] is %q; checkpoint %d's is %q", i, s, c.prev.Epoch, old[i])
		case i >= len(old) && !fresh[s]:
			return c.invalid("Changelog.Segments[%d], %q, is not a file of the directory", i, s)
		}
	}
	if err := c.cl.validate(c.meta, paths); err != nil {
		return c.invalid("%v", err)
	}
	return nil
}

// checkHeld checks that the listing held shows every inherited file's
// blob; when says when it was listed.
func (c *chain) checkHeld(held map[string]blobInfo, when string) error {
	for _, f := range c.inherited() {
		if info, ok := held[f.Blob()]; !ok || !info.holds(f.StoredSize(), nil) {
			return c.lost(f, when)
		}
	}
	return nil
}

// checkResendable fails for an inherited file among missing: resend has
// no local copy of it.
func (c *chain) checkResendable(missing []File) error {
	for _, f := range missing {
		if slices.ContainsFunc(c.inherited(), func(g File) bool { return g.Path == f.Path }) {
			return c.lost(f, "any more (a collection on another node deleted it)")
		}
	}
	return nil
}

func (c *chain) lost(f File, when string) error {
	return fmt.Errorf("file %s (blob %s), inherited from checkpoint %d, is not in the bucket %s; a changelog checkpoint cannot send it again: take a table checkpoint: %w",
		f.Path, f.Blob(), c.prev.Epoch, when, ErrCorrupt)
}

// complete makes m, holding the new files, the changelog checkpoint's
// manifest.
func (c *chain) complete(m *Manifest) {
	if c == nil {
		return
	}
	cl := c.cl
	m.FormatVersion, m.Changelog = FormatVersionChangelog, &cl
	m.Files = append(m.Files, c.prev.Files...)
	slices.SortFunc(m.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
}
