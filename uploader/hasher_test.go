package uploader_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/statedhq/stated/uploader"
)

// hashedAs returns what u's Hasher makes of data, written in pieces of
// uneven sizes as a segment writer writes it.
func hashedAs(u *uploader.Uploader, data []byte) uploader.Hashed {
	h := u.NewHasher()
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1+len(rest)/3)
		h.Write(rest[:n])
		rest = rest[n:]
	}
	return h.Sum()
}

// TestChangelogUploadOfHashedSegmentsSendsThemWithoutHashingThem: a
// segment given with what its writer hashed is not read to be hashed
// (no bytes hashed by the upload), is stored under its SHA-256, and the
// checkpoint downloads and verifies; on a bucket that checks MD5s (S3 on
// loopback), the Hasher's MD5 is what the bucket checks.
func TestChangelogUploadOfHashedSegmentsSendsThemWithoutHashingThem(t *testing.T) {
	for _, bucket := range []struct{ name, url string }{
		{"file", fileURL(t.TempDir())},
		{"s3", s3Server(t)},
	} {
		t.Run(bucket.name, func(t *testing.T) {
			ctx := testCtx(t)
			b := open(t, bucket.url)
			u := newUploader(t, b)
			r := rand.New(rand.NewPCG(21, 21))
			dir, base := checkpointDir(t, r, 2)
			m1, _, err := u.Upload(ctx, dir, meta(1), nil)
			if err != nil {
				t.Fatal(err)
			}
			data := randomBytes(r, 3<<20)
			hashed := hashedAs(u, data)
			if sum := sha256.Sum256(data); hashed.SHA256 != hex.EncodeToString(sum[:]) || hashed.Size != int64(len(data)) {
				t.Fatalf("Hasher = %+v; want SHA-256 %x of %d bytes", hashed, sum, len(data))
			}
			if (hashed.MD5 != nil) != (bucket.name == "s3") {
				t.Fatalf("Hasher's MD5 = %x; want one only where the bucket checks MD5s", hashed.MD5)
			}
			m2, st, err := u.UploadChangelog(ctx, m1, segmentDir(t, map[string][]byte{seg1: data}), meta(2),
				uploader.Changelog{BaseEpoch: 1, BaseIndex: 100, Segments: []string{seg1}}, map[string]uploader.Hashed{seg1: hashed}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if st.FilesHashed != 0 || st.BytesHashed != 0 || st.FilesUploaded != 1 || st.BytesUploaded != int64(len(data)) {
				t.Fatalf("stats %+v; want the segment sent (%d bytes) and nothing hashed", st, len(data))
			}
			got, err := b.ReadAll(ctx, uploader.BlobKey(hashed.SHA256))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("blob %s: %d bytes, %v; want the segment", uploader.BlobKey(hashed.SHA256), len(got), err)
			}
			if probs, err := u.Verify(ctx, m2); err != nil || len(probs) != 0 {
				t.Fatalf("Verify = %+v, %v", probs, err)
			}
			out := filepath.Join(t.TempDir(), "restore")
			if _, err := u.Download(ctx, m2, out, nil); err != nil {
				t.Fatal(err)
			}
			want := maps.Clone(base)
			want[seg1] = data
			sameFiles(t, out, want)
		})
	}
}

// TestChangelogUploadOfAHashedSegmentThatChangedFails: a segment whose
// bytes are not those its writer hashed (same size, one byte changed) is
// not stored under the hashed name, and no manifest is written, whether
// it is a file (UploadChangelog) or held in memory
// (UploadChangelogSegments).
func TestChangelogUploadOfAHashedSegmentThatChangedFails(t *testing.T) {
	for _, inMemory := range []bool{false, true} {
		t.Run(fmt.Sprintf("in memory %t", inMemory), func(t *testing.T) {
			ctx := testCtx(t)
			b := open(t, fileURL(t.TempDir()))
			u := newUploader(t, b)
			r := rand.New(rand.NewPCG(22, 22))
			dir, _ := checkpointDir(t, r, 2)
			m1, _, err := u.Upload(ctx, dir, meta(1), nil)
			if err != nil {
				t.Fatal(err)
			}
			data := randomBytes(r, 1<<20)
			hashed := hashedAs(u, data)
			data[len(data)/2] ^= 0x40
			cl := uploader.Changelog{BaseEpoch: 1, BaseIndex: 100, Segments: []string{seg1}}
			if inMemory {
				_, _, err = u.UploadChangelogSegments(ctx, m1, meta(2), cl,
					[]uploader.Segment{{Path: seg1, Hashed: hashed, Open: func() io.Reader { return bytes.NewReader(data) }}}, nil)
			} else {
				_, _, err = u.UploadChangelog(ctx, m1, segmentDir(t, map[string][]byte{seg1: data}), meta(2), cl,
					map[string]uploader.Hashed{seg1: hashed}, nil)
			}
			if err == nil || !strings.Contains(err.Error(), "changed after it was hashed: CRC-32C") {
				t.Fatalf("upload = %v; want the change found by the CRC-32C", err)
			}
			if _, err := u.Get(ctx, 2); !errors.Is(err, uploader.ErrNotFound) {
				t.Fatalf("the failed upload left checkpoint 2: %v", err)
			}
			if ok, err := b.Exists(ctx, uploader.BlobKey(hashed.SHA256)); err != nil || ok {
				t.Fatalf("blob %s exists: %t, %v; want none under the hashed name", uploader.BlobKey(hashed.SHA256), ok, err)
			}
		})
	}
}

