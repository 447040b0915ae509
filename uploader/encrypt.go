package uploader

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"gocloud.dev/gcerrors"
)

// Encrypted checkpoints (Config.Keeper).
//
// Each file is sealed with envelope encryption: a fresh random 256-bit
// data key per blob, wrapped by the Keeper (one Keeper call per file, so
// a cloud KMS with a small plaintext limit works), and the file sealed
// with AES-256-GCM in chunks of encChunk bytes. A chunk's nonce is its
// index (unique under a key used once) and its additional data is the
// index and whether it is the last chunk, so chunks cannot be reordered,
// dropped or the blob cut short without the open failing.
//
// The stored blob is addressed by the SHA-256 of its ciphertext, which
// the manifest records with its size beside the plaintext SHA-256: an
// encrypted blob never shares a key with a plain one or with one sealed
// under another key, and its integrity is checkable without the key.
// The uploader remembers, per plaintext SHA-256, the blob it sealed, so
// a table shared by successive checkpoints is sent once; a restarted
// uploader seals and sends each table once more.

const (
	// EncryptionFormat names the format in the manifest.
	EncryptionFormat = "stated-envelope-aes256gcm-v1"
	encMagic         = "STATEDE1"
	encChunk         = 4 << 20
	maxWrappedKey    = 64 << 10
)

var (
	// ErrKeyNeeded is returned by Download for an encrypted checkpoint
	// when the Uploader has no Keeper.
	ErrKeyNeeded = errors.New("uploader: the checkpoint is encrypted; restoring it needs its key")
	// ErrWrongKey is returned by Download when the Keeper cannot unwrap
	// the data key of a blob whose ciphertext is intact: not the key the
	// checkpoint was encrypted with.
	ErrWrongKey = errors.New("uploader: the key does not decrypt the checkpoint: wrong key?")
)

// Encryption says how a checkpoint's files are encrypted. It names the
// keeper's URL scheme only, never the key.
type Encryption struct {
	Keeper    string `json:"keeper"`
	Format    string `json:"format"`
	ChunkSize int    `json:"chunk_size"`
}

// Stored is the blob an encrypted file is kept as.
type Stored struct {
	SHA256 string `json:"sha256"` // of the ciphertext; the blob is BlobKey(SHA256)
	Size   int64  `json:"size"`
}

// Blob is the bucket key of f's blob.
func (f File) Blob() string {
	if f.Stored != nil {
		return BlobKey(f.Stored.SHA256)
	}
	return BlobKey(f.SHA256)
}

// StoredSize is the size of f's blob.
func (f File) StoredSize() int64 {
	if f.Stored != nil {
		return f.Stored.Size
	}
	return f.Size
}

// sealed is a file sealed into a temporary file, ready to send.
type sealed struct {
	path string
	Stored
	md5 []byte
}

