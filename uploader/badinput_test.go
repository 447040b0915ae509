package uploader_test

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/statedhq/stated/uploader"
)

func TestOpenBucketRefusesBadURLsClearly(t *testing.T) {
	ctx := testCtx(t)
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct{ url, want string }{
		"unknown scheme":    {"foo://x", `bucket URL "foo://x": unknown scheme "foo"; supported: file://, mem://, s3://, gs://, azblob://`},
		"no scheme":         {"/var/lib/stated", `bucket URL "/var/lib/stated" has no scheme; supported: file://`},
		"empty":             {"", `bucket URL "" has no scheme`},
		"unparsable":        {"::", "missing protocol scheme"},
		"file without path": {"file://", "file:// needs a path"},
		"file opaque":       {"file:relative", "file:// needs a path"},
		"unopenable dir":    {fileURL(filepath.Join(notADir, "sub")), `uploader: open bucket "file://` + filepath.ToSlash(notADir) + `/sub"`},
		"s3 without bucket": {"s3://", `bucket URL "s3://" names no bucket`},
		"s3 with a path":    {"s3://b/some/path", "a path after the bucket name is not supported; use ?prefix=some/path/"},
		"s3 bad parameter":  {"s3://b?colour=blue", `uploader: open bucket "s3://b?colour=blue"`},
		"file bad param":    {fileURL(t.TempDir()) + "?colour=blue", `invalid query parameter "colour"`},
	} {
		t.Run(name, func(t *testing.T) {
			b, err := uploader.OpenBucket(ctx, tc.url)
			if err == nil {
				b.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("OpenBucket(%q) = %v, want an error with %q", tc.url, err, tc.want)
			}
		})
	}
}

func TestBadManifestsAreRefused(t *testing.T) {
	ctx := testCtx(t)
	b := open(t, "mem://")
	u := newUploader(t, b)
	if _, err := u.Get(ctx, 7); !errors.Is(err, uploader.ErrNotFound) || !strings.Contains(err.Error(), "checkpoint 7") {
		t.Errorf("Get of an unknown epoch: %v", err)
	}
	if _, err := u.Latest(ctx); !errors.Is(err, uploader.ErrNotFound) {
		t.Errorf("Latest of an empty bucket: %v", err)
	}
	sha := strings.Repeat("ab", 32)
	for name, tc := range map[string]struct{ json, want string }{
		"newer format":   {`{"format_version": 3, "epoch": 9, "files": "changed shape"}`, "format version 3; this stated reads versions 1 and 2"},
		"no format":      {`{"epoch": 9}`, "format version 0"},
		"not JSON":       {`{"format_version": 1, "epo`, "does not parse"},
		"escaping path":  {`{"format_version": 1, "epoch": 9, "files": [{"path": "../etc/passwd", "size": 1, "sha256": "` + sha + `"}]}`, `file path "../etc/passwd"`},
		"absolute path":  {`{"format_version": 1, "epoch": 9, "files": [{"path": "/etc/passwd", "size": 1, "sha256": "` + sha + `"}]}`, `file path "/etc/passwd"`},
		"bad checksum":   {`{"format_version": 1, "epoch": 9, "files": [{"path": "a", "size": 1, "sha256": "../manifests/x"}]}`, "want 64 lower-case hex digits"},
		"twice":          {`{"format_version": 1, "epoch": 9, "files": [{"path": "a", "size": 1, "sha256": "` + sha + `"}, {"path": "a", "size": 1, "sha256": "` + sha + `"}]}`, "listed twice"},
		"wrong epoch":    {`{"format_version": 1, "epoch": 8, "files": []}`, "holds checkpoint 8"},
		"negative size":  {`{"format_version": 1, "epoch": 9, "files": [{"path": "a", "size": -1, "sha256": "` + sha + `"}]}`, "size -1"},
		"dot components": {`{"format_version": 1, "epoch": 9, "files": [{"path": "a/./b", "size": 1, "sha256": "` + sha + `"}]}`, `file path "a/./b"`},
	} {
		t.Run(name, func(t *testing.T) {
			if err := b.WriteAll(ctx, "manifests/00000000000000000009.json", []byte(tc.json), nil); err != nil {
				t.Fatal(err)
			}
			_, err := u.Get(ctx, 9)
			if !errors.Is(err, uploader.ErrFormat) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Get = %v, want ErrFormat with %q", err, tc.want)
			}
		})
	}

	// A hand-made manifest that escapes the directory is refused before
	// anything is written.
	out := filepath.Join(t.TempDir(), "restore")
	bad := &uploader.Manifest{FormatVersion: 1, Meta: uploader.Meta{Epoch: 3}, Files: []uploader.File{
		{Path: "ok", Size: 0, SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{Path: "../../evil", Size: 1, SHA256: sha},
	}}
	if _, err := u.Download(ctx, bad, out, nil); !errors.Is(err, uploader.ErrFormat) || !strings.Contains(err.Error(), "checkpoint 3") {
		t.Fatalf("download of an escaping manifest: %v", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused download created %s: %v", out, err)
	}
	if _, err := u.Download(ctx, nil, out, nil); !errors.Is(err, uploader.ErrInvalid) {
		t.Fatalf("download of no manifest: %v", err)
	}
	if _, err := u.Verify(ctx, bad); !errors.Is(err, uploader.ErrFormat) {
		t.Fatalf("verify of an escaping manifest: %v", err)
	}
}

func TestBadUploadInputIsRefused(t *testing.T) {
	ctx := testCtx(t)
	u := newUploader(t, open(t, "mem://"))
	dir, _ := checkpointDir(t, rand.New(rand.NewPCG(31, 32)), 1)
	empty := t.TempDir()
	withLink := t.TempDir()
	writeFiles(t, withLink, map[string][]byte{"000001.sst": []byte("x")})
	if err := os.Symlink("000001.sst", filepath.Join(withLink, "000002.sst")); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		dir   string
		epoch uint64
		want  string
	}{
		"epoch 0":     {dir, 0, "epochs start at 1"},
		"missing dir": {filepath.Join(empty, "nope"), 1, "no such file or directory"},
		"empty dir":   {empty, 1, "holds no files"},
		"symlink":     {withLink, 1, "000002.sst is not a regular file"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, err := u.Upload(ctx, tc.dir, meta(tc.epoch), nil); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Upload = %v, want an error with %q", err, tc.want)
			}
		})
	}
	if ms, err := u.List(ctx); err != nil || len(ms) != 0 {
		t.Fatalf("List after refused uploads = %v, %v", ms, err)
	}
}

