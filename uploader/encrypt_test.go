package uploader_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gocloud.dev/blob"

	"github.com/statedhq/stated/uploader"
)

const (
	testKeyURL  = "base64key://AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	otherKeyURL = "base64key://HxwdHh8bGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE="
)

// withKey configures an Uploader that encrypts with the key of keyURL.
func withKey(t testing.TB, keyURL string) func(*uploader.Config) {
	t.Helper()
	k, scheme, err := uploader.OpenKeeper(context.Background(), keyURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return func(c *uploader.Config) { c.Keeper, c.KeeperScheme, c.TempDir = k, scheme, t.TempDir() }
}

// encryptedCheckpoint uploads, encrypted, a checkpoint holding marker in
// a table and in a file of three chunks, and returns its files.
func encryptedCheckpoint(t *testing.T, b *blob.Bucket, marker []byte) (*uploader.Manifest, map[string][]byte) {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 14))
	dir, files := checkpointDir(t, r, 3)
	big := randomBytes(r, 9<<20+17)
	copy(big[5<<20:], marker)
	extra := map[string][]byte{"000099.sst": append(randomBytes(r, 100), marker...), "big/000100.sst": big}
	writeFiles(t, dir, extra)
	for p, c := range extra {
		files[p] = c
	}
	u := newUploader(t, b, withKey(t, testKeyURL))
	m, st, err := u.Upload(testCtx(t), dir, meta(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.FilesUploaded == 0 {
		t.Fatal("nothing uploaded")
	}
	// The same checkpoint again sends nothing: a sealed table is reused.
	_, st, err = u.Upload(testCtx(t), dir, meta(2), nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.FilesUploaded != 0 {
		t.Fatalf("the second upload of the same files sent %d blobs, want 0", st.FilesUploaded)
	}
	return m, files
}

func TestEncryptedCheckpointBlobsDoNotHoldThePlaintext(t *testing.T) {
	b := open(t, fileURL(t.TempDir()))
	marker := []byte("distinctive-plaintext-value-4242")
	m, _ := encryptedCheckpoint(t, b, marker)
	if m.Encryption == nil || m.Encryption.Keeper != "base64key" {
		t.Fatalf("manifest encryption = %+v, want keeper base64key", m.Encryption)
	}
	for _, key := range blobKeys(t, b, "") {
		data, err := b.ReadAll(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, marker) {
			t.Fatalf("blob %s holds the plaintext marker", key)
		}
		if strings.Contains(string(data), strings.TrimPrefix(testKeyURL, "base64key://")) {
			t.Fatalf("blob %s holds the key", key)
		}
	}
	for _, f := range m.Files {
		if f.Stored == nil || f.Blob() == uploader.BlobKey(f.SHA256) {
			t.Fatalf("file %s is not stored sealed under its ciphertext's checksum: %+v", f.Path, f.Stored)
		}
	}
}

func TestEncryptedCheckpointRestoresOnlyWithItsKey(t *testing.T) {
	b := open(t, fileURL(t.TempDir()))
	m, files := encryptedCheckpoint(t, b, []byte("marker"))

	t.Run("with the key", func(t *testing.T) {
		dst := t.TempDir()
		if _, err := newUploader(t, b, withKey(t, testKeyURL)).Download(testCtx(t), m, dst, nil); err != nil {
			t.Fatal(err)
		}
		sameFiles(t, dst, files)
	})
	for name, cfg := range map[string][]func(*uploader.Config){
		"without a key": nil,
		"a wrong key":   {withKey(t, otherKeyURL)},
	} {
		t.Run(name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "restore")
			_, err := newUploader(t, b, cfg...).Download(testCtx(t), m, dst, nil)
			want := uploader.ErrWrongKey
			if cfg == nil {
				want = uploader.ErrKeyNeeded
			}
			if !errors.Is(err, want) || errors.Is(err, uploader.ErrCorrupt) {
				t.Fatalf("Download = %v, want %v and not corruption", err, want)
			}
			if got := readDir(t, filepath.Dir(dst)); len(got) != 0 && cfg == nil {
				t.Fatalf("a refused download wrote %d files", len(got))
			}
			for p := range readDir(t, filepath.Dir(dst)) {
				if !strings.HasPrefix(filepath.Base(p), ".") {
					t.Fatalf("a download with the wrong key wrote %s", p)
				}
			}
		})
	}
	t.Run("the key is checked before anything is written", func(t *testing.T) {
		for _, c := range []struct {
			cfg  []func(*uploader.Config)
			want error
		}{{nil, uploader.ErrKeyNeeded}, {[]func(*uploader.Config){withKey(t, otherKeyURL)}, uploader.ErrWrongKey}, {[]func(*uploader.Config){withKey(t, testKeyURL)}, nil}} {
			if err := newUploader(t, b, c.cfg...).CheckKey(testCtx(t), m); !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("CheckKey = %v, want %v", err, c.want)
			}
		}
	})
	t.Run("integrity without the key", func(t *testing.T) {
		problems, err := newUploader(t, b).Verify(testCtx(t), m)
		if err != nil || len(problems) != 0 {
			t.Fatalf("Verify without the key = %v, %v; want intact", problems, err)
		}
	})
}

