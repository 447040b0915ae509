package uploader

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"gocloud.dev/gcerrors"
)

// DownloadStats say what a Download did.
type DownloadStats struct {
	Files int   // files in the checkpoint
	Bytes int64 // their total size
	// FilesDownloaded and BytesDownloaded count the files fetched: those
	// not already in the directory with the right checksum.
	FilesDownloaded int
	BytesDownloaded int64
	Duration        time.Duration
}

// Download writes m's files into dir (created if missing), in parallel,
// and verifies the size and SHA-256 of each. A file already in dir with
// the right size and checksum is kept, so an interrupted or repeated
// restore fetches only what is missing. Each file is written under a
// temporary name, fsynced and renamed into place once verified, so a
// file in dir is never partly written, and one that dir held before (a
// hard link, say) is replaced rather than written through. Files in dir
// that m does not list are left alone.
//
// A manifest that does not validate (a path that leaves dir, a malformed
// checksum) is refused before anything is written. A missing or corrupt
// blob is an error wrapping ErrCorrupt that names the file, its blob and
// the checkpoint.
func (u *Uploader) Download(ctx context.Context, m *Manifest, dir string, progress Progress) (DownloadStats, error) {
	start := time.Now()
	var st DownloadStats
	if m == nil {
		return st, invalidf("download: no manifest")
	}
	if err := m.validate(); err != nil {
		return st, fmt.Errorf("uploader: download of checkpoint %d refused: %w", m.Epoch, err)
	}
	if m.Encryption != nil && u.cfg.Keeper == nil {
		return st, fmt.Errorf("%w: checkpoint %d is encrypted (keeper %s)", ErrKeyNeeded, m.Epoch, m.Encryption.Keeper)
	}
	st.Files, st.Bytes = len(m.Files), m.Bytes()
	have := make([]bool, len(m.Files))
	_ = u.parallel(ctx, len(m.Files), func(ctx context.Context, i int) error {
		have[i] = holds(filepath.Join(dir, filepath.FromSlash(m.Files[i].Path)), m.Files[i])
		return nil
	})
	var need []File
	for i, f := range m.Files {
		if !have[i] {
			need = append(need, f)
			st.BytesDownloaded += f.Size
		}
	}
	st.FilesDownloaded = len(need)
	slices.SortFunc(need, func(a, b File) int { return cmp.Compare(b.Size, a.Size) })
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return st, fmt.Errorf("uploader: download of checkpoint %d: %w", m.Epoch, local(err))
	}
	add := progressCounter(progress, st.BytesDownloaded)
	dirs := make([]string, len(need))
	err := u.parallel(ctx, len(need), func(ctx context.Context, i int) error {
		f := need[i]
		dst := filepath.Join(dir, filepath.FromSlash(f.Path))
		dirs[i] = filepath.Dir(dst)
		err := u.retry(ctx, "download "+f.Path, func() error { return u.get(ctx, f, dst, add) })
		if err != nil {
			return fmt.Errorf("uploader: checkpoint %d: file %s (blob %s): %w", m.Epoch, f.Path, f.Blob(), err)
		}
		u.m.blobsDownloaded.Add(1)
		u.m.bytesDownloaded.Add(f.Size)
		return nil
	})
	if err == nil {
		if err = syncDirsOf(dirs); err != nil {
			err = fmt.Errorf("uploader: download of checkpoint %d: %w", m.Epoch, local(err))
		}
	}
	st.Duration = time.Since(start)
	return st, err
}

// syncDirsOf fsyncs each directory once, for the renames into them.
func syncDirsOf(dirs []string) error {
	seen := map[string]bool{}
	for _, d := range dirs {
		if d != "" && !seen[d] {
			seen[d] = true
			if err := syncPath(d); err != nil {
				return err
			}
		}
	}
	return nil
}

// holds reports whether the regular file at p has f's size and SHA-256.
func holds(p string, f File) bool {
	fi, err := os.Lstat(p)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != f.Size {
		return false
	}
	d, _, err := hashFile(p, false)
	return err == nil && d.sha256 == f.SHA256
}

