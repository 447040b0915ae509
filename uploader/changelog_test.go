package uploader_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"gocloud.dev/blob"

	"github.com/statedhq/stated/uploader"
)

const (
	seg1 = "changelog/000001.log"
	seg2 = "changelog/000002.log"
)

// segmentDir returns a directory holding the files (slash path ->
// content) of a changelog upload.
func segmentDir(t *testing.T, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, files)
	return dir
}

// changelogChain is a table checkpoint (epoch 1, Raft index 100) and two
// changelog checkpoints on it (2 and 3), with a segment each.
type changelogChain struct {
	baseDir  string
	base     map[string][]byte // the base's files
	segments map[string][]byte // both segments
	ms       [3]*uploader.Manifest
	st       [3]uploader.UploadStats
}

// all returns every file of checkpoint 3: the base's and both segments.
func (c changelogChain) all() map[string][]byte {
	out := maps.Clone(c.base)
	maps.Copy(out, c.segments)
	return out
}

func uploadChain(t *testing.T, u *uploader.Uploader, seed uint64) changelogChain {
	t.Helper()
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(seed, 77))
	var c changelogChain
	c.baseDir, c.base = checkpointDir(t, r, 3)
	c.segments = map[string][]byte{seg1: randomBytes(r, 2000), seg2: randomBytes(r, 3000)}
	var err error
	if c.ms[0], c.st[0], err = u.Upload(ctx, c.baseDir, meta(1), nil); err != nil {
		t.Fatal(err)
	}
	for i, seg := range []string{seg1, seg2} {
		dir := segmentDir(t, map[string][]byte{seg: c.segments[seg]})
		cl := uploader.Changelog{BaseEpoch: 1, BaseIndex: 100, Segments: []string{seg1, seg2}[:i+1]}
		if c.ms[i+1], c.st[i+1], err = u.UploadChangelog(ctx, c.ms[i], dir, meta(uint64(i+2)), cl, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// snapshot returns every blob of b by key.
func snapshot(t *testing.T, b *blob.Bucket) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, k := range blobKeys(t, b, "") {
		data, err := b.ReadAll(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		out[k] = data
	}
	return out
}

// withoutSegments returns the files of m that are not under changelog/.
func withoutSegments(m *uploader.Manifest) []uploader.File {
	return slices.DeleteFunc(slices.Clone(m.Files), func(f uploader.File) bool { return strings.HasPrefix(f.Path, "changelog/") })
}

// TestChangelogCheckpointsCarryTheBaseAndSendOnlyTheirSegments: each
// changelog manifest has format 2, the base's files as they were plus
// the segments, and the changelog given; each upload sends its segment
// only; and neither the checksum cache nor the tables' blobs are lost
// for the next table checkpoint.
func TestChangelogCheckpointsCarryTheBaseAndSendOnlyTheirSegments(t *testing.T) {
	ctx := testCtx(t)
	b := open(t, fileURL(t.TempDir()))
	u := newUploader(t, b)
	c := uploadChain(t, u, 1)
	if m := c.ms[0]; m.FormatVersion != uploader.FormatVersion || m.Changelog != nil {
		t.Fatalf("table checkpoint: format %d, changelog %+v; want %d and none", m.FormatVersion, m.Changelog, uploader.FormatVersion)
	}
	blobs := len(referenced(c.ms[:1]))
	for i, seg := range []string{seg1, seg2} {
		m, st := c.ms[i+1], c.st[i+1]
		want := uploader.Changelog{BaseEpoch: 1, BaseIndex: 100, Segments: []string{seg1, seg2}[:i+1]}
		if m.FormatVersion != uploader.FormatVersionChangelog || !reflect.DeepEqual(m.Changelog, &want) {
			t.Fatalf("checkpoint %d: format %d, changelog %+v; want %d, %+v", m.Epoch, m.FormatVersion, m.Changelog, uploader.FormatVersionChangelog, want)
		}
		if !slices.Equal(withoutSegments(m), c.ms[0].Files) {
			t.Fatalf("checkpoint %d does not hold the base's files as they were:\n got %+v\nwant %+v", m.Epoch, withoutSegments(m), c.ms[0].Files)
		}
		if len(m.Files) != len(c.ms[0].Files)+i+1 || !slices.IsSortedFunc(m.Files, func(a, b uploader.File) int { return strings.Compare(a.Path, b.Path) }) {
			t.Fatalf("checkpoint %d lists %d files, want the base's %d and %d segments, sorted", m.Epoch, len(m.Files), len(c.ms[0].Files), i+1)
		}
		for _, s := range want.Segments {
			j := slices.IndexFunc(m.Files, func(f uploader.File) bool { return f.Path == s })
			if j < 0 || m.Files[j].Size != int64(len(c.segments[s])) {
				t.Fatalf("checkpoint %d: segment %s not listed with its size", m.Epoch, s)
			}
		}
		if st.FilesUploaded != 1 || st.BytesUploaded != int64(len(c.segments[seg])) || st.Files != len(m.Files) || st.Bytes != m.Bytes() {
			t.Fatalf("checkpoint %d: stats %+v; want only %s sent (%d bytes) of %d files", m.Epoch, st, seg, len(c.segments[seg]), len(m.Files))
		}
		if got := len(referenced(c.ms[:i+2])); got != blobs+1 {
			t.Fatalf("checkpoint %d references %d blobs with those before it, want %d", m.Epoch, got, blobs+1)
		}
		blobs++
	}
	if got := blobKeys(t, b, "files/"); len(got) != blobs {
		t.Fatalf("files/ holds %d blobs, want %d", len(got), blobs)
	}

	// What a reader sees: format 2 on disk (a release that reads only
	// version 1 refuses it), and the same manifest read back.
	for _, m := range c.ms {
		raw, err := b.ReadAll(ctx, fmt.Sprintf("manifests/%020d.json", m.Epoch))
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			FormatVersion int             `json:"format_version"`
			Changelog     json.RawMessage `json:"changelog"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatal(err)
		}
		if v.FormatVersion != m.FormatVersion || (v.Changelog != nil) != (m.Epoch > 1) {
			t.Fatalf("checkpoint %d is stored with format %d, changelog %s", m.Epoch, v.FormatVersion, v.Changelog)
		}
		got, err := u.Get(ctx, m.Epoch)
		if err != nil {
			t.Fatal(err)
		}
		if got.FormatVersion != m.FormatVersion || !reflect.DeepEqual(got.Changelog, m.Changelog) || !slices.Equal(got.Files, m.Files) {
			t.Fatalf("checkpoint %d read back = %+v, want %+v", m.Epoch, got, m)
		}
	}

	// The next table checkpoint, of the base's unchanged directory, reads
	// no table again and sends nothing.
	hashed := u.Metrics().FilesHashed
	_, st, err := u.Upload(ctx, c.baseDir, meta(4), nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.FilesUploaded != 0 || u.Metrics().FilesHashed-hashed != 5 {
		t.Fatalf("table checkpoint after the changelog ones: stats %+v, %d files hashed; want nothing sent and only the 5 files that are not tables hashed",
			st, u.Metrics().FilesHashed-hashed)
	}
}

// TestChangelogManifestsAreCheckedWhenRead: a manifest of format 3 is
// refused, as a release that reads version 1 only refuses format 2; a
// version-1 manifest with a changelog, and a version-2 one without, or
// with a changelog that does not fit its files, are refused.
func TestChangelogManifestsAreCheckedWhenRead(t *testing.T) {
	ctx := testCtx(t)
	b := open(t, "mem://")
	u := newUploader(t, b)
	c := uploadChain(t, u, 2)
	const key = "manifests/00000000000000000002.json"
	raw, err := b.ReadAll(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		change func(m map[string]any, cl map[string]any)
		want   string
	}{
		"format 3":                 {func(m, _ map[string]any) { m["format_version"] = 3 }, "format version 3; this stated reads versions 1 and 2"},
		"format 1 with changelog":  {func(m, _ map[string]any) { m["format_version"] = 1 }, "format version 1 with a changelog"},
		"format 2 without":         {func(m, _ map[string]any) { delete(m, "changelog") }, "format version 2 without a changelog"},
		"no segment":               {func(_, cl map[string]any) { cl["segments"] = []string{} }, "changelog lists no segment"},
		"segment not a file":       {func(_, cl map[string]any) { cl["segments"] = []string{"changelog/nope"} }, "segment changelog/nope is not a file of the checkpoint"},
		"segment outside":          {func(_, cl map[string]any) { cl["segments"] = []string{"MANIFEST-000001"} }, `segment "MANIFEST-000001" is not under changelog/`},
		"segment twice":            {func(_, cl map[string]any) { cl["segments"] = []string{seg1, seg1} }, "segment " + seg1 + " is listed twice"},
		"base index not before":    {func(_, cl map[string]any) { cl["base_raft_index"] = 200 }, "base Raft index 200 is not before the checkpoint's, 200"},
		"base epoch not before":    {func(_, cl map[string]any) { cl["base_epoch"] = 2 }, "base checkpoint 2 is not before checkpoint 2"},
		"base epoch 0":             {func(_, cl map[string]any) { cl["base_epoch"] = 0 }, "base checkpoint 0 is not before checkpoint 2"},
		"intact (the other cases)": {func(_, _ map[string]any) {}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			tc.change(m, m["changelog"].(map[string]any))
			changed, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.WriteAll(ctx, key, changed, nil); err != nil {
				t.Fatal(err)
			}
			got, err := u.Get(ctx, 2)
			if tc.want == "" {
				if err != nil || !reflect.DeepEqual(got.Changelog, c.ms[1].Changelog) {
					t.Fatalf("Get = %+v, %v; want checkpoint 2 as uploaded", got, err)
				}
				return
			}
			if !errors.Is(err, uploader.ErrFormat) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Get = %v, want ErrFormat with %q", err, tc.want)
			}
		})
	}
}

// TestUploadChangelogRefusesWhatDoesNotFollowPrev: each refusal is
// ErrInvalid and writes nothing.
func TestUploadChangelogRefusesWhatDoesNotFollowPrev(t *testing.T) {
	ctx := testCtx(t)
	b := open(t, fileURL(t.TempDir()))
	u := newUploader(t, b)
	r := rand.New(rand.NewPCG(3, 3))
	dir, _ := checkpointDir(t, r, 2)
	m1, _, err := u.Upload(ctx, dir, meta(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	m2, _, err := u.UploadChangelog(ctx, m1, segmentDir(t, map[string][]byte{seg1: randomBytes(r, 100)}), meta(2),
		uploader.Changelog{BaseEpoch: 1, BaseIndex: 100, Segments: []string{seg1}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// An encrypted table checkpoint, 10, for the encryption cases.
	sealing := newUploader(t, b, withKey(t, testKeyURL))
	enc, _, err := sealing.Upload(ctx, dir, meta(10), nil)
	if err != nil {
		t.Fatal(err)
	}
	seg := segmentDir(t, map[string][]byte{seg2: randomBytes(r, 100)})
	good := uploader.Changelog{BaseEpoch: 1, BaseIndex: 100, Segments: []string{seg1, seg2}}
	withMeta := func(epoch, index uint64) uploader.Meta { m := meta(epoch); m.RaftIndex = index; return m }
	withCL := func(base, index uint64, segs ...string) uploader.Changelog {
		return uploader.Changelog{BaseEpoch: base, BaseIndex: index, Segments: segs}
	}
	encCL := withCL(10, 1000, seg2)
	kms := *enc // as if sealed by a cloud KMS
	kms.Encryption = &uploader.Encryption{Keeper: "awskms", Format: enc.Encryption.Format, ChunkSize: enc.Encryption.ChunkSize}
	for _, tc := range []struct {
		name string
		u    *uploader.Uploader
		prev *uploader.Manifest
		dir  string
		meta uploader.Meta
		cl   uploader.Changelog
		want string
	}{
		{"no prev", u, nil, seg, meta(3), good, "prev is nil"},
		{"epoch not after prev's", u, m2, seg, withMeta(2, 300), good, "Meta.Epoch 2 is not after the previous checkpoint's, 2"},
		{"Raft index not after prev's", u, m2, seg, withMeta(3, 200), good, "Meta.RaftIndex 200 is not after the previous checkpoint's, 200"},
		{"another base epoch", u, m2, seg, meta(3), withCL(2, 100, seg1, seg2), "Changelog base is checkpoint 2 at Raft index 100; checkpoint 2's is 1 at 100"},
		{"another base index", u, m2, seg, meta(3), withCL(1, 99, seg1, seg2), "Changelog base is checkpoint 1 at Raft index 99; checkpoint 2's is 1 at 100"},
		{"a table prev is the base", u, m1, seg, meta(3), withCL(1, 50, seg2), "Changelog base is checkpoint 1 at Raft index 50; checkpoint 1's is 1 at 100"},
		{"prev's segment dropped", u, m2, seg, meta(3), withCL(1, 100, seg2), "Changelog.Segments lists 1 segments; want 2"},
		{"new segment not listed", u, m2, seg, meta(3), withCL(1, 100, seg1), "Changelog.Segments lists 1 segments; want 2"},
		{"segments out of order", u, m2, seg, meta(3), withCL(1, 100, seg2, seg1), `Changelog.Segments[0] is "changelog/000002.log"; checkpoint 2's is "changelog/000001.log"`},
		{"a segment not in the directory", u, m2, seg, meta(3), withCL(1, 100, seg1, "changelog/other"), `Changelog.Segments[1], "changelog/other", is not a file of the directory`},
		{"a file prev has", u, m2, segmentDir(t, map[string][]byte{seg1: []byte("again")}), meta(3), withCL(1, 100, seg1, seg1), "file " + seg1 + " of the directory is a file of checkpoint 2 already"},
		{"a segment outside changelog/", u, m2, segmentDir(t, map[string][]byte{"seg.log": []byte("x")}), meta(3), withCL(1, 100, seg1, "seg.log"), `segment "seg.log" is not under changelog/`},
		{"a plain prev, an encrypting Uploader", sealing, m2, seg, meta(3), good, "checkpoint 2 is not encrypted but this Uploader's checkpoints are encrypted (keeper base64key"},
		{"an encrypted prev, a plain Uploader", u, enc, seg, meta(11), encCL, "checkpoint 10 is encrypted (keeper base64key, format stated-envelope-aes256gcm-v1, chunks of 4194304 bytes) but this Uploader's checkpoints are not encrypted"},
		{"an encrypted prev, another keeper", sealing, &kms, seg, meta(11), encCL, "checkpoint 10 is encrypted (keeper awskms, format stated-envelope-aes256gcm-v1, chunks of 4194304 bytes) but this Uploader's checkpoints are encrypted (keeper base64key"},
		{"an encrypted prev, another key", newUploader(t, b, withKey(t, otherKeyURL)), enc, seg, meta(11), encCL, "the key does not decrypt the checkpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, b)
			_, _, err := tc.u.UploadChangelog(ctx, tc.prev, tc.dir, tc.meta, tc.cl, nil, nil)
			if !errors.Is(err, uploader.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("UploadChangelog = %v, want ErrInvalid with %q", err, tc.want)
			}
			if strings.Contains(tc.name, "another key") && !errors.Is(err, uploader.ErrWrongKey) {
				t.Fatalf("UploadChangelog = %v, want ErrWrongKey too", err)
			}
			if after := snapshot(t, b); !maps.EqualFunc(after, before, bytes.Equal) {
				t.Fatalf("a refused upload changed the bucket: %v, then %v", slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after)))
			}
		})
	}
}