// TestUploadChangelogRefusesHashedEntriesThatDoNotFit: a hashed entry for
// no file of the directory, of another size, or with a SHA-256 that is
// not one is ErrInvalid naming it, and nothing is written.
func TestUploadChangelogRefusesHashedEntriesThatDoNotFit(t *testing.T) {
	ctx := testCtx(t)
	b := open(t, fileURL(t.TempDir()))
	u := newUploader(t, b)
	r := rand.New(rand.NewPCG(23, 23))
	dir, _ := checkpointDir(t, r, 2)
	m1, _, err := u.Upload(ctx, dir, meta(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(r, 4096)
	good := hashedAs(u, data)
	seg := segmentDir(t, map[string][]byte{seg1: data})
	cl := uploader.Changelog{BaseEpoch: 1, BaseIndex: 100, Segments: []string{seg1}}
	withSize, withSHA := good, good
	withSize.Size++
	withSHA.SHA256 = strings.Repeat("zz", sha256.Size)
	for _, tc := range []struct {
		name   string
		hashed map[string]uploader.Hashed
		want   string
	}{
		{"a path not in the directory", map[string]uploader.Hashed{seg1: good, seg2: good}, `hashed names "` + seg2 + `", which is not a file of the directory`},
		{"another size", map[string]uploader.Hashed{seg1: withSize}, `hashed["` + seg1 + `"] is of 4097 bytes; the file has 4096`},
		{"not a SHA-256", map[string]uploader.Hashed{seg1: withSHA}, `hashed["` + seg1 + `"].SHA256 "zzzz`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, b)
			_, _, err := u.UploadChangelog(ctx, m1, seg, meta(2), cl, tc.hashed, nil)
			if !errors.Is(err, uploader.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("UploadChangelog = %v, want ErrInvalid with %q", err, tc.want)
			}
			if after := snapshot(t, b); !maps.EqualFunc(after, before, bytes.Equal) {
				t.Fatal("a refused upload changed the bucket")
			}
		})
	}
	if _, err := os.Stat(filepath.Join(seg, filepath.FromSlash(seg1))); err != nil {
		t.Fatalf("the segment is gone after the refusals: %v", err)
	}
}