// get fetches one file to dst in one attempt.
func (u *Uploader) get(ctx context.Context, f File, dst string, add func(int64)) (err error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return local(err)
	}
	if f.Stored != nil {
		return u.getSealed(ctx, f, dst, add)
	}
	r, err := u.b.NewReader(ctx, BlobKey(f.SHA256), nil)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return &corruptError{"missing from the bucket"}
	}
	if err != nil {
		return err
	}
	defer r.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*.tmp")
	if err != nil {
		return local(err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	// One byte more than the manifest says, to tell a longer blob.
	pr := &progressReader{r: io.LimitReader(r, f.Size+1), add: add}
	n, err := io.Copy(io.MultiWriter(localWriter{tmp}, h), pr)
	if err != nil {
		pr.undo()
		return err
	}
	if err := checkContent(n, h, f); err != nil {
		pr.undo()
		return err
	}
	if err := tmp.Sync(); err != nil {
		return local(err)
	}
	if err := tmp.Close(); err != nil {
		return local(err)
	}
	return local(os.Rename(tmp.Name(), dst))
}

// localWriter marks its writer's errors as local.
type localWriter struct{ w io.Writer }

func (w localWriter) Write(b []byte) (int, error) {
	n, err := w.w.Write(b)
	return n, local(err)
}

// checkContent compares n bytes hashed by h with what f says.
func checkContent(n int64, h hash.Hash, f File) error {
	if n != f.Size {
		return &corruptError{fmt.Sprintf("corrupt: the blob has %s bytes, the manifest says %d", sizeString(n, f.Size), f.Size)}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
		return &corruptError{fmt.Sprintf("corrupt: SHA-256 %s, the manifest says %s", got, f.SHA256)}
	}
	return nil
}

// sizeString says n, or "more than" the expected size for a read cut at
// size+1.
func sizeString(n, size int64) string {
	if n > size {
		return fmt.Sprintf("more than %d", size)
	}
	return fmt.Sprint(n)
}

// FileProblem is a file of a checkpoint that is missing from the bucket
// or not intact.
type FileProblem struct {
	Path    string // as in the manifest
	BlobKey string
	Problem string // e.g. "missing from the bucket", "corrupt: SHA-256 ..."
}

// Verify reads and hashes every blob m lists (for an encrypted
// checkpoint, the ciphertext, so no key is needed) and returns those that are
// missing or whose size or SHA-256 is wrong, sorted by path; none means
// the checkpoint is intact. The error is for a manifest that does not
// validate, or a bucket that cannot be read.
func (u *Uploader) Verify(ctx context.Context, m *Manifest) ([]FileProblem, error) {
	if m == nil {
		return nil, invalidf("verify: no manifest")
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("uploader: verify checkpoint %d: %w", m.Epoch, err)
	}
	var (
		mu  sync.Mutex
		out []FileProblem
	)
	err := u.parallel(ctx, len(m.Files), func(ctx context.Context, i int) error {
		f := m.Files[i]
		err := u.retry(ctx, "verify "+f.Path, func() error { return u.check(ctx, f) })
		var ce *corruptError
		if errors.As(err, &ce) {
			mu.Lock()
			out = append(out, FileProblem{Path: f.Path, BlobKey: f.Blob(), Problem: ce.problem})
			mu.Unlock()
			return nil
		}
		if err != nil {
			return fmt.Errorf("uploader: verify checkpoint %d: file %s (blob %s): %w", m.Epoch, f.Path, f.Blob(), err)
		}
		return nil
	})
	slices.SortFunc(out, func(a, b FileProblem) int { return strings.Compare(a.Path, b.Path) })
	return out, err
}

// check reads and hashes f's blob in one attempt. An encrypted file's
// blob is checked against its Stored checksum: no key is needed.
func (u *Uploader) check(ctx context.Context, f File) error {
	if f.Stored != nil {
		f = File{Path: f.Path, Size: f.Stored.Size, SHA256: f.Stored.SHA256}
	}
	r, err := u.b.NewReader(ctx, BlobKey(f.SHA256), nil)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return &corruptError{"missing from the bucket"}
	}
	if err != nil {
		return err
	}
	defer r.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(r, f.Size+1))
	if err != nil {
		return err
	}
	return checkContent(n, h, f)
}
