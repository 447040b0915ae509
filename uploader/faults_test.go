package uploader_test

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/blob/driver"
	"gocloud.dev/gcerrors"
)

// faults decide what a faultBucket does to each operation.
type faults struct {
	mu    sync.Mutex
	rng   *rand.Rand
	fail  float64 // probability a write or read fails
	trunc float64 // probability a write silently loses its tail
	delay time.Duration
	// only limits faults to keys with this prefix; empty means all.
	only string
}

func (f *faults) roll(key string, p float64) bool {
	if p == 0 || !strings.HasPrefix(key, f.only) {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rng.Float64() < p
}

// faultBucket is a driver.Bucket over a real bucket that fails, truncates
// or delays writes and reads at random, and counts the bytes written.
type faultBucket struct {
	inner   *blob.Bucket
	f       *faults
	written atomic.Int64
	writes  atomic.Int64
}

var errInjected = errors.New("injected fault")

func newFaultBucket(inner *blob.Bucket, f *faults) (*blob.Bucket, *faultBucket) {
	fb := &faultBucket{inner: inner, f: f}
	return blob.NewBucket(fb), fb
}

func (b *faultBucket) ErrorCode(err error) gcerrors.ErrorCode {
	if errors.Is(err, errInjected) {
		return gcerrors.Internal
	}
	return gcerrors.Code(err)
}
func (b *faultBucket) As(any) bool             { return false }
func (b *faultBucket) ErrorAs(error, any) bool { return false }
func (b *faultBucket) Close() error            { return nil }
func (b *faultBucket) SignedURL(context.Context, string, *driver.SignedURLOptions) (string, error) {
	return "", errors.New("not supported")
}

func (b *faultBucket) Attributes(ctx context.Context, key string) (*driver.Attributes, error) {
	a, err := b.inner.Attributes(ctx, key)
	if err != nil {
		return nil, err
	}
	return &driver.Attributes{ContentType: a.ContentType, ModTime: a.ModTime, Size: a.Size, MD5: a.MD5, ETag: a.ETag}, nil
}

func (b *faultBucket) ListPaged(ctx context.Context, opts *driver.ListOptions) (*driver.ListPage, error) {
	size := opts.PageSize
	if size <= 0 {
		size = 1000
	}
	objs, next, err := b.inner.ListPage(ctx, opts.PageToken, size, &blob.ListOptions{Prefix: opts.Prefix, Delimiter: opts.Delimiter})
	if err != nil {
		return nil, err
	}
	page := &driver.ListPage{NextPageToken: next}
	for _, o := range objs {
		page.Objects = append(page.Objects, &driver.ListObject{Key: o.Key, ModTime: o.ModTime, Size: o.Size, MD5: o.MD5, IsDir: o.IsDir})
	}
	return page, nil
}

type faultReader struct {
	io.ReadCloser
	attrs driver.ReaderAttributes
}

func (r *faultReader) Attributes() *driver.ReaderAttributes { return &r.attrs }
func (r *faultReader) As(any) bool                          { return false }

func (b *faultBucket) NewRangeReader(ctx context.Context, key string, offset, length int64, _ *driver.ReaderOptions) (driver.Reader, error) {
	if b.f.roll(key, b.f.fail) {
		return nil, errInjected
	}
	time.Sleep(b.f.delay)
	r, err := b.inner.NewRangeReader(ctx, key, offset, length, nil)
	if err != nil {
		return nil, err
	}
	return &faultReader{ReadCloser: r, attrs: driver.ReaderAttributes{ContentType: r.ContentType(), ModTime: r.ModTime(), Size: r.Size()}}, nil
}

type faultWriter struct {
	w     *blob.Writer
	b     *faultBucket
	fail  bool
	trunc bool
	n     int64
}

func (w *faultWriter) Write(p []byte) (int, error) {
	n := len(p)
	if w.trunc && len(p) > 1 {
		p = p[:len(p)/2] // claims success, loses the rest
	}
	if _, err := w.w.Write(p); err != nil {
		return 0, err
	}
	w.b.written.Add(int64(len(p)))
	return n, nil
}

func (w *faultWriter) Close() error {
	if w.fail {
		// Abort the write: nothing appears under the key.
		w.w.Close()
		return errInjected
	}
	return w.w.Close()
}

func (b *faultBucket) NewTypedWriter(ctx context.Context, key, contentType string, opts *driver.WriterOptions) (driver.Writer, error) {
	time.Sleep(b.f.delay)
	fail, trunc := b.f.roll(key, b.f.fail), b.f.roll(key, b.f.trunc)
	wctx := ctx
	if fail {
		// Cancelling the inner writer's context makes its Close abort.
		var cancel context.CancelFunc
		wctx, cancel = context.WithCancel(ctx)
		cancel()
	}
	w, err := b.inner.NewWriter(wctx, key, &blob.WriterOptions{ContentType: contentType, ContentMD5: opts.ContentMD5, Metadata: opts.Metadata})
	if err != nil {
		return nil, err
	}
	b.writes.Add(1)
	return &faultWriter{w: w, b: b, fail: fail, trunc: trunc}, nil
}

func (b *faultBucket) Copy(ctx context.Context, dst, src string, _ *driver.CopyOptions) error {
	return b.inner.Copy(ctx, dst, src, nil)
}

func (b *faultBucket) Delete(ctx context.Context, key string, _ *driver.DeleteOptions) error {
	return b.inner.Delete(ctx, key)
}
