package uploader

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// maxBackoff caps the wait between two attempts.
const maxBackoff = 5 * time.Second

// retry runs op until it succeeds, fails permanently, ctx ends or
// MaxAttempts ran out, waiting with exponential backoff and jitter in
// between. A corrupt read is tried twice at most.
func (u *Uploader) retry(ctx context.Context, what string, op func() error) error {
	wait := u.cfg.Backoff
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil {
			return nil
		}
		var ce *corruptError
		switch {
		case ctx.Err() != nil:
			return withCause(ctx, err)
		case !transient(err), attempt >= u.cfg.MaxAttempts, errors.As(err, &ce) && attempt >= 2:
			return err
		}
		u.m.retries.Add(1)
		u.logger.Warn("uploader: retrying", "op", what, "attempt", attempt, "error", err)
		t := time.NewTimer(wait/2 + rand.N(wait))
		select {
		case <-ctx.Done():
			t.Stop()
			return withCause(ctx, err)
		case <-t.C:
		}
		wait = min(2*wait, maxBackoff)
	}
}

// withCause adds why ctx ended to err, unless err says it already.
func withCause(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); !errors.Is(err, cause) {
		return fmt.Errorf("%w (%w)", err, cause)
	}
	return err
}

// transient reports whether a failed operation may succeed when tried
// again.
func transient(err error) bool {
	var le *localError
	if errors.As(err, &le) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrWrongKey) {
		return false
	}
	switch gcerrors.Code(err) {
	case gcerrors.NotFound, gcerrors.PermissionDenied, gcerrors.InvalidArgument, gcerrors.Unimplemented, gcerrors.AlreadyExists:
		return false
	}
	return true
}