// TestEncryptedChangelogCheckpoint: the segments are sealed, the base's
// files keep their Stored blobs, another Uploader with the key (a
// restarted node) can extend the chain, the download decrypts it all,
// and the next table checkpoint reuses the base's sealed tables.
func TestEncryptedChangelogCheckpoint(t *testing.T) {
	ctx := testCtx(t)
	b := open(t, fileURL(t.TempDir()))
	u := newUploader(t, b, withKey(t, testKeyURL))
	r := rand.New(rand.NewPCG(4, 4))
	marker := []byte("distinctive-segment-plaintext-77")
	dir, files := checkpointDir(t, r, 3)
	m1, _, err := u.Upload(ctx, dir, meta(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	segs := map[string][]byte{seg1: append(randomBytes(r, 500), marker...), seg2: append(randomBytes(r, 700), marker...)}
	m2, st, err := u.UploadChangelog(ctx, m1, segmentDir(t, map[string][]byte{seg1: segs[seg1]}), meta(2),
		uploader.Changelog{BaseEpoch: 1, BaseIndex: 100, Segments: []string{seg1}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.FilesUploaded != 1 || !reflect.DeepEqual(m2.Encryption, m1.Encryption) || !reflect.DeepEqual(withoutSegments(m2), m1.Files) {
		t.Fatalf("encrypted changelog checkpoint: %d sent, encryption %+v, files %+v; want 1 sent and the base's encryption and files", st.FilesUploaded, m2.Encryption, m2.Files)
	}
	for _, f := range m2.Files {
		if f.Path != seg1 {
			continue
		}
		if f.Stored == nil || f.Blob() == uploader.BlobKey(f.SHA256) {
			t.Fatalf("segment %s is not stored sealed: %+v", f.Path, f.Stored)
		}
		data, err := b.ReadAll(ctx, f.Blob())
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, marker) {
			t.Fatal("the segment's blob holds its plaintext")
		}
	}
	// A restarted node, with the key, extends the chain.
	restarted := newUploader(t, b, withKey(t, testKeyURL))
	m3, _, err := restarted.UploadChangelog(ctx, m2, segmentDir(t, map[string][]byte{seg2: segs[seg2]}), meta(3),
		uploader.Changelog{BaseEpoch: 1, BaseIndex: 100, Segments: []string{seg1, seg2}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if _, err := newUploader(t, b, withKey(t, testKeyURL)).Download(ctx, m3, out, nil); err != nil {
		t.Fatal(err)
	}
	maps.Copy(files, segs)
	sameFiles(t, out, files)
	// The base's tables stay sealed for the next table checkpoint.
	if _, st, err := u.Upload(ctx, dir, meta(4), nil); err != nil || st.FilesUploaded != 0 {
		t.Fatalf("table checkpoint after the changelog one: %+v, %v; want nothing sent", st, err)
	}
}

// TestRetentionKeepsTheBaseOfAChangelogCheckpoint: retain 1 after a
// changelog checkpoint deletes the base's manifest but keeps its blobs;
// once a table checkpoint is the newest, they go.
func TestRetentionKeepsTheBaseOfAChangelogCheckpoint(t *testing.T) {
	ctx := testCtx(t)
	b := open(t, fileURL(t.TempDir()))
	u := newUploader(t, b)
	c := uploadChain(t, u, 5)
	if _, err := u.Retain(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if got := blobKeys(t, b, "manifests/"); !slices.Equal(got, []string{"manifests/00000000000000000003.json"}) {
		t.Fatalf("manifests/ = %v, want only checkpoint 3's", got)
	}
	kept := blobKeys(t, b, "files/")
	if want := referenced(c.ms[:]); !slices.Equal(kept, want) {
		t.Fatalf("files/ = %v, want the base's blobs and the segments' %v", kept, want)
	}
	if probs, err := u.Verify(ctx, c.ms[2]); err != nil || len(probs) != 0 {
		t.Fatalf("verify of checkpoint 3 after retention: %v, %v", probs, err)
	}

	dir, _ := checkpointDir(t, rand.New(rand.NewPCG(6, 6)), 3) // other tables
	m4, _, err := u.Upload(ctx, dir, meta(4), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Retain(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if got, want := blobKeys(t, b, "files/"), referenced([]*uploader.Manifest{m4}); !slices.Equal(got, want) {
		t.Fatalf("files/ = %v, want only checkpoint 4's %v", got, want)
	}
	gone := 0
	for _, k := range referenced(c.ms[:]) {
		if !slices.Contains(referenced([]*uploader.Manifest{m4}), k) {
			gone++
		}
	}
	if gone < 5 { // the 3 tables, the MANIFEST and the WAL, at least
		t.Fatalf("only %d blobs of the chain were not checkpoint 4's", gone)
	}
}

// TestDownloadOfAChangelogCheckpointFetchesBaseAndSegments: every file,
// the base's tables and the segments, lands at its path, verified.
func TestDownloadOfAChangelogCheckpointFetchesBaseAndSegments(t *testing.T) {
	ctx := testCtx(t)
	bucketDir := t.TempDir()
	b := open(t, fileURL(bucketDir))
	u := newUploader(t, b)
	c := uploadChain(t, u, 7)
	m := c.ms[2]
	out := t.TempDir()
	st, err := u.Download(ctx, m, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.FilesDownloaded != len(m.Files) {
		t.Fatalf("download stats %+v, want %d files fetched", st, len(m.Files))
	}
	sameFiles(t, out, c.all())
	// A damaged segment is found, as a damaged table is.
	damage(t, bucketDir, m.Files[slices.IndexFunc(m.Files, func(f uploader.File) bool { return f.Path == seg2 })])
	if _, err := u.Download(ctx, m, t.TempDir(), nil); !errors.Is(err, uploader.ErrCorrupt) || !strings.Contains(err.Error(), "file "+seg2) {
		t.Fatalf("download with a damaged segment: %v, want ErrCorrupt naming %s", err, seg2)
	}
	if probs, err := u.Verify(ctx, m); err != nil || len(probs) != 1 || probs[0].Path != seg2 {
		t.Fatalf("verify = %+v, %v; want %s damaged", probs, err, seg2)
	}
}

// TestChangelogUploadFailsWhenTheBaseLostABlob: an inherited blob gone
// at any moment of the upload fails it with ErrCorrupt naming the file,
// and leaves no manifest.
func TestChangelogUploadFailsWhenTheBaseLostABlob(t *testing.T) {
	for _, tc := range []struct {
		name string
		// lose sets up the loss of a blob of checkpoint 1, whose table
		// table is, and returns what the error must say.
		lose func(t *testing.T, table uploader.File, wb *faultBucket, writer, collector *uploader.Uploader) string
		// writesManifest: the loss is found only after the manifest was
		// written. The bucket is listed at the commit point only, so the
		// segment is sent in every case.
		writesManifest bool
	}{
		{"deleted before the upload", func(t *testing.T, table uploader.File, wb *faultBucket, _, _ *uploader.Uploader) string {
			if err := wb.inner.Delete(context.Background(), table.Blob()); err != nil {
				t.Fatal(err)
			}
			// The bucket is listed at the commit point only: the segment
			// is sent, and the loss is found before the manifest.
			return "file " + table.Path + " (blob " + table.Blob() + "), inherited from checkpoint 1, is not in the bucket before the manifest was written"
		}, false},
		{"deleted while the segment is sent", func(t *testing.T, table uploader.File, wb *faultBucket, _, _ *uploader.Uploader) string {
			wb.onWrite = once("files/", func() {
				if err := wb.inner.Delete(context.Background(), table.Blob()); err != nil {
					t.Error(err)
				}
			})
			return "file " + table.Path + " (blob " + table.Blob() + "), inherited from checkpoint 1, is not in the bucket before the manifest was written"
		}, false},
		{"deleted by another node's collection as the manifest is written", func(t *testing.T, _ uploader.File, wb *faultBucket, writer, collector *uploader.Uploader) string {
			// Checkpoint 1's manifest goes: nothing the collection reads
			// references its blobs until checkpoint 2's lands.
			if err := writer.Delete(context.Background(), 1, true); err != nil {
				t.Fatal(err)
			}
			wb.onWrite = once("manifests/", func() {
				if _, err := collector.Retain(context.Background(), 1); err != nil {
					t.Error(err)
				}
			})
			return "inherited from checkpoint 1, is not in the bucket any more (a collection on another node deleted it)"
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			writer, wb, collector, _ := twoNodes(t)
			r := rand.New(rand.NewPCG(8, 8))
			dir, _ := checkpointDir(t, r, 3)
			m1, _, err := writer.Upload(ctx, dir, meta(1), nil)
			if err != nil {
				t.Fatal(err)
			}
			table := m1.Files[slices.IndexFunc(m1.Files, func(f uploader.File) bool { return strings.HasSuffix(f.Path, ".sst") })]
			want := tc.lose(t, table, wb, writer, collector)
			var manifestWrites atomic.Int64
			after := wb.afterWrite
			wb.afterWrite = func(key string) {
				if strings.HasPrefix(key, "manifests/") {
					manifestWrites.Add(1)
				}
				if after != nil {
					after(key)
				}
			}
			_, _, err = writer.UploadChangelog(ctx, m1, segmentDir(t, map[string][]byte{seg1: randomBytes(r, 100)}), meta(2),
				uploader.Changelog{BaseEpoch: 1, BaseIndex: 100, Segments: []string{seg1}}, nil, nil)
			if !errors.Is(err, uploader.ErrCorrupt) || !strings.Contains(err.Error(), want) {
				t.Fatalf("UploadChangelog = %v, want ErrCorrupt with %q", err, want)
			}
			if _, err := writer.Get(ctx, 2); !errors.Is(err, uploader.ErrNotFound) {
				t.Fatalf("the failed upload left checkpoint 2: %v", err)
			}
			if n := manifestWrites.Load(); (n != 0) != tc.writesManifest {
				t.Fatalf("%d manifest writes; want one only when the loss is found after it", n)
			}
		})
	}
}

// TestSavepointOfAChangelogCheckpointKeepsItsBase: the pin is the
// changelog manifest, format and chain included, and keeps the base's
// blobs once newer table checkpoints replaced the chain.
func TestSavepointOfAChangelogCheckpointKeepsItsBase(t *testing.T) {
	ctx := testCtx(t)
	b := open(t, fileURL(t.TempDir()))
	u := newUploader(t, b)
	c := uploadChain(t, u, 9)
	if err := u.Savepoint(ctx, 3, "before-compaction"); err != nil {
		t.Fatal(err)
	}
	dir, _ := checkpointDir(t, rand.New(rand.NewPCG(10, 10)), 3)
	if _, _, err := u.Upload(ctx, dir, meta(4), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Retain(ctx, 1); err != nil {
		t.Fatal(err)
	}
	sp, err := u.GetSavepoint(ctx, "before-compaction")
	if err != nil {
		t.Fatal(err)
	}
	if sp.FormatVersion != uploader.FormatVersionChangelog || !reflect.DeepEqual(sp.Changelog, c.ms[2].Changelog) || !slices.Equal(sp.Files, c.ms[2].Files) {
		t.Fatalf("savepoint = %+v, want checkpoint 3 as uploaded", sp)
	}
	out := t.TempDir()
	if _, err := u.Download(ctx, sp, out, nil); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, out, c.all())
}