// TestCorruptOrMissingBlobIsNamed: a byte flipped in a file:// bucket, or
// a blob deleted, fails Download with an error naming the file, its blob
// and the checkpoint, writes nothing under that name, and shows in
// Verify.
func TestCorruptOrMissingBlobIsNamed(t *testing.T) {
	ctx := testCtx(t)
	bucketDir := t.TempDir()
	u := newUploader(t, open(t, fileURL(bucketDir)))
	dir, _ := checkpointDir(t, rand.New(rand.NewPCG(13, 14)), 3)
	m, _, err := u.Upload(ctx, dir, meta(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	var table, wal uploader.File
	for _, f := range m.Files {
		switch {
		case strings.HasSuffix(f.Path, ".sst"):
			table = f
		case f.Path == "wal/000002.log":
			wal = f
		}
	}
	damage(t, bucketDir, table)
	out := t.TempDir()
	_, err = u.Download(ctx, m, out, nil)
	if !errors.Is(err, uploader.ErrCorrupt) || !strings.Contains(err.Error(), "checkpoint 1: file "+table.Path+" (blob files/"+table.SHA256+")") || !strings.Contains(err.Error(), "corrupt: SHA-256") {
		t.Fatalf("download of a corrupt blob: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, table.Path)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the corrupt file was written to the restore dir: %v", err)
	}
	if err := os.Remove(filepath.Join(bucketDir, "files", wal.SHA256)); err != nil {
		t.Fatal(err)
	}
	probs, err := u.Verify(ctx, m)
	if err != nil || len(probs) != 2 || probs[0].Path != table.Path || probs[1].Path != wal.Path ||
		probs[1].Problem != "missing from the bucket" || probs[1].BlobKey != uploader.BlobKey(wal.SHA256) {
		t.Fatalf("verify = %+v, %v; want the corrupt table and the missing WAL", probs, err)
	}
	// The next upload sends the missing blob again. (The damaged one has
	// its size, and only reading it, as Verify does, tells.)
	if _, st, err := u.Upload(ctx, dir, meta(2), nil); err != nil || st.FilesUploaded != 1 {
		t.Fatalf("upload after the damage: %+v, %v; want the missing WAL sent", st, err)
	}
}
