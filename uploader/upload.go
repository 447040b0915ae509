package uploader

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// UploadStats say what an Upload did.
type UploadStats struct {
	Files int   // files in the checkpoint
	Bytes int64 // their total size
	// FilesUploaded and BytesUploaded count the blobs sent: files the
	// bucket did not hold yet, each distinct content once.
	FilesUploaded int
	BytesUploaded int64
	// FilesHashed and BytesHashed count the local files this Upload read
	// to compute their checksums: those the cache did not know.
	FilesHashed int
	BytesHashed int64
	Duration    time.Duration
}

// Progress is told the bytes done of a total. Upload counts the bytes of
// the files that may need sending (those whose checksum it must compute,
// or whose blob is missing) and counts one done as it is sent or found in
// the bucket; Download counts the bytes it fetches. It is called from
// worker goroutines, often, and must be cheap; done can go back when a
// failed attempt is retried.
type Progress func(done, total int64)

// localFile is a file of the checkpoint directory being uploaded.
type localFile struct {
	File
	abs    string
	key    hashKey
	md5    []byte // nil until hashed, when the checksum came from a seeded entry
	hashed bool   // SHA256 is known
	smd5   []byte // the MD5 of the Stored blob, in an encrypted checkpoint
	// crc, when set, is the CRC-32C of the bytes its writer hashed
	// (Hashed): the file is sent checked against it, not hashed again.
	crc *uint32
	// open, when set, gives the bytes of a file held in memory
	// (Segment), which has no file at abs.
	open func() io.Reader
}

// useHashed gives f what its writer hashed: it is sent checked against
// h's CRC-32C, not hashed again.
func (f *localFile) useHashed(h Hashed) {
	crc := h.CRC32C
	f.SHA256, f.md5, f.hashed, f.crc = h.SHA256, h.MD5, true, &crc
}

// reader opens f's bytes: its file, or those held in memory.
func (f *localFile) reader() (io.ReadCloser, error) {
	if f.open != nil {
		return io.NopCloser(f.open()), nil
	}
	src, err := os.Open(f.abs)
	if err != nil {
		return nil, local(err)
	}
	return src, nil
}

// storedMD5 is the MD5 of f's blob, if known.
func (f localFile) storedMD5() []byte {
	if f.Stored != nil {
		return f.smd5
	}
	return f.md5
}

// Upload sends the files of dir that the bucket does not hold yet, then
// writes the manifest of checkpoint meta.Epoch, and returns it.
//
// Files are content-addressed: a file whose SHA-256 the bucket already
// holds, with its size, is never sent again, and the checksums of tables
// already hashed (by this Uploader, or by the one on this node that wrote
// the newest manifest) are not computed again. Files are hashed and sent
// by Config.Workers workers at once. Every write is checked, its size
// read back and, in a file:// bucket, fsynced. The manifest goes last,
// once a listing shows every file it names in the bucket: it is the
// commit point. If ctx ends or a file cannot be sent after retries, no
// manifest is written and the error names the file.
//
// After the manifest, Upload waits for any collection on another node
// that may not have seen it to end, and sends again the blobs it deleted
// (a table reused from an old checkpoint no retained manifest referenced),
// so that a checkpoint it returns has every file in the bucket.
func (u *Uploader) Upload(ctx context.Context, dir string, meta Meta, progress Progress) (*Manifest, UploadStats, error) {
	return u.UploadFinishing(ctx, dir, meta, progress, nil)
}

// UploadFinishing is Upload, with finish, if not nil, called once the
// files are sent and before the manifest is made, to complete meta: the
// caller can compute what the manifest records (its statistics) while
// the files are sent. An error from finish fails the upload.
func (u *Uploader) UploadFinishing(ctx context.Context, dir string, meta Meta, progress Progress, finish func(*Meta) error) (*Manifest, UploadStats, error) {
	return u.uploadTimed(ctx, dir, meta, progress, finish, nil)
}

