package raftstore

import (
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/hashicorp/raft-wal/metadb"
)

// BenchmarkOpenWALWithAFullTail opens, b.N times, a raft-wal log whose
// tail segment holds about 60 MB of entries (460 of 130 KB, a 1000-put
// commit each), as a node's restart does: "open" is openWAL and its Close;
// "roll-check" is finishInterruptedRoll alone, the tail's second read at
// every open.
//
//	go test ./raftstore -run '^$' -bench BenchmarkOpenWALWithAFullTail -benchtime 20x -count 3
func BenchmarkOpenWALWithAFullTail(b *testing.B) {
	dir := b.TempDir()
	w, err := openWAL(dir, hclog.NewNullLogger())
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 130_000)
	for i := range uint64(460) {
		if err := w.StoreLogs([]*raft.Log{{Index: i + 1, Term: 1, Type: raft.LogCommand, Data: data}}); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	b.Run("open", func(b *testing.B) {
		for range b.N {
			w, err := openWAL(dir, hclog.NewNullLogger())
			if err != nil {
				b.Fatal(err)
			}
			if last, err := w.LastIndex(); err != nil || last != 460 {
				b.Fatalf("last index %d, %v", last, err)
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("roll-check", func(b *testing.B) {
		for range b.N {
			meta := &metadb.BoltMetaDB{}
			if err := finishInterruptedRoll(dir, meta); err != nil {
				b.Fatal(err)
			}
			if err := meta.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