func TestEncryptedCheckpointCorruptionIsNotAKeyProblem(t *testing.T) {
	bdir := t.TempDir()
	b := open(t, fileURL(bdir))
	m, _ := encryptedCheckpoint(t, b, []byte("marker"))
	victim := m.Files[len(m.Files)-1]
	for _, f := range m.Files {
		if f.Path == "big/000100.sst" {
			victim = f
		}
	}
	damage(t, bdir, victim)
	problems, err := newUploader(t, b).Verify(testCtx(t), m)
	if err != nil || len(problems) != 1 || problems[0].Path != victim.Path {
		t.Fatalf("Verify without the key = %+v, %v; want %s corrupt", problems, err, victim.Path)
	}
	_, err = newUploader(t, b, withKey(t, testKeyURL)).Download(testCtx(t), m, t.TempDir(), nil)
	if !errors.Is(err, uploader.ErrCorrupt) || errors.Is(err, uploader.ErrWrongKey) {
		t.Fatalf("Download of a corrupt blob with the key = %v, want corruption, not a key problem", err)
	}
	// Only the corrupt file, with a wrong key: the ciphertext is checked
	// before the key is tried.
	one := *m
	one.Files = []uploader.File{victim}
	_, err = newUploader(t, b, withKey(t, otherKeyURL)).Download(testCtx(t), &one, t.TempDir(), nil)
	if !errors.Is(err, uploader.ErrCorrupt) || errors.Is(err, uploader.ErrWrongKey) {
		t.Fatalf("Download of a corrupt blob with a wrong key = %v, want corruption, not a key problem", err)
	}
}

func TestBucketMixesPlainAndEncryptedCheckpoints(t *testing.T) {
	b := open(t, fileURL(t.TempDir()))
	dir, files := checkpointDir(t, rand.New(rand.NewPCG(1, 2)), 2)
	plain := newUploader(t, b)
	enc := newUploader(t, b, withKey(t, testKeyURL))
	if _, _, err := plain.Upload(testCtx(t), dir, meta(1), nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := enc.Upload(testCtx(t), dir, meta(2), nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := plain.Upload(testCtx(t), dir, meta(3), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := enc.Retain(testCtx(t), 3); err != nil {
		t.Fatal(err)
	}
	ms, err := enc.List(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := blobKeys(t, b, "files/"), referenced(ms); !slices.Equal(got, want) {
		t.Fatalf("blobs %v, want those referenced %v", got, want)
	}
	for _, m := range ms {
		if (m.Encryption != nil) != (m.Epoch == 2) {
			t.Fatalf("checkpoint %d: encryption %+v", m.Epoch, m.Encryption)
		}
		dst := t.TempDir()
		if _, err := enc.Download(testCtx(t), m, dst, nil); err != nil {
			t.Fatalf("checkpoint %d: %v", m.Epoch, err)
		}
		sameFiles(t, dst, files)
	}
}

func TestOpenKeeperRefusesUnknownSchemesAndBadKeysWithoutShowingThem(t *testing.T) {
	for _, u := range []string{
		"nosuch://abc", "base64key://", "base64key://c2hvcnQ=", "hashivault://k", "stringkey://secret-ish",
	} {
		_, _, err := uploader.OpenKeeper(context.Background(), u)
		if err == nil {
			t.Fatalf("OpenKeeper(%q) succeeded", u)
		}
		if strings.Contains(err.Error(), "c2hvcnQ") || strings.Contains(err.Error(), "secret-ish") {
			t.Fatalf("OpenKeeper(%q) error shows the key: %v", u, err)
		}
	}
}

// TestAChangedKeySealsTheNextCheckpointWhole: an Uploader with a new key
// (the daemon restarted with another --checkpoint-key-url) seals and
// sends every file of its first checkpoint again, so that checkpoint
// restores with the new key alone; the checkpoints sealed before still
// restore with the old key only, as the README's "Changing the key" says.
func TestAChangedKeySealsTheNextCheckpointWhole(t *testing.T) {
	b := open(t, fileURL(t.TempDir()))
	r := rand.New(rand.NewPCG(3, 9))
	dir, files := checkpointDir(t, r, 3)
	old, _, err := newUploader(t, b, withKey(t, testKeyURL)).Upload(testCtx(t), dir, meta(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	m, st, err := newUploader(t, b, withKey(t, otherKeyURL)).Upload(testCtx(t), dir, meta(2), nil)
	if err != nil {
		t.Fatal(err)
	}
	distinct := map[string]bool{}
	for _, f := range m.Files {
		distinct[f.SHA256] = true
	}
	if st.FilesUploaded != len(distinct) {
		t.Fatalf("the first upload with the new key sent %d blobs for %d distinct files, want all", st.FilesUploaded, len(distinct))
	}
	dst := t.TempDir()
	if _, err := newUploader(t, b, withKey(t, otherKeyURL)).Download(testCtx(t), m, dst, nil); err != nil {
		t.Fatalf("the checkpoint sealed with the new key, restored with it: %v", err)
	}
	sameFiles(t, dst, files)
	if err := newUploader(t, b, withKey(t, otherKeyURL)).CheckKey(testCtx(t), old); !errors.Is(err, uploader.ErrWrongKey) {
		t.Fatalf("the checkpoint sealed before, checked with the new key: %v, want ErrWrongKey", err)
	}
	if err := newUploader(t, b, withKey(t, testKeyURL)).CheckKey(testCtx(t), old); err != nil {
		t.Fatalf("the checkpoint sealed before, checked with its own key: %v", err)
	}
}