// uploadTimed is upload, timed, counted and logged.
func (u *Uploader) uploadTimed(ctx context.Context, dir string, meta Meta, progress Progress, finish func(*Meta) error, ch *chain) (*Manifest, UploadStats, error) {
	start := time.Now()
	m, st, err := u.upload(ctx, dir, meta, progress, finish, ch)
	st.Duration = time.Since(start)
	if err != nil {
		u.m.uploadsFailed.Add(1)
		return nil, st, err
	}
	u.m.uploads.Add(1)
	u.logger.Debug("uploader: checkpoint uploaded", "epoch", meta.Epoch, "changelog", ch != nil, "files", st.Files, "bytes", st.Bytes,
		"files_uploaded", st.FilesUploaded, "bytes_uploaded", st.BytesUploaded, "duration", st.Duration)
	return m, st, nil
}

// upload sends the files of dir and writes the manifest: of a table
// checkpoint when ch is nil, else of a changelog checkpoint that also
// holds the files ch inherits (see changelog.go).
func (u *Uploader) upload(ctx context.Context, dir string, meta Meta, progress Progress, finish func(*Meta) error, ch *chain) (*Manifest, UploadStats, error) {
	var st UploadStats
	if meta.Epoch == 0 {
		return nil, st, invalidf("checkpoint epoch 0: epochs start at 1")
	}
	if err := ch.checkPrev(ctx, u); err != nil {
		return nil, st, err
	}
	m0Epoch := meta.Epoch
	fail := func(err error) (*Manifest, UploadStats, error) {
		return nil, st, fmt.Errorf("uploader: checkpoint %d: %w", m0Epoch, err)
	}
	u.gcMu.RLock()
	defer u.gcMu.RUnlock()
	u.seed(ctx)
	var files []localFile
	var err error
	if ch != nil && ch.inMemory {
		files, err = ch.memFiles(u)
	} else {
		files, err = u.scan(dir)
	}
	if err != nil {
		return fail(err)
	}
	if err := ch.checkNew(files); err != nil {
		return nil, st, err
	}
	if err := ch.useHashed(files); err != nil {
		return nil, st, err
	}
	if err := u.checkAhead(ctx, meta.Epoch); err != nil {
		return fail(err)
	}
	// What the bucket holds, so that a file it holds is not sent again.
	// A changelog checkpoint's new files are segments nobody sent
	// before, and what it inherits is checked at the commit point below:
	// it lists the bucket there only, a listing being a read of every
	// blob's attributes in a file:// bucket.
	held := map[string]blobInfo{}
	if ch == nil {
		var err error
		if held, err = u.list(ctx, filesPrefix); err != nil {
			return fail(err)
		}
	}
	for _, f := range ch.inherited() {
		st.Files++
		st.Bytes += f.Size
	}

	// The work: files to hash, and files whose blob is missing. Hashing
	// one and sending it run in the same worker, so that the disk and the
	// CPU are busy together.
	var work []int
	var total int64
	var reused []string // blobs found in the bucket, by key
	for i := range files {
		st.Files++
		st.Bytes += files[i].Size
		if f := files[i]; !f.hashed || !u.heldAs(held, f) {
			work = append(work, i)
			total += f.Size
		} else {
			reused = append(reused, u.blobOf(f))
		}
	}
	slices.SortFunc(work, func(a, b int) int { return cmp.Compare(files[b].Size, files[a].Size) })
	add := progressCounter(progress, total)
	var (
		mu              sync.Mutex
		sending         = map[string]bool{}
		sent, sentBytes atomic.Int64
		hashed, hashedB atomic.Int64
		written         = make([]string, len(work)) // blob files, in a file:// bucket
	)
	err = u.parallel(ctx, len(work), func(ctx context.Context, w int) error {
		f := &files[work[w]]
		// A file hashed here is read once: a small one into memory, and
		// sent from there.
		var c content
		defer c.release()
		if !f.hashed {
			d, n, whole, err := u.hashFile(f.abs, f.Size)
			c = whole
			if err != nil {
				return err
			}
			if n != f.Size {
				return local(fmt.Errorf("%s changed while it was read (%d bytes, then %d)", f.abs, f.Size, n))
			}
			f.SHA256, f.md5, f.hashed = d.sha256, d.md5, true
			u.remember(f.key, d)
			hashed.Add(1)
			hashedB.Add(n)
		}
		mu.Lock()
		found := u.heldAs(held, *f)
		skip := found || sending[f.SHA256]
		if found && !sending[f.SHA256] {
			reused = append(reused, u.blobOf(*f))
		}
		sending[f.SHA256] = true
		mu.Unlock()
		if skip {
			add(f.Size)
			return nil
		}
		var err error
		written[w], err = u.putRetried(ctx, f, c, add)
		if err != nil {
			return fmt.Errorf("file %s (blob %s): %w", f.Path, BlobKey(f.SHA256), err)
		}
		sent.Add(1)
		sentBytes.Add(f.Size)
		return nil
	})
	st.FilesUploaded, st.BytesUploaded = int(sent.Load()), sentBytes.Load()
	st.FilesHashed, st.BytesHashed = int(hashed.Load()), hashedB.Load()
	if err != nil {
		// The blobs sent stay in the bucket, and the next Upload, finding
		// them listed, reuses them without writing them: make them durable
		// now, or its manifest could outlive them in a crash.
		if serr := u.syncFiles(ctx, written); serr != nil {
			u.logger.Warn("uploader: syncing the blobs of a failed upload", "epoch", m0Epoch, "error", serr)
		}
		return fail(err)
	}
	if ch == nil {
		// A table checkpoint holds every live table: the cache can drop
		// the others. A changelog checkpoint holds none of the node's.
		keys := make([]hashKey, len(files))
		for i, f := range files {
			keys[i] = f.key
		}
		u.keepOnly(keys)
		u.saveCache()
	}
	if err := u.syncFiles(ctx, written); err != nil {
		return fail(err)
	}
	var wrote []string
	for w, p := range written {
		if p != "" {
			wrote = append(wrote, u.blobOf(files[work[w]]))
		}
	}
	u.markDurable(wrote)
	// A blob found in the bucket may have been written by an upload a
	// crash cut short (this node's before a restart, or another leader's
	// on a shared bucket), renamed into place and never fsynced: the
	// manifest must not become durable before it.
	if err := u.syncReused(ctx, reused); err != nil {
		return fail(err)
	}
	if finish != nil {
		if err := finish(&meta); err != nil {
			return fail(err)
		}
		if meta.Epoch != m0Epoch {
			return fail(fmt.Errorf("finish changed the epoch from %d to %d", m0Epoch, meta.Epoch))
		}
	}

	m := &Manifest{FormatVersion: FormatVersion, Meta: meta, Files: make([]File, len(files)), Encryption: u.encryption()}
	if m.Encryption != nil {
		if err := u.useSealed(files, ch.inherited()); err != nil {
			return fail(err)
		}
	}
	for i, f := range files {
		m.Files[i] = f.File
	}
	ch.complete(m)
	if err := m.validate(); err != nil {
		return fail(err)
	}
	// The commit point. Every file must be in the bucket now, whoever
	// sent it: a blob found at the start may have been collected since.
	if held, err = u.list(ctx, filesPrefix); err != nil {
		return fail(err)
	}
	for _, f := range files {
		if info, ok := held[f.Blob()]; !ok || !info.holds(f.StoredSize(), f.storedMD5()) {
			return fail(fmt.Errorf("file %s (blob %s) is not in the bucket as sent (listed: %t, %d bytes, MD5 %x; want %d bytes, MD5 %x): %w",
				f.Path, f.Blob(), ok, info.size, info.md5, f.StoredSize(), f.storedMD5(), ErrCorrupt))
		}
	}
	if err := ch.checkHeld(held, "before the manifest was written"); err != nil {
		return fail(err)
	}
	if err := context.Cause(ctx); err != nil {
		return fail(err)
	}
	// Again, now that the files are sent: another writer's manifest may
	// have come meanwhile. A savepoint read before stays remembered.
	if err := u.checkAhead(ctx, meta.Epoch); err != nil {
		return fail(err)
	}
	if err := u.writeManifest(ctx, manifestKey(meta.Epoch), m); err != nil {
		u.unwriteManifest(ctx, meta.Epoch)
		return fail(fmt.Errorf("write manifest: %w", err))
	}
	// A collection on another node may have decided to delete a blob
	// this checkpoint reuses before the manifest was written: wait for it,
	// and send again what it took (announce.go).
	if err := u.resend(ctx, m, files, ch); err != nil {
		u.unwriteManifest(ctx, meta.Epoch)
		return fail(fmt.Errorf("after writing the manifest: %w", err))
	}
	return m, st, nil
}

