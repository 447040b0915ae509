package uploader_test

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestADownloadFetchesAgainALocalFileOfTheRightSizeButOtherBytes: a
// download keeps a file the directory already holds only
// when its size and SHA-256 are the manifest's. A file of the same size
// with one byte changed (bit rot, or a state file of another replica or
// cluster under the same name, which a restore links into its staging
// directory) is fetched again and replaced, so the directory ends up
// holding exactly the checkpoint's bytes.
func TestADownloadFetchesAgainALocalFileOfTheRightSizeButOtherBytes(t *testing.T) {
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(91, 92))
	u := newUploader(t, open(t, "mem://"))
	dir, files := checkpointDir(t, r, 6)
	m, _, err := u.Upload(ctx, dir, meta(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if _, err := u.Download(ctx, m, out, nil); err != nil {
		t.Fatal(err)
	}
	// Damage one file in place, keeping its size.
	var victim string
	for _, f := range m.Files {
		if f.Size > 0 {
			victim = f.Path
			break
		}
	}
	if victim == "" {
		t.Fatal("the checkpoint has no file with content to damage")
	}
	p := filepath.Join(out, filepath.FromSlash(victim))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := u.Download(ctx, m, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.FilesDownloaded != 1 || st.BytesDownloaded != int64(len(files[victim])) {
		t.Errorf("download over a directory holding %s with one byte changed: %+v; want that one file fetched again", victim, st)
	}
	sameFiles(t, out, files)
}
