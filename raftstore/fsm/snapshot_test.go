package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// fillFSM applies n commits of one 64 KiB value each, enough that a
// snapshot stream takes several chunks (smallStreamChunks).
func fillFSM(t *testing.T, f *FSM, ns string, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		v := bytes.Repeat([]byte{byte(i)}, 64<<10)
		if res := apply(t, f, uint64(i), commitCmd(1, []command.Mutation{{Op: command.OpPut, Namespace: ns, Key: []byte(fmt.Sprint("k", i)), Value: v}}, nil)); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
}

// applyNoPanic applies cmd at index and fails the test, rather than the
// binary, when Apply panics.
func applyNoPanic(t *testing.T, f *FSM, index uint64, cmd *command.Command) (res *Result) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("Apply at index %d after the restore panicked: %v", index, r)
		}
	}()
	return f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: command.Encode(nil, cmd)}).(*Result)
}

// openStream takes a snapshot of f as Raft does and opens the stream its
// reference leads to.
func openStream(t *testing.T, f *FSM) (int64, io.ReadCloser) {
	t.Helper()
	applied, _, err := DecodeSnapshotRef(persistRef(t, f))
	if err != nil {
		t.Fatal(err)
	}
	size, rc, err := f.OpenSnapshotStream(applied)
	if err != nil {
		t.Fatal(err)
	}
	return size, rc
}

func smallStreamChunks(t *testing.T) {
	n := streamChunk
	streamChunk = 64 << 10
	t.Cleanup(func() { streamChunk = n })
}

func TestASnapshotPersistsAReferenceWhateverTheStateSize(t *testing.T) {
	for _, n := range []int{1, 100} {
		f := openFSM(t)
		fillFSM(t, f, "ns", n)
		ref := persistRef(t, f)
		if len(ref) != SnapshotRefSize {
			t.Fatalf("%d entries of 64 KiB: Persist wrote %d bytes, want a %d-byte reference", n, len(ref), SnapshotRefSize)
		}
		if got, err := SnapshotAppliedIndex(bytes.NewReader(ref)); err != nil || got != uint64(n) {
			t.Fatalf("the reference holds applied index %d (%v), want %d", got, err, n)
		}
		stream := streamBytes(t, f, ref)
		if len(stream) < n<<16 {
			t.Fatalf("the stream of %d entries of 64 KiB is %d bytes", n, len(stream))
		}
		g := openFSM(t)
		if err := g.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
			t.Fatal(err)
		}
		sameContents(t, f, g)
		if g.Restore(io.NopCloser(bytes.NewReader(ref))) == nil {
			t.Fatal("Restore of a reference succeeded")
		}
		damaged := bytes.Clone(ref)
		damaged[len(snapshotRefMagic)] ^= 1
		if _, ok, err := DecodeSnapshotRef(damaged); !ok || !errors.Is(err, ErrCorrupt) {
			t.Fatalf("a damaged reference: ok=%v err=%v, want ErrCorrupt", ok, err)
		}
	}
}

func TestRestoreDuringASnapshotStreamLeavesAWorkingStateMachine(t *testing.T) {
	// A leader reads its state for a follower on one goroutine while,
	// having lost its leadership, it restores a new leader's snapshot on
	// another. The stream must end in an error or be whole, never torn.
	smallStreamChunks(t)
	for range 10 {
		f, leader := openFSM(t), openFSM(t)
		fillFSM(t, f, "mine", 40)
		fillFSM(t, leader, "leader", 50)
		incoming := snapshotBytes(t, leader)

		size, rc := openStream(t, f)
		type read struct {
			b   []byte
			err error
		}
		streamed := make(chan read, 1)
		go func() {
			b, err := io.ReadAll(rc)
			rc.Close()
			streamed <- read{b, err}
		}()
		if err := f.Restore(io.NopCloser(bytes.NewReader(incoming))); err != nil {
			t.Fatalf("Restore during a snapshot stream: %v", err)
		}
		got := <-streamed
		if f.AppliedIndex() != 50 {
			t.Fatalf("applied index after the restore = %d, want the leader's 50", f.AppliedIndex())
		}
		if res := applyNoPanic(t, f, 51, commitCmd(1, []command.Mutation{{Op: command.OpPut, Namespace: "after", Key: []byte("k"), Value: []byte("v")}}, nil)); res.Err != nil {
			t.Fatalf("Apply after the restore: %v", res.Err)
		}
		if _, ok, _ := f.Get("mine", []byte("k1"), KindValue, nil, 0); ok {
			t.Fatal("the replaced state is still visible after the restore")
		}
		if got.err != nil {
			if !errors.Is(got.err, errSnapshotDetached) {
				t.Fatalf("the stream failed with %v, want errSnapshotDetached", got.err)
			}
			continue
		}
		if int64(len(got.b)) != size {
			t.Fatalf("the stream read during the restore is %d bytes, want %d", len(got.b), size)
		}
		check := openFSM(t)
		if err := check.Restore(io.NopCloser(bytes.NewReader(got.b))); err != nil || check.AppliedIndex() != 40 {
			t.Fatalf("the stream read during the restore: applied %d, err %v; want the state it was opened at, 40", check.AppliedIndex(), err)
		}
	}
}