// TestChangelogUploadOfSegmentsHeldInMemory: UploadChangelogSegments
// sends segments from memory (no directory at all) as UploadChangelog
// sends hashed files: nothing hashed again, the blob under the segment's
// SHA-256, and a checkpoint that verifies and downloads; on a file
// bucket, on S3 (which checks MD5s) and encrypted. A second changelog
// checkpoint continues the first.
func TestChangelogUploadOfSegmentsHeldInMemory(t *testing.T) {
	for _, tc := range []struct {
		name    string
		url     func(t *testing.T) string
		encrypt bool
	}{
		{"file", func(t *testing.T) string { return fileURL(t.TempDir()) }, false},
		{"s3", s3Server, false},
		{"file, encrypted", func(t *testing.T) string { return fileURL(t.TempDir()) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			b := open(t, tc.url(t))
			u := newUploader(t, b)
			if tc.encrypt {
				u = newUploader(t, b, withKey(t, testKeyURL))
			}
			r := rand.New(rand.NewPCG(24, 24))
			dir, base := checkpointDir(t, r, 2)
			m1, _, err := u.Upload(ctx, dir, meta(1), nil)
			if err != nil {
				t.Fatal(err)
			}
			want := maps.Clone(base)
			prev := m1
			for i, p := range []string{seg1, seg2} {
				data := randomBytes(r, 3<<20+i)
				opens := 0
				seg := uploader.Segment{Path: p, Hashed: hashedAs(u, data), Open: func() io.Reader { opens++; return bytes.NewReader(data) }}
				m, st, err := u.UploadChangelogSegments(ctx, prev, meta(uint64(2+i)),
					uploader.Changelog{BaseEpoch: 1, BaseIndex: 100, Segments: []string{seg1, seg2}[:i+1]}, []uploader.Segment{seg}, nil)
				if err != nil {
					t.Fatal(err)
				}
				if st.FilesHashed != 0 || st.FilesUploaded != 1 || st.BytesUploaded == 0 || opens != 1 {
					t.Fatalf("segment %s: stats %+v, read %d times; want it sent once and nothing hashed", p, st, opens)
				}
				if !tc.encrypt {
					if got, err := b.ReadAll(ctx, uploader.BlobKey(seg.Hashed.SHA256)); err != nil || !bytes.Equal(got, data) {
						t.Fatalf("blob %s: %d bytes, %v; want the segment", uploader.BlobKey(seg.Hashed.SHA256), len(got), err)
					}
				}
				if probs, err := u.Verify(ctx, m); err != nil || len(probs) != 0 {
					t.Fatalf("Verify = %+v, %v", probs, err)
				}
				out := filepath.Join(t.TempDir(), "restore")
				if _, err := u.Download(ctx, m, out, nil); err != nil {
					t.Fatal(err)
				}
				want[p] = data
				sameFiles(t, out, want)
				prev = m
			}
		})
	}
}

// TestUploadChangelogSegmentsRefusesSegmentsThatAreNotWhole: each
// refusal is ErrInvalid naming what is wrong, and nothing is written.
func TestUploadChangelogSegmentsRefusesSegmentsThatAreNotWhole(t *testing.T) {
	ctx := testCtx(t)
	b := open(t, fileURL(t.TempDir()))
	u := newUploader(t, b)
	r := rand.New(rand.NewPCG(26, 26))
	dir, _ := checkpointDir(t, r, 2)
	m1, _, err := u.Upload(ctx, dir, meta(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(r, 1000)
	h := hashedAs(u, data)
	openData := func() io.Reader { return bytes.NewReader(data) }
	notSHA := h
	notSHA.SHA256 = "abc"
	empty := h
	empty.Size = 0
	cl := uploader.Changelog{BaseEpoch: 1, BaseIndex: 100, Segments: []string{seg1}}
	for _, tc := range []struct {
		name string
		segs []uploader.Segment
		cl   uploader.Changelog
		want string
	}{
		{"no segment", nil, cl, "no segment"},
		{"no Open", []uploader.Segment{{Path: seg1, Hashed: h}}, cl, "has no Open"},
		{"no path", []uploader.Segment{{Hashed: h, Open: openData}}, cl, "has no path"},
		{"a path twice", []uploader.Segment{{Path: seg1, Hashed: h, Open: openData}, {Path: seg1, Hashed: h, Open: openData}},
			uploader.Changelog{BaseEpoch: 1, BaseIndex: 100, Segments: []string{seg1, seg1}}, "given twice"},
		{"not a SHA-256", []uploader.Segment{{Path: seg1, Hashed: notSHA, Open: openData}}, cl, "not a hex SHA-256"},
		{"no bytes", []uploader.Segment{{Path: seg1, Hashed: empty, Open: openData}}, cl, "is of 0 bytes"},
		{"not in the changelog", []uploader.Segment{{Path: seg2, Hashed: h, Open: openData}}, cl, "is not a file of the directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := u.UploadChangelogSegments(ctx, m1, meta(2), tc.cl, tc.segs, nil)
			if !errors.Is(err, uploader.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("UploadChangelogSegments = %v; want ErrInvalid saying %q", err, tc.want)
			}
			if ok, err := b.Exists(ctx, uploader.BlobKey(h.SHA256)); err != nil || ok {
				t.Fatalf("blob %s exists: %t, %v; want nothing written", uploader.BlobKey(h.SHA256), ok, err)
			}
			if _, err := u.Get(ctx, 2); !errors.Is(err, uploader.ErrNotFound) {
				t.Fatalf("the refused upload left checkpoint 2: %v", err)
			}
		})
	}
}