// resend waits until no collection can still delete a blob of m, then
// sends again, from the local checkpoint, every blob of m the bucket lost.
// A blob ch inherits has no local copy.
func (u *Uploader) resend(ctx context.Context, m *Manifest, files []localFile, ch *chain) error {
	missing, err := u.settle(ctx, m)
	if err != nil || len(missing) == 0 {
		return err
	}
	if err := ch.checkResendable(missing); err != nil {
		return err
	}
	if m.Encryption != nil {
		// A sealed blob cannot be made again (a new seal has another
		// checksum): abandon the checkpoint; the next one seals afresh.
		u.forgetSealed()
		return fmt.Errorf("file %s (blob %s) was deleted by a collection on another node after it was listed: %w", missing[0].Path, missing[0].Blob(), ErrCorrupt)
	}
	bySHA := make(map[string]*localFile, len(files))
	for i := range files {
		bySHA[files[i].SHA256] = &files[i]
	}
	u.logger.Warn("uploader: a collection on another node deleted blobs this checkpoint uses; sending them again",
		"epoch", m.Epoch, "blobs", len(missing), "first", missing[0].Path)
	written := make([]string, len(missing))
	err = u.parallel(ctx, len(missing), func(ctx context.Context, i int) error {
		f := bySHA[missing[i].SHA256]
		var err error
		written[i], err = u.putRetried(ctx, f, content{}, func(int64) {})
		if err != nil {
			return fmt.Errorf("file %s (blob %s), deleted by a collection after it was listed: %w", f.Path, BlobKey(f.SHA256), err)
		}
		u.m.blobsResent.Add(1)
		return nil
	})
	// As in upload: blobs sent by a failed resend stay, and a later
	// upload reuses them without writing them.
	if serr := u.syncFiles(ctx, written); err == nil {
		err = serr
	}
	return err
}

