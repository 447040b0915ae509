package uploader_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"testing"
	"time"

	"github.com/statedhq/stated/uploader"
)

// BenchmarkChangelogCheckpoint: what one changelog checkpoint costs the
// node that takes it, as the daemon takes one every second at 1 GB under
// 100 × 8 commits: a segment of benchSegmentSize written to a file, its
// upload on the tables of a table checkpoint (benchDir's, 100 MB), then
// retention keeping 3. Each iteration's segment is new, and the chain
// already holds `segments` segments (small: what a listing costs depends
// on how many blobs the bucket holds, not on their size), as it does
// `segments` seconds after its base with a 1 s interval.
//
// hashed=false is how it ran before: the upload reads the segment to
// hash it, then reads it again to send it, checking the SHA-256; full
// retention lists and reads the whole bucket. hashed=true is how the
// daemon runs it now: the segment is hashed as it is written
// (uploader.Hasher), sent checked against its CRC-32C, and retention
// after a changelog checkpoint deletes old manifests only
// (RetainManifests). Both list the bucket at the commit point and after
// the manifest (the listing before the files are sent is gone for every
// changelog upload, so neither variant has it).
//
//	go test ./uploader -run '^$' -bench BenchmarkChangelogCheckpoint -benchtime 20x -count 3
func BenchmarkChangelogCheckpoint(b *testing.B) {
	for _, segments := range []int{0, 600} {
		for _, hashed := range []bool{false, true} {
			b.Run(fmt.Sprintf("segments=%d/hashed=%t", segments, hashed), func(b *testing.B) {
				benchChangelogCheckpoint(b, segments, hashed)
			})
		}
	}
}

// benchSegmentSize is a second of the growth study's 1 s checkpoint row:
// 41–45 MB of Raft log entries.
const benchSegmentSize = 43 << 20

func benchChangelogCheckpoint(b *testing.B, history int, hashed bool) {
	ctx := b.Context()
	bucket := open(b, fileURL(filepath.Join(b.TempDir(), "bucket")))
	u := newUploader(b, bucket)
	prev, _, err := u.Upload(ctx, benchDir(b), meta(1), nil)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	epoch, index := uint64(1), uint64(100)
	// segment writes the next segment into a new directory, through a
	// Hasher when hashed, and returns the directory, its path in the
	// checkpoint and what it hashed to.
	data := randomBytes(r, benchSegmentSize)
	segment := func(size int) (string, string, map[string]uploader.Hashed) {
		dir := b.TempDir()
		rel := path.Join("changelog", fmt.Sprintf("%020d-%020d.log", index+1, index+1000))
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			b.Fatal(err)
		}
		binary.BigEndian.PutUint64(data, index) // a new segment each time
		f, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		var h *uploader.Hasher
		if hashed {
			h = u.NewHasher()
		}
		for rest := data[:size]; len(rest) > 0; {
			n := min(len(rest), 256<<10) // the segment writer's buffer
			if _, err := f.Write(rest[:n]); err != nil {
				b.Fatal(err)
			}
			if h != nil {
				h.Write(rest[:n])
			}
			rest = rest[n:]
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		if h == nil {
			return dir, rel, nil
		}
		return dir, rel, map[string]uploader.Hashed{rel: h.Sum()}
	}
	checkpoint := func(size int) {
		dir, rel, sums := segment(size)
		epoch, index = epoch+1, index+1000
		cl := prev.NextChangelog()
		cl.Segments = append(cl.Segments, rel)
		m := meta(epoch)
		m.RaftIndex = index
		var err error
		if prev, _, err = u.UploadChangelog(ctx, prev, dir, m, cl, sums, nil); err != nil {
			b.Fatal(err)
		}
		if hashed {
			_, err = u.RetainManifests(ctx, 3)
		} else {
			_, err = u.Retain(ctx, 3)
		}
		if err != nil {
			b.Fatal(err)
		}
		os.RemoveAll(dir)
	}
	for range history {
		checkpoint(4096)
	}
	cpu := cpuMeter{b: b}
	var elapsed time.Duration
	for b.Loop() {
		start := time.Now()
		cpu.begin()
		checkpoint(benchSegmentSize)
		cpu.end()
		elapsed += time.Since(start)
	}
	cpu.report()
	reportMBps(b, int64(b.N)*benchSegmentSize, elapsed)
}
