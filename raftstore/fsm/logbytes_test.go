package fsm

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// failingSink fails every write.
type failingSink struct{ bufSink }

func (s *failingSink) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func bigPutCmd(key string, n int) *command.Command {
	return commitCmd(1, []command.Mutation{{Op: command.OpPut, Namespace: "ns", Key: []byte(key), Value: bytes.Repeat([]byte{'v'}, n)}}, nil)
}

func TestLogBytesCountsEntriesSinceTheNewestSnapshotTakenOrRestored(t *testing.T) {
	f := openFSM(t)
	var want uint64
	for i := range 4 {
		data := command.Encode(nil, bigPutCmd(string(rune('a'+i)), 1000))
		want += uint64(len(data))
		f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: data})
	}
	if got := f.LogBytes(); got.SinceSnapshot != want || got.Entries != 4 {
		t.Fatalf("before any snapshot: %+v, want %d bytes in 4 entries", got, want)
	}

	// A persisted snapshot restarts the count.
	snap := snapshotBytes(t, f)
	if got := f.LogBytes(); got.SinceSnapshot != 0 || got.Entries != 0 {
		t.Fatalf("after a persisted snapshot: %+v, want 0 since it", got)
	}

	// A snapshot whose Persist fails leaves the log uncompacted: the
	// count goes on from the one before.
	data := command.Encode(nil, bigPutCmd("e", 500))
	f.Apply(&raft.Log{Index: 5, Type: raft.LogCommand, Data: data})
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if got := f.LogBytes().SinceSnapshot; got != 0 {
		t.Fatalf("while a snapshot is taken: %d bytes since it, want 0", got)
	}
	if err := s.Persist(&failingSink{}); err == nil {
		t.Fatal("Persist to a failing sink succeeded")
	}
	s.Release()
	if got := f.LogBytes(); got.SinceSnapshot != uint64(len(data)) || got.Entries != 1 {
		t.Fatalf("after a failed snapshot: %+v, want %d bytes in 1 entry since the persisted one", got, len(data))
	}
	// Applied counts every entry since Open, snapshots or not.
	if got := f.LogBytes().Applied; got != want+uint64(len(data)) {
		t.Fatalf("applied since Open: %d bytes, want %d", got, want+uint64(len(data)))
	}

	// A restored snapshot replaces the log before it: the count restarts

	g := openFSM(t)
	g.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: command.Encode(nil, bigPutCmd("x", 100))})
	if err := g.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if got := g.LogBytes(); got.SinceSnapshot != 0 {
		t.Fatalf("after a restore: %+v, want 0 since it", got)
	}

	// Entries the state machine skips as applied (a replay after a
	// restart) are in the log all the same, and count.
	before := g.LogBytes().SinceSnapshot
	data = command.Encode(nil, bigPutCmd("a", 1000))
	g.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data})
	if got := g.LogBytes().SinceSnapshot; got != before+uint64(len(data)) {
		t.Fatalf("a replayed entry: %d bytes since the snapshot, want %d", got, before+uint64(len(data)))
	}
}