func TestASnapshotPersistedAcrossARestoreRefersToTheNewerState(t *testing.T) {
	// Raft persists a snapshot on its own goroutine: a restore can come
	// between Snapshot and Persist. The reference then leads to the
	// restored state, which is newer; a follower sent it skips the
	// entries it holds.
	f, leader := openFSM(t), openFSM(t)
	fillFSM(t, f, "mine", 3)
	fillFSM(t, leader, "leader", 5)
	incoming := snapshotBytes(t, leader)

	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Restore(io.NopCloser(bytes.NewReader(incoming))); err != nil {
		t.Fatalf("Restore with a snapshot not yet persisted: %v", err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatalf("Persist after a restore: %v", err)
	}
	snap.Release()
	check := openFSM(t)
	if err := check.Restore(io.NopCloser(bytes.NewReader(streamBytes(t, f, sink.Bytes())))); err != nil || check.AppliedIndex() != 5 {
		t.Fatalf("the stream of a reference persisted after the restore: applied %d, err %v; want the restored 5", check.AppliedIndex(), err)
	}
	sameContents(t, leader, check)

	// A reference to a state newer than the one on disk (the state dir
	// was replaced) opens no stream.
	if _, _, err := f.OpenSnapshotStream(6); !errors.Is(err, ErrStateBehindSnapshot) {
		t.Fatalf("a stream for applied index 6 of a state at 5: %v, want ErrStateBehindSnapshot", err)
	}
}

func TestCloseDetachesAnOpenSnapshotStream(t *testing.T) {
	smallStreamChunks(t)
	f, err := Open(t.TempDir()+"/state", nil)
	if err != nil {
		t.Fatal(err)
	}
	fillFSM(t, f, "mine", 40)
	_, rc := openStream(t, f)
	if _, err := io.ReadFull(rc, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("Close with a snapshot stream open: %v", err)
	}
	if _, err := io.ReadAll(rc); !errors.Is(err, errSnapshotDetached) {
		t.Fatalf("reading a stream of a closed state machine: %v, want errSnapshotDetached", err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.OpenSnapshotStream(0); !errors.Is(err, ErrClosed) {
		t.Fatalf("OpenSnapshotStream after Close: %v, want ErrClosed", err)
	}
}

func TestSnapshotAppliedIndexReadsTheStateItHolds(t *testing.T) {
	empty := openFSM(t)
	if err := empty.db.Set([]byte{prefixState, 'x'}, []byte("v"), nil); err != nil {
		t.Fatal(err)
	}
	f := openFSM(t)
	fillFSM(t, f, "ns", 7)
	for name, tc := range map[string]struct {
		f    *FSM
		want uint64
	}{"applied entries": {f, 7}, "no applied index": {empty, 0}} {
		t.Run(name, func(t *testing.T) {
			got, err := SnapshotAppliedIndex(bytes.NewReader(snapshotBytes(t, tc.f)))
			if err != nil || got != tc.want {
				t.Fatalf("SnapshotAppliedIndex = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
	if _, err := SnapshotAppliedIndex(bytes.NewReader([]byte("hello"))); err == nil {
		t.Fatal("SnapshotAppliedIndex of a non-snapshot succeeded")
	}
}

// TestARestoredSnapshotIsIngestedAsTablesAtTheBottomLevel: a snapshot
// stream's records are written into tables that are ingested whole, so
// the restored state holds exactly the sender's keys and values, in
// tables of the bottom level (through batches, this small a state would
// still be in the memtable, and a larger one in L0 and compactions). The stream read by Read and by WriteTo (what io.Copy uses)
// is the same, and as long as OpenSnapshotStream said.
func TestARestoredSnapshotIsIngestedAsTablesAtTheBottomLevel(t *testing.T) {
	smallStreamChunks(t)
	defer func(n uint64) { snapshotTableSize = n }(snapshotTableSize)
	snapshotTableSize = 1 << 20
	a, b := openFSM(t), openFSM(t)
	rnd := rand.NewChaCha8([32]byte{9})
	for i := 1; i <= 200; i++ { // 12.5 MiB of values that do not compress
		v := make([]byte, 64<<10)
		rnd.Read(v)
		if res := apply(t, a, uint64(i), commitCmd(1, []command.Mutation{{Op: command.OpPut, Namespace: "ns", Key: []byte(fmt.Sprint("k", i)), Value: v}}, nil)); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	if res := apply(t, a, 201, commitCmd(1, []command.Mutation{{Op: command.OpPut, Namespace: "ns", Key: []byte("empty")}}, nil)); res.Err != nil {
		t.Fatal(res.Err)
	}
	fillFSM(t, b, "other", 3)

	size, rc := openStream(t, a)
	var copied bytes.Buffer
	if n, err := io.Copy(&copied, rc); err != nil || n != size { // WriteTo
		t.Fatalf("io.Copy of the stream: %d bytes, %v; OpenSnapshotStream said %d", n, err, size)
	}
	rc.Close()
	_, rc = openStream(t, a)
	read, err := io.ReadAll(struct{ io.Reader }{rc}) // Read only
	rc.Close()
	if err != nil || !bytes.Equal(read, copied.Bytes()) {
		t.Fatalf("the stream read with Read (%d bytes, %v) differs from the one written with WriteTo (%d bytes)", len(read), err, copied.Len())
	}

	if err := b.Restore(io.NopCloser(&copied)); err != nil {
		t.Fatal(err)
	}
	sameContents(t, a, b)
	if b.AppliedIndex() != 201 {
		t.Fatalf("applied index after the restore = %d, want 201", b.AppliedIndex())
	}
	m := b.db.Metrics()
	bottom := m.Levels[len(m.Levels)-1]
	if m.Levels[0].TablesCount != 0 || bottom.TablesCount < 10 {
		t.Fatalf("after the restore L0 holds %d tables and the bottom level %d; want none in L0 and the 12.5 MiB in tables of about 1 MiB at the bottom",
			m.Levels[0].TablesCount, bottom.TablesCount)
	}
	// A table per key prefix, as flushes and compactions write them.
	if byPrefix := tablesByPrefix(t, b.db); len(byPrefix[prefixSystem]) == 0 || len(byPrefix[prefixState]) < 10 {
		t.Errorf("restored tables by prefix: %v; want the bookkeeping's apart from the state's", byPrefix)
	}
	for _, p := range []string{b.dir + ".restore", b.dir + ".restore" + tablesSuffix} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s is left after the restore: %v", p, err)
		}
	}
	// The restored state takes new entries.
	if res := apply(t, b, 202, commitCmd(1, []command.Mutation{{Op: command.OpPut, Namespace: "ns", Key: []byte("after")}}, nil)); res.Err != nil {
		t.Fatal(res.Err)
	}
}

// TestRestoreRefusesRecordsOutOfKeyOrder: a stream whose checksum holds but
// whose records are not in key order (no sender writes one) is corrupt,
// and the state stays as it was.
func TestRestoreRefusesRecordsOutOfKeyOrder(t *testing.T) {
	f := openFSM(t)
	fillFSM(t, f, "ns", 3)
	before := dump(t, f)
	for name, keys := range map[string][]string{
		"descending": {"\x02b", "\x02a"},
		"repeated":   {"\x02a", "\x02a"},
	} {
		t.Run(name, func(t *testing.T) {
			s := []byte(snapshotMagic)
			for _, k := range keys {
				s = binary.AppendUvarint(s, uint64(len(k)))
				s = append(s, k...)
				s = binary.AppendUvarint(s, 1)
				s = append(s, 'v')
			}
			s = append(s, 0)
			s = binary.BigEndian.AppendUint32(s, crc32.Checksum(s, crcTable))
			if err := f.Restore(io.NopCloser(bytes.NewReader(s))); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Restore = %v, want ErrCorrupt", err)
			}
			if after := dump(t, f); !reflect.DeepEqual(after, before) {
				t.Fatalf("a refused restore changed the state: %d keys, %d before", len(after), len(before))
			}
			if _, err := os.Stat(f.dir + ".restore" + tablesSuffix); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the refused restore's tables are left: %v", err)
			}
		})
	}
}

// TestOpenRemovesWhatAnInterruptedRestoreLeft: a crash while a snapshot's
// tables were written leaves them beside the state; the next Open
// removes them with the half-built state.
func TestOpenRemovesWhatAnInterruptedRestoreLeft(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	f, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	fillFSM(t, f, "ns", 2)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	tables := dir + ".restore" + tablesSuffix
	for _, d := range []string{dir + ".restore", tables} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "000000.sst"), []byte("half a table"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, d := range []string{dir + ".restore", tables} {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s is left after Open: %v", d, err)
		}
	}
	if f.AppliedIndex() != 2 {
		t.Fatalf("applied index = %d, want 2", f.AppliedIndex())
	}
}

// TestACrashAtAnyStepOfARestoreLeavesTheOldStateOrTheNewWhole: Restore
// builds the new state beside the current one (state.restore), then
// renames the current one aside (state.old), the new one into place, and
// removes the old one. A crash after any of these steps leaves a layout
// the next Open turns into the old state or the new one, whole, with its
// own applied index, and nothing beside it.
func TestACrashAtAnyStepOfARestoreLeavesTheOldStateOrTheNewWhole(t *testing.T) {
	src := openFSM(t)
	fillFSM(t, src, "new", 40)
	stream := streamOf(t, src)
	want := dump(t, src)

	for _, step := range []struct {
		name  string
		crash func(t *testing.T, dir string) // from the state built beside dir
		isNew bool
	}{
		{"once the new state is built", func(t *testing.T, dir string) {}, false},
		{"once the old state is renamed aside", func(t *testing.T, dir string) {
			rename(t, dir, replacedDir(dir))
		}, false},
		{"once the new state is renamed into place", func(t *testing.T, dir string) {
			rename(t, dir, replacedDir(dir))
			rename(t, restoreDir(dir), dir)
		}, true},
		{"while the old state is removed", func(t *testing.T, dir string) {
			rename(t, dir, replacedDir(dir))
			rename(t, restoreDir(dir), dir)
			ents, err := os.ReadDir(replacedDir(dir))
			if err != nil || len(ents) < 2 {
				t.Fatalf("the old state holds %d files: %v", len(ents), err)
			}
			if err := os.Remove(filepath.Join(replacedDir(dir), ents[0].Name())); err != nil {
				t.Fatal(err)
			}
		}, true},
	} {
		t.Run(step.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			f, err := Open(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			fillFSM(t, f, "old", 3)
			old := dump(t, f)
			// The new state, built beside the current one as Restore (or
			// StageSnapshot) builds it.
			if err := f.StageSnapshot(bytes.NewReader(stream)); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			step.crash(t, dir)

			f, err = Open(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			wantState, wantApplied := old, uint64(3)
			if step.isNew {
				wantState, wantApplied = want, src.AppliedIndex()
			}
			if got := dump(t, f); !reflect.DeepEqual(got, wantState) {
				t.Fatalf("after the crash: %d keys, want %d (the new state: %v)", len(got), len(wantState), step.isNew)
			}
			if f.AppliedIndex() != wantApplied {
				t.Fatalf("applied index %d, want %d", f.AppliedIndex(), wantApplied)
			}
			for _, p := range RestoreLeftovers(dir) {
				if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("%s is left after Open: %v", p, err)
				}
			}
		})
	}
}

func rename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}
