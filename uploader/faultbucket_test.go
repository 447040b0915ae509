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

// faults say what a faultBucket does to the operations on keys with
// prefix Only (all keys when empty). Each probability is rolled per
// operation with a seeded RNG.
type faults struct {
	mu  sync.Mutex
	rng *rand.Rand

	Only string
	// Writes.
	Fail    float64 // the write fails; nothing is stored
	LostAck float64 // the write is stored, then reported failed
	Trunc   float64 // half the bytes are silently dropped, and success is reported
	Corrupt float64 // one byte is flipped, and success is reported
	// Reads.
	ReadFail float64 // opening the reader fails
	ReadCut  float64 // the reader fails with ErrUnexpectedEOF halfway
	// Delay is the most an operation is delayed by, at random.
	Delay time.Duration
}

func (f *faults) roll(key string, p float64) bool {
	if p == 0 || !strings.HasPrefix(key, f.Only) {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rng.Float64() < p
}

func (f *faults) sleep() {
	if f.Delay <= 0 {
		return
	}
	f.mu.Lock()
	d := rand.N(f.Delay)
	f.mu.Unlock()
	time.Sleep(d)
}

// faultBucket is a driver.Bucket over a real bucket that injects faults
// and counts what is written.
type faultBucket struct {
	inner *blob.Bucket
	f     *faults

	writes     atomic.Int64 // writes that reached the store
	written    atomic.Int64 // bytes they stored
	fileWrites atomic.Int64 // of them, under files/
	fileBytes  atomic.Int64

	// Hooks, set before use: onWrite runs before a write reaches the
	// store, afterWrite once it has, onDelete before a deletion. They let
	// a test interleave two nodes' operations exactly.
	onWrite, afterWrite, onDelete func(key string)
	onList                        func(prefix string) // before a listing
	// deleteFault, set before use, runs after onDelete: an error it
	// returns fails the deletion, which does not reach the store.
	deleteFault func(key string) error
}

var errInjected = errors.New("injected fault")

// newFaultBucket wraps inner; f may be nil for no faults (counting only).
func newFaultBucket(inner *blob.Bucket, f *faults) (*blob.Bucket, *faultBucket) {
	if f == nil {
		f = &faults{}
	}
	if f.rng == nil {
		f.rng = rand.New(rand.NewPCG(1, 1))
	}
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
	b.f.sleep()
	a, err := b.inner.Attributes(ctx, key)
	if err != nil {
		return nil, err
	}
	return &driver.Attributes{ContentType: a.ContentType, ModTime: a.ModTime, Size: a.Size, MD5: a.MD5, ETag: a.ETag}, nil
}

func (b *faultBucket) ListPaged(ctx context.Context, opts *driver.ListOptions) (*driver.ListPage, error) {
	b.f.sleep()
	if b.onList != nil && len(opts.PageToken) == 0 {
		b.onList(opts.Prefix)
	}
	size := opts.PageSize
	if size <= 0 {
		size = 1000
	}
	token := opts.PageToken
	if len(token) == 0 {
		token = blob.FirstPageToken // drivers say nil, the portable API this
	}
	objs, next, err := b.inner.ListPage(ctx, token, size, &blob.ListOptions{Prefix: opts.Prefix, Delimiter: opts.Delimiter})
	if err == io.EOF {
		return &driver.ListPage{}, nil
	}
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
	r     io.ReadCloser
	cutAt int64 // fail with ErrUnexpectedEOF here; -1 for never
	n     int64
	attrs driver.ReaderAttributes
}

func (r *faultReader) Read(p []byte) (int, error) {
	if r.cutAt >= 0 && r.n+int64(len(p)) > r.cutAt {
		p = p[:r.cutAt-r.n]
		n, _ := r.r.Read(p)
		r.n += int64(n)
		if r.n >= r.cutAt {
			return n, io.ErrUnexpectedEOF
		}
		return n, nil
	}
	n, err := r.r.Read(p)
	r.n += int64(n)
	return n, err
}
func (r *faultReader) Close() error                         { return r.r.Close() }
func (r *faultReader) Attributes() *driver.ReaderAttributes { return &r.attrs }
func (r *faultReader) As(any) bool                          { return false }

func (b *faultBucket) NewRangeReader(ctx context.Context, key string, offset, length int64, _ *driver.ReaderOptions) (driver.Reader, error) {
	b.f.sleep()
	if b.f.roll(key, b.f.ReadFail) {
		return nil, errInjected
	}
	r, err := b.inner.NewRangeReader(ctx, key, offset, length, nil)
	if err != nil {
		return nil, err
	}
	fr := &faultReader{r: r, cutAt: -1, attrs: driver.ReaderAttributes{ContentType: r.ContentType(), ModTime: r.ModTime(), Size: r.Size()}}
	if r.Size() > 1 && b.f.roll(key, b.f.ReadCut) {
		fr.cutAt = r.Size() / 2
	}
	return fr, nil
}

// faultWriter buffers the blob and decides at Close what reaches the
// store.
type faultWriter struct {
	ctx  context.Context
	b    *faultBucket
	key  string
	ct   string
	md5  []byte
	buf  []byte
	fail bool
}

func (w *faultWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	return len(p), nil
}

func (w *faultWriter) Close() error {
	b, f := w.b, w.b.f
	if err := w.ctx.Err(); err != nil {
		return err // aborted by the caller
	}
	f.sleep()
	if w.fail || f.roll(w.key, f.Fail) {
		return errInjected
	}
	if b.onWrite != nil {
		b.onWrite(w.key)
	}
	data, md5sum := w.buf, w.md5
	switch {
	case len(data) > 1 && f.roll(w.key, f.Trunc):
		data, md5sum = data[:len(data)/2], nil // a store that checks nothing
	case len(data) > 0 && f.roll(w.key, f.Corrupt):
		data = append([]byte(nil), data...)
		data[len(data)/2] ^= 0x55
		md5sum = nil
	}
	if err := b.inner.WriteAll(w.ctx, w.key, data, &blob.WriterOptions{ContentType: w.ct, ContentMD5: md5sum}); err != nil {
		return err
	}
	if b.afterWrite != nil {
		b.afterWrite(w.key)
	}
	b.writes.Add(1)
	b.written.Add(int64(len(data)))
	if strings.HasPrefix(w.key, "files/") {
		b.fileWrites.Add(1)
		b.fileBytes.Add(int64(len(data)))
	}
	if f.roll(w.key, f.LostAck) {
		return errInjected
	}
	return nil
}

func (b *faultBucket) NewTypedWriter(ctx context.Context, key, contentType string, opts *driver.WriterOptions) (driver.Writer, error) {
	b.f.sleep()
	return &faultWriter{ctx: ctx, b: b, key: key, ct: contentType, md5: opts.ContentMD5}, nil
}

func (b *faultBucket) Copy(ctx context.Context, dst, src string, _ *driver.CopyOptions) error {
	return b.inner.Copy(ctx, dst, src, nil)
}

func (b *faultBucket) Delete(ctx context.Context, key string, _ *driver.DeleteOptions) error {
	if b.onDelete != nil {
		b.onDelete(key)
	}
	if b.deleteFault != nil {
		if err := b.deleteFault(key); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err // abandoned by the caller before it reached the store
	}
	return b.inner.Delete(ctx, key)
}