// heldAs reports whether the listing shows f's blob, with its size and,
// where both are known, its MD5. An encrypted file's blob is the one this
// Uploader sealed it into, if any.
func (u *Uploader) heldAs(held map[string]blobInfo, f localFile) bool {
	if u.cfg.Keeper != nil {
		s, ok := u.sealedOf(f.SHA256)
		if !ok {
			return false
		}
		info, ok := held[BlobKey(s.SHA256)]
		return ok && info.holds(s.Size, s.md5)
	}
	info, ok := held[BlobKey(f.SHA256)]
	return ok && info.holds(f.Size, f.md5)
}

// blobOf is the key of f's blob: its sealed blob's, when the Uploader
// encrypts.
func (u *Uploader) blobOf(f localFile) string {
	if u.cfg.Keeper != nil {
		if s, ok := u.sealedOf(f.SHA256); ok {
			return BlobKey(s.SHA256)
		}
	}
	return BlobKey(f.SHA256)
}

// unwriteManifest removes the manifest of a failed Upload, which may have
// reached the store though its write was reported failed, so that an
// Upload that fails leaves no manifest (unless this fails too).
func (u *Uploader) unwriteManifest(ctx context.Context, epoch uint64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := u.delete(ctx, manifestKey(epoch)); err != nil {
		u.logger.Warn("uploader: a failed upload may have left its manifest", "epoch", epoch, "error", err)
	}
}

// scan lists dir's files, sorted by path, with the checksums the cache
// knows. Only regular files and directories may be in it: anything else
// (a symlink, a socket) is an error rather than a file silently left out.
func (u *Uploader) scan(dir string) ([]localFile, error) {
	var files []localFile
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir():
			return nil
		case !d.Type().IsRegular():
			return fmt.Errorf("%s is not a regular file (%s); a checkpoint holds only files and directories", p, d.Type())
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		k := hashKey{name: d.Name(), size: fi.Size(), mtime: fi.ModTime().UnixNano(), ino: inode(fi)}
		f := localFile{
			File: File{Path: filepath.ToSlash(rel), Size: k.size, LocalInode: k.ino, LocalModTime: k.mtime},
			abs:  p, key: k,
		}
		if c, ok := u.cached(k); ok {
			u.m.hashCacheHits.Add(1)
			f.SHA256, f.md5, f.hashed = c.sha256, c.md5, true
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read checkpoint dir: %w", local(err))
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("checkpoint dir %s holds no files", dir)
	}
	slices.SortFunc(files, func(a, b localFile) int { return strings.Compare(a.Path, b.Path) })
	return files, nil
}