// seal encrypts src's bytes (its file, or those it holds in memory) into
// a temporary file in dir and returns it with the ciphertext's checksums;
// plainSHA is checked against the bytes read, so a file that changed
// since it was hashed is refused.
func (u *Uploader) seal(ctx context.Context, src *localFile, dir, plainSHA string, size int64) (_ sealed, err error) {
	in, err := src.reader()
	if err != nil {
		return sealed{}, err
	}
	defer in.Close()
	out, err := os.CreateTemp(dir, ".seal-*.tmp")
	if err != nil {
		return sealed{}, local(err)
	}
	defer func() {
		out.Close()
		if err != nil {
			os.Remove(out.Name())
		}
	}()
	dk := make([]byte, 32)
	if _, err := rand.Read(dk); err != nil {
		return sealed{}, err
	}
	wrapped, err := u.cfg.Keeper.Encrypt(ctx, dk)
	if err != nil {
		return sealed{}, fmt.Errorf("encrypt the data key: %w", err)
	}
	aead, err := newAEAD(dk)
	if err != nil {
		return sealed{}, err
	}
	hs, hm, hp := sha256.New(), md5.New(), sha256.New()
	w := bufio.NewWriter(io.MultiWriter(localWriter{out}, hs, hm))
	var n4 [4]byte
	w.WriteString(encMagic)
	binary.BigEndian.PutUint32(n4[:], uint32(len(wrapped)))
	w.Write(n4[:])
	w.Write(wrapped)
	buf := make([]byte, encChunk+1) // one byte more tells the last chunk
	have, total := 0, int64(0)
	for idx := uint64(0); ; idx++ {
		n, rerr := io.ReadFull(in, buf[have:])
		have += n
		if rerr != nil && rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
			return sealed{}, local(rerr)
		}
		last := have <= encChunk
		chunk := buf[:min(have, encChunk)]
		hp.Write(chunk)
		total += int64(len(chunk))
		ct := aead.Seal(nil, chunkNonce(idx), chunk, chunkAD(idx, last))
		binary.BigEndian.PutUint32(n4[:], uint32(len(ct)))
		w.Write(n4[:])
		if _, err := w.Write(ct); err != nil {
			return sealed{}, err
		}
		if last {
			break
		}
		have = copy(buf, buf[encChunk:have])
	}
	if err := w.Flush(); err != nil {
		return sealed{}, err
	}
	if got := hex.EncodeToString(hp.Sum(nil)); total != size || got != plainSHA {
		return sealed{}, local(fmt.Errorf("%s changed after it was hashed (%d bytes, SHA-256 %s; want %d, %s)", src.abs, total, got, size, plainSHA))
	}
	fi, err := out.Stat()
	if err != nil {
		return sealed{}, local(err)
	}
	return sealed{path: out.Name(), Stored: Stored{SHA256: hex.EncodeToString(hs.Sum(nil)), Size: fi.Size()}, md5: hm.Sum(nil)}, nil
}

