package fsm

import (
	"crypto/rand"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// BenchmarkChangelogSegmentSource writes one changelog segment of 440
// entries of 100 KB (a second of the growth study's 1 s row at 1 GB: 100
// puts of 1 KiB per commit, 45 MB), hashed, from its two sources:
//   - from-log: each entry read back from a raft-wal log, as Store.ReadLog
//     does, into a segment file hashed as it is written;
//   - captured: each entry captured by the apply loop (what it adds to
//     applying it), then the segment made of the captured records in
//     memory and hashed, as the leader sends it (no file).
//
// CPU time per segment is what a changelog checkpoint takes from the
// commits on a busy machine.
//
//	go test ./raftstore/fsm -run '^$' -bench BenchmarkChangelogSegmentSource -benchtime 20x -count 3
func BenchmarkChangelogSegmentSource(b *testing.B) {
	const entries, size = 440, 100 << 10
	logs := make([]*raft.Log, entries)
	var total int64
	for i := range logs {
		d := make([]byte, size)
		rand.Read(d)
		logs[i] = &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: d}
		total += int64(len(d))
	}
	dir := b.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "wal"), 0o700); err != nil {
		b.Fatal(err)
	}
	w, err := wal.Open(filepath.Join(dir, "wal"), wal.WithMetaStore(&metadb.BoltMetaDB{}))
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	if err := w.StoreLogs(logs); err != nil {
		b.Fatal(err)
	}
	segment := func(b *testing.B, fill func(*ChangelogWriter) error) {
		h := sha256.New()
		sw, err := CreateChangelogSegment(filepath.Join(dir, "seg"), 1, entries, h)
		if err != nil {
			b.Fatal(err)
		}
		if err := fill(sw); err != nil {
			b.Fatal(err)
		}
		if err := sw.Close(); err != nil {
			b.Fatal(err)
		}
		h.Sum(nil)
	}
	b.Run("from-log", func(b *testing.B) {
		b.SetBytes(total)
		for b.Loop() {
			segment(b, func(sw *ChangelogWriter) error {
				for i := uint64(1); i <= entries; i++ {
					var l raft.Log
					if err := w.GetLog(i, &l); err != nil {
						return err
					}
					if err := sw.Append(&l); err != nil {
						return err
					}
				}
				return nil
			})
		}
	})
	b.Run("captured", func(b *testing.B) {
		f := openFSM(b)
		f.CaptureChangelog(64 << 20)
		b.SetBytes(total)
		for b.Loop() {
			f.capture.open = &CapturedChangelog{From: 1}
			for _, l := range logs {
				f.captureEntry(l)
			}
			c := f.sealCapture(logs[entries-1])
			if c == nil || c.Count != entries {
				b.Fatalf("captured %+v", c)
			}
			seg, err := c.Segment(1, entries)
			if err != nil {
				b.Fatal(err)
			}
			h := sha256.New()
			seg.WriteTo(h)
			h.Sum(nil)
			c.Release()
		}
	})
}