// putRetried is put, tried again on transient errors. The path is that
// of the last attempt that wrote the blob, failed or not: the caller
// fsyncs it whatever the outcome, since a later upload that finds the
// blob listed reuses it without writing it.
func (u *Uploader) putRetried(ctx context.Context, f *localFile, c content, add func(int64)) (path string, err error) {
	err = u.retry(ctx, "upload "+f.Path, func() error {
		p, err := u.put(ctx, f, c, add)
		if p != "" {
			path = p
		}
		return err
	})
	return path, err
}

// put uploads one file in one attempt; in a file:// bucket it returns
// the path of the blob's file, still to be fsynced, also with an error
// once the blob was written (its check failed). c, when it holds the
// file's bytes, is what was hashed: the blob is written from it.
// Otherwise the file is read again, and the write is abandoned if what
// was read does not have f's SHA-256, so that a file that changed since
// it was hashed is never stored under a wrong name.
func (u *Uploader) put(ctx context.Context, f *localFile, c content, add func(int64)) (string, error) {
	if u.cfg.Keeper != nil {
		return u.putSealed(ctx, f, add)
	}
	if f.md5 == nil && u.wantMD5 {
		// A checksum from the cache or a seed, without the MD5 the
		// bucket checks: read the file once more for it, and make sure
		// the SHA-256 was right.
		d, _, err := hashFile(f.abs, true)
		if err != nil {
			return "", err
		}
		if d.sha256 != f.SHA256 {
			u.forget(f.SHA256)
			return "", local(fmt.Errorf("%s has SHA-256 %s, not the %s it was seeded with (from a manifest or the checksum cache)", f.abs, d.sha256, f.SHA256))
		}
		f.md5 = d.md5
	}
	var r io.Reader
	var check *shaCheck
	if c.buf != nil {
		r = bytes.NewReader(c.bytes(f.Size))
	} else {
		src, err := f.reader()
		if err != nil {
			return "", err
		}
		defer src.Close()
		if f.crc != nil {
			r = &crcCheck{r: src, want: *f.crc}
		} else {
			check = newSHACheck(src, f.SHA256)
			r = check
		}
	}
	// In a bucket that checks MD5s, gocloud also refuses a write whose
	// bytes do not have ContentMD5; a change of size is caught here too,
	// as local and not worth retrying.
	var md5sum []byte
	if u.wantMD5 {
		md5sum = f.md5
	}
	pr := &progressReader{r: r, add: add, local: true}
	p, err := u.writeBlob(ctx, BlobKey(f.SHA256), &sizeCheck{r: pr, size: f.Size}, md5sum, "application/octet-stream")
	if err == nil {
		err = u.checkBlob(ctx, BlobKey(f.SHA256), f.Size, md5sum)
	}
	if err != nil {
		pr.undo()
		if check != nil && check.mismatch {
			u.forget(f.SHA256) // a cached checksum may be what is wrong
		}
		// A blob written whose check failed (its attributes not read, say)
		// may still be whole: a later upload finding it listed reuses it
		// without writing it, so it is fsynced with the others all the same.
		return p, err
	}
	u.m.blobsUploaded.Add(1)
	u.m.bytesUploaded.Add(f.Size)
	return p, nil
}

// sizeCheck fails the read that reaches EOF if the bytes read are not
// the expected size, so that the write is abandoned.
type sizeCheck struct {
	r    io.Reader
	size int64
	n    int64
}

func (c *sizeCheck) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	if err == io.EOF && c.n != c.size {
		return n, local(fmt.Errorf("the file changed after it was hashed: %d bytes, want %d", c.n, c.size))
	}
	return n, err
}