// open decrypts the sealed blob in r into w and returns the plaintext
// bytes written. A data key the Keeper cannot unwrap is ErrWrongKey; the
// caller has checked the ciphertext's SHA-256, so any other failure is
// a blob that is not what was sealed.
func (u *Uploader) open(ctx context.Context, r io.Reader, w io.Writer) (int64, error) {
	br := bufio.NewReader(r)
	hdr := make([]byte, len(encMagic)+4)
	if _, err := io.ReadFull(br, hdr); err != nil || string(hdr[:len(encMagic)]) != encMagic {
		return 0, &corruptError{"corrupt: not an encrypted stated blob"}
	}
	wl := binary.BigEndian.Uint32(hdr[len(encMagic):])
	if wl > maxWrappedKey {
		return 0, &corruptError{"corrupt: wrapped key too long"}
	}
	wrapped := make([]byte, wl)
	if _, err := io.ReadFull(br, wrapped); err != nil {
		return 0, &corruptError{"corrupt: wrapped key cut short"}
	}
	dk, err := u.cfg.Keeper.Decrypt(ctx, wrapped)
	if err != nil {
		return 0, fmt.Errorf("%w (%v)", ErrWrongKey, err)
	}
	aead, err := newAEAD(dk)
	if err != nil {
		return 0, fmt.Errorf("%w (the data key: %v)", ErrWrongKey, err)
	}
	var total int64
	var n4 [4]byte
	for idx := uint64(0); ; idx++ {
		if _, err := io.ReadFull(br, n4[:]); err != nil {
			return total, &corruptError{fmt.Sprintf("corrupt: chunk %d missing", idx)}
		}
		cl := binary.BigEndian.Uint32(n4[:])
		if cl > encChunk+uint32(aead.Overhead()) {
			return total, &corruptError{fmt.Sprintf("corrupt: chunk %d too long", idx)}
		}
		ct := make([]byte, cl)
		if _, err := io.ReadFull(br, ct); err != nil {
			return total, &corruptError{fmt.Sprintf("corrupt: chunk %d cut short", idx)}
		}
		_, peekErr := br.Peek(1)
		last := peekErr == io.EOF
		pt, err := aead.Open(ct[:0], chunkNonce(idx), ct, chunkAD(idx, last))
		if err != nil {
			return total, &corruptError{fmt.Sprintf("corrupt: chunk %d does not authenticate", idx)}
		}
		if _, err := w.Write(pt); err != nil {
			return total, local(err)
		}
		total += int64(len(pt))
		if last {
			return total, nil
		}
	}
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func chunkNonce(idx uint64) []byte {
	n := make([]byte, 12)
	binary.BigEndian.PutUint64(n[4:], idx)
	return n
}

func chunkAD(idx uint64, last bool) []byte {
	ad := make([]byte, 9)
	binary.BigEndian.PutUint64(ad, idx)
	if last {
		ad[8] = 1
	}
	return ad
}

// putSealed seals f and sends its blob in one attempt; in a file://
// bucket it returns the path of the blob's file, still to be fsynced.
func (u *Uploader) putSealed(ctx context.Context, f *localFile, add func(int64)) (string, error) {
	s, err := u.seal(ctx, f, u.cfg.TempDir, f.SHA256, f.Size)
	if err != nil {
		return "", err
	}
	defer os.Remove(s.path)
	src, err := os.Open(s.path)
	if err != nil {
		return "", local(err)
	}
	defer src.Close()
	key := BlobKey(s.SHA256)
	pr := &progressReader{r: src, add: func(n int64) {}, local: true}
	p, err := u.writeBlob(ctx, key, &sizeCheck{r: pr, size: s.Size}, s.md5, "application/octet-stream")
	if err == nil {
		err = u.checkBlob(ctx, key, s.Size, s.md5)
	}
	if err != nil {
		return p, err // p, when written, is to be fsynced all the same (see put)
	}
	add(f.Size)
	u.cacheMu.Lock()
	u.sealedAs[f.SHA256] = s
	u.cacheMu.Unlock()
	u.m.blobsUploaded.Add(1)
	u.m.bytesUploaded.Add(s.Size)
	return p, nil
}

// sealedOf returns the blob this Uploader sealed the plaintext with this
// SHA-256 into, if any.
func (u *Uploader) sealedOf(plainSHA string) (sealed, bool) {
	u.cacheMu.Lock()
	defer u.cacheMu.Unlock()
	s, ok := u.sealedAs[plainSHA]
	return s, ok
}

// encryption is what the manifests of this Uploader say of their
// encryption: nil without a Keeper.
func (u *Uploader) encryption() *Encryption {
	if u.cfg.Keeper == nil {
		return nil
	}
	return &Encryption{Keeper: u.cfg.KeeperScheme, Format: EncryptionFormat, ChunkSize: encChunk}
}

// useSealed sets each file's Stored blob, and keeps only the sealed
// blobs of these files for the next checkpoint, and of the inherited
// files of a changelog checkpoint (its base's tables are the next table
// checkpoint's too).
func (u *Uploader) useSealed(files []localFile, inherited []File) error {
	u.cacheMu.Lock()
	defer u.cacheMu.Unlock()
	keep := make(map[string]sealed, len(files)+len(inherited))
	for i := range files {
		s, ok := u.sealedAs[files[i].SHA256]
		if !ok {
			return fmt.Errorf("file %s was not sealed", files[i].Path)
		}
		st := s.Stored
		files[i].Stored, files[i].smd5 = &st, s.md5
		keep[files[i].SHA256] = s
	}
	for _, f := range inherited {
		if s, ok := u.sealedInto(f); ok {
			keep[f.SHA256] = s
		}
	}
	u.sealedAs = keep
	return nil
}

// sealedInto returns the sealed blob of f if this Uploader sealed f into
// the blob f names. The caller holds cacheMu.
func (u *Uploader) sealedInto(f File) (sealed, bool) {
	s, ok := u.sealedAs[f.SHA256]
	return s, ok && f.Stored != nil && s.Stored == *f.Stored
}

// sealedAll reports whether this Uploader sealed every one of files, with
// its key.
func (u *Uploader) sealedAll(files []File) bool {
	u.cacheMu.Lock()
	defer u.cacheMu.Unlock()
	for _, f := range files {
		if _, ok := u.sealedInto(f); !ok {
			return false
		}
	}
	return true
}

// forgetSealed drops every sealed blob, so that the next Upload seals
// and sends each file again.
func (u *Uploader) forgetSealed() {
	u.cacheMu.Lock()
	defer u.cacheMu.Unlock()
	u.sealedAs = map[string]sealed{}
}

// getSealed fetches f's sealed blob to dst in one attempt: the blob is
// read into a temporary file and its ciphertext checked against the
// manifest (a mismatch is corruption, whatever the key), then opened
// into another, whose plaintext is checked, fsynced and renamed to dst.
func (u *Uploader) getSealed(ctx context.Context, f File, dst string, add func(int64)) (err error) {
	r, err := u.b.NewReader(ctx, BlobKey(f.Stored.SHA256), nil)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return &corruptError{"missing from the bucket"}
	}
	if err != nil {
		return err
	}
	defer r.Close()
	dir := filepath.Dir(dst)
	ct, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".*.sealed")
	if err != nil {
		return local(err)
	}
	defer func() {
		ct.Close()
		os.Remove(ct.Name())
	}()
	h := sha256.New()
	pr := &progressReader{r: io.LimitReader(r, f.Stored.Size+1), add: func(int64) {}}
	n, err := io.Copy(io.MultiWriter(localWriter{ct}, h), pr)
	if err != nil {
		return err
	}
	if err := checkContent(n, h, File{Size: f.Stored.Size, SHA256: f.Stored.SHA256}); err != nil {
		return err
	}
	if _, err := ct.Seek(0, io.SeekStart); err != nil {
		return local(err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".*.tmp")
	if err != nil {
		return local(err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	hp := sha256.New()
	pn, err := u.open(ctx, ct, io.MultiWriter(localWriter{tmp}, hp))
	if err != nil {
		return err
	}
	if err := checkContent(pn, hp, f); err != nil {
		return err
	}
	add(f.Size)
	if err := tmp.Sync(); err != nil {
		return local(err)
	}
	if err := tmp.Close(); err != nil {
		return local(err)
	}
	return local(os.Rename(tmp.Name(), dst))
}

// CheckKey reports, before anything is written, whether this Uploader
// can decrypt m: nil for a plain checkpoint; ErrKeyNeeded without a
// Keeper; ErrWrongKey when the Keeper does not unwrap the data key of m's
// smallest blob, whose ciphertext is checked first (a mismatch is
// ErrCorrupt, not a key problem).
func (u *Uploader) CheckKey(ctx context.Context, m *Manifest) error {
	if m == nil || m.Encryption == nil || len(m.Files) == 0 {
		return nil
	}
	if u.cfg.Keeper == nil {
		return fmt.Errorf("%w: checkpoint %d is encrypted (keeper %s)", ErrKeyNeeded, m.Epoch, m.Encryption.Keeper)
	}
	if err := m.validate(); err != nil {
		return fmt.Errorf("uploader: checkpoint %d: %w", m.Epoch, err)
	}
	f := m.Files[0]
	for _, g := range m.Files[1:] {
		if g.Stored.Size < f.Stored.Size {
			f = g
		}
	}
	err := u.retry(ctx, "check key with "+f.Path, func() error {
		r, err := u.b.NewReader(ctx, f.Blob(), nil)
		if gcerrors.Code(err) == gcerrors.NotFound {
			return &corruptError{"missing from the bucket"}
		}
		if err != nil {
			return err
		}
		defer r.Close()
		var buf bytes.Buffer
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(&buf, h), io.LimitReader(r, f.Stored.Size+1))
		if err != nil {
			return err
		}
		if err := checkContent(n, h, File{Size: f.Stored.Size, SHA256: f.Stored.SHA256}); err != nil {
			return err
		}
		_, err = u.open(ctx, &buf, io.Discard)
		return err
	})
	if err != nil {
		return fmt.Errorf("uploader: checkpoint %d: file %s (blob %s): %w", m.Epoch, f.Path, f.Blob(), err)
	}
	return nil
}