// parallel runs fn for 0..n-1 on the configured workers and returns the
// first error; the others see their context cancelled.
func (u *Uploader) parallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for range min(u.cfg.Workers, n) {
		wg.Go(func() {
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
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return context.Cause(ctx)
}

// blobInfo is what a listing says of a blob.
type blobInfo struct {
	size    int64
	md5     []byte // nil when the store does not say
	modTime time.Time
}

// same reports whether a listing shows the blob unchanged since info.
func (i blobInfo) same(o blobInfo) bool {
	return i.size == o.size && bytes.Equal(i.md5, o.md5) && i.modTime.Equal(o.modTime)
}

// listVanishedAttempts bounds the listings list starts again because a
// file vanished under one.
const listVanishedAttempts = 5

// list returns the blobs under prefix.
func (u *Uploader) list(ctx context.Context, prefix string) (map[string]blobInfo, error) {
	var out map[string]blobInfo
	listOnce := func() error {
		out = map[string]blobInfo{}
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
				out[obj.Key] = blobInfo{size: obj.Size, md5: obj.MD5, modTime: obj.ModTime}
			}
		}
	}
	err := u.retry(ctx, "list "+prefix, func() error {
		// fileblob stats each file it lists: one deleted meanwhile (a
		// pin removed, a blob collected) fails the listing NotFound.
		// The listing starts again, a few times at most.
		for attempt := 1; ; attempt++ {
			err := listOnce()
			if gcerrors.Code(err) != gcerrors.NotFound || attempt == listVanishedAttempts {
				return err
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("uploader: list %s: %w", prefix, err)
	}
	return out, nil
}

// keys returns the well-formed keys under manifests/ or savepoints/,
// sorted, and the others: what a write interrupted by a crash can leave
// (fileblob's <key>.<hex>.tmp), which List and Get ignore and Retain
// collects.
func (u *Uploader) keys(ctx context.Context, prefix string) (keys []string, stray map[string]blobInfo, err error) {
	objs, err := u.list(ctx, prefix)
	if err != nil {
		return nil, nil, err
	}
	stray = map[string]blobInfo{}
	for k, info := range objs {
		if wellFormed(k) {
			keys = append(keys, k)
		} else {
			stray[k] = info
		}
	}
	slices.Sort(keys)
	return keys, stray, nil
}

// wellFormed reports whether key is manifests/<20 digits>.json or
// savepoints/<valid name>.json.
func wellFormed(key string) bool {
	if epoch, ok := strings.CutPrefix(key, manifestsPrefix); ok {
		digits, ok := strings.CutSuffix(epoch, ".json")
		return ok && len(digits) == 20 && strings.Trim(digits, "0123456789") == ""
	}
	if name, ok := strings.CutPrefix(key, savepointsPrefix); ok {
		name, ok := strings.CutSuffix(name, ".json")
		return ok && checkName(name) == nil
	}
	return false
}

// holds reports whether info describes a blob of size bytes with this
// MD5, as far as the store tells.
func (info blobInfo) holds(size int64, md5sum []byte) bool {
	return info.size == size && (len(info.md5) == 0 || len(md5sum) == 0 || bytes.Equal(info.md5, md5sum))
}

// writeBlob writes r to key in one attempt. A failed write leaves
// nothing under key: the writer's context is cancelled before it is
// closed. ContentMD5 makes gocloud refuse bytes that do not match it, and
// a store that can (GCS) refuse them too.
//
// In a file:// bucket writeBlob returns the path of the file it wrote,
// which is not fsynced yet: see syncFiles. For other buckets it returns
// "".
func (u *Uploader) writeBlob(ctx context.Context, key string, r io.Reader, md5sum []byte, contentType string) (localPath string, err error) {
	return u.writeBlobIf(ctx, key, r, md5sum, contentType, false)
}

// writeBlobIf is writeBlob; with ifNotExist the write fails with
// gcerrors.FailedPrecondition when key exists (a conditional write every
// store of gocloud.dev/blob's has).
func (u *Uploader) writeBlobIf(ctx context.Context, key string, r io.Reader, md5sum []byte, contentType string, ifNotExist bool) (localPath string, err error) {
	defer func() {
		// gocloud's azureblob writer (v0.47.0) can dereference a nil pipe
		// in Close when the upload itself failed (its upload goroutine
		// clears the pipe while Close reads it): report the failed upload
		// it is, rather than crash the daemon.
		if p := recover(); p != nil {
			err = fmt.Errorf("blob driver panicked while writing %s: %v", key, p)
		}
	}()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var tmp *os.File // fileblob's temporary file, when the bucket is one
	w, err := u.b.NewWriter(wctx, key, &blob.WriterOptions{
		ContentType: contentType,
		ContentMD5:  md5sum,
		IfNotExist:  ifNotExist,
		BeforeWrite: func(as func(any) bool) error { as(&tmp); return nil },
	})
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(w, r); err != nil {
		cancel()
		_ = w.Close() // the write is abandoned; err says why
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	if tmp == nil {
		return "", nil
	}
	// With no_tmp_dir (OpenBucket's default) the temporary file
	// <key>.<hex>.tmp sits beside the blob and is renamed into place.
	dir, base := filepath.Split(tmp.Name())
	dir = filepath.Clean(dir)
	if !strings.HasPrefix(base, path.Base(key)+".") || !strings.HasSuffix(filepath.ToSlash(dir), path.Dir(key)) {
		return "", nil // elsewhere (a bucket opened without no_tmp_dir): nothing to fsync
	}
	return filepath.Join(dir, path.Base(key)), nil
}

// checkBlob checks that the bucket holds size bytes under key, with this
// MD5 where the store reports one.
func (u *Uploader) checkBlob(ctx context.Context, key string, size int64, md5sum []byte) error {
	a, err := u.b.Attributes(ctx, key)
	if err != nil {
		return err
	}
	if !(blobInfo{size: a.Size, md5: a.MD5}).holds(size, md5sum) {
		return fmt.Errorf("after the write the bucket holds %d bytes (MD5 %x) under %s, want %d (MD5 %x)", a.Size, a.MD5, key, size, md5sum)
	}
	return nil
}

// syncFiles makes the files at paths, written by writeBlob, durable:
// each file, then each directory holding them and its parent (which may
// have just gained it). "" stands for none. Syncing after all the writes,
// rather than after each, lets the kernel write them out together. It
// runs whether or not ctx has ended: a blob in the bucket may be reused
// by a later checkpoint, which finds it listed and does not sync it.
func (u *Uploader) syncFiles(ctx context.Context, paths []string) error {
	paths = slices.DeleteFunc(slices.Clone(paths), func(p string) bool { return p == "" })
	err := u.parallel(context.WithoutCancel(ctx), len(paths), func(_ context.Context, i int) error { return syncPath(paths[i]) })
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, p := range paths {
		for _, d := range []string{filepath.Dir(p), filepath.Dir(filepath.Dir(p))} {
			if !seen[d] {
				seen[d] = true
				if err := syncPath(d); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// markDurable records the blobs under keys, their files just fsynced,
// as durable.
func (u *Uploader) markDurable(keys []string) {
	u.durableMu.Lock()
	defer u.durableMu.Unlock()
	for _, k := range keys {
		u.durable[k] = true
	}
}

// syncReused fsyncs, in a file:// bucket, the blob files under keys that
// this Uploader has not made durable itself: a blob an upload wrote and a
// crash kept from fsyncing is renamed into place already, and the next
// upload finds it held. Other stores make a blob durable before they list
// it.
func (u *Uploader) syncReused(ctx context.Context, keys []string) error {
	if u.wantMD5 { // not a file:// bucket
		return nil
	}
	var paths, synced []string
	for _, k := range keys {
		u.durableMu.Lock()
		done := u.durable[k]
		u.durableMu.Unlock()
		if done {
			continue
		}
		p, err := u.blobFile(ctx, k)
		if err != nil {
			return err
		}
		if p != "" {
			paths, synced = append(paths, p), append(synced, k)
		}
	}
	if err := u.syncFiles(ctx, paths); err != nil {
		return err
	}
	u.markDurable(synced)
	return nil
}

// blobFile returns the path of the file that holds key in a file://
// bucket: fileblob hands its reader's file to BeforeRead.
func (u *Uploader) blobFile(ctx context.Context, key string) (string, error) {
	var f *os.File
	r, err := u.b.NewRangeReader(ctx, key, 0, 0, &blob.ReaderOptions{BeforeRead: func(as func(any) bool) error {
		as(&f)
		return nil
	}})
	if gcerrors.Code(err) == gcerrors.NotFound {
		return "", nil // collected meanwhile: the commit point's listing finds it missing
	}
	if err != nil {
		return "", fmt.Errorf("open blob %s: %w", key, err)
	}
	defer r.Close()
	if f == nil {
		return "", nil
	}
	return f.Name(), nil
}

// syncPath fsyncs the file or directory at p.
func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return local(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return local(fmt.Errorf("fsync %s: %w", p, err))
	}
	return nil
}

// delete removes key; a key already gone is no error.
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

// progressReader reports the bytes read through it to a shared counter,
// and can take them back when an attempt fails.
type progressReader struct {
	r     io.Reader
	n     int64
	add   func(int64)
	local bool // read errors are the local file system's
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.n += int64(n)
		p.add(int64(n))
	}
	if err != nil && err != io.EOF && p.local {
		err = local(err)
	}
	return n, err
}

// undo takes back what this reader reported.
func (p *progressReader) undo() {
	if p.n != 0 {
		p.add(-p.n)
		p.n = 0
	}
}

// progressCounter returns the add function of a Progress towards total.
func progressCounter(progress Progress, total int64) func(int64) {
	var done atomic.Int64
	return func(n int64) {
		d := done.Add(n)
		if progress != nil {
			progress(d, total)
		}
	}
}
