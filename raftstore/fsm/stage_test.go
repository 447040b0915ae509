package fsm

import (
	"bytes"
	"errors"
	"io"
	"os"
	"reflect"
	"testing"
)

// streamOf returns f's state as a snapshot stream.
func streamOf(t *testing.T, f *FSM) []byte {
	t.Helper()
	size, rc := openStream(t, f)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil || int64(len(b)) != size {
		t.Fatalf("read the stream: %d bytes, %v; want %d", len(b), err, size)
	}
	return b
}

// noRestoreDirs fails the test if a state being built is left beside f's.
func noRestoreDirs(t *testing.T, f *FSM) {
	t.Helper()
	for _, p := range []string{f.dir + ".restore", f.dir + ".restore" + tablesSuffix} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s is left: %v", p, err)
		}
	}
}

// TestAStagedSnapshotIsSwappedInByTheRestoreOfTheSameStream: staging builds
// the stream's state without touching the current one, and the Restore of
// the same stream swaps the staged state in, whole, without building it
// again.
func TestAStagedSnapshotIsSwappedInByTheRestoreOfTheSameStream(t *testing.T) {
	smallStreamChunks(t)
	defer func(n uint64) { snapshotTableSize = n }(snapshotTableSize)
	snapshotTableSize = 4 << 10 // many tables
	a, b := openFSM(t), openFSM(t)
	fillFSM(t, a, "ns", 300)
	fillFSM(t, b, "other", 3)
	before := dump(t, b)
	stream := streamOf(t, a)

	if err := b.StageSnapshot(bytes.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	if after := dump(t, b); !reflect.DeepEqual(after, before) {
		t.Fatalf("staging changed the current state: %d keys, %d before", len(after), len(before))
	}
	if c := b.SnapshotCounts(); c.Restored != 0 {
		t.Fatalf("staging counted as a restore: %+v", c)
	}

	if err := b.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
		t.Fatal(err)
	}
	if c := b.SnapshotCounts(); c.Restored != 1 || c.Staged != 1 {
		t.Fatalf("after the restore of the staged stream: %+v; want Restored 1, Staged 1", c)
	}
	sameContents(t, a, b)
	if b.AppliedIndex() != a.AppliedIndex() {
		t.Fatalf("applied index %d, want %d", b.AppliedIndex(), a.AppliedIndex())
	}
	noRestoreDirs(t, b)

	// Nothing stays staged: the next restore of the same stream builds it.
	if err := b.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
		t.Fatal(err)
	}
	if c := b.SnapshotCounts(); c.Restored != 2 || c.Staged != 1 {
		t.Fatalf("after a second restore: %+v; want Restored 2, Staged 1", c)
	}
	sameContents(t, a, b)
}

// TestRestoreRefusesAStreamThatIsNotTheStagedOne: a stream that differs
// from the staged one, by one byte or by its length, is refused, the
// state stays as it was, and nothing stays staged.
func TestRestoreRefusesAStreamThatIsNotTheStagedOne(t *testing.T) {
	a, b := openFSM(t), openFSM(t)
	fillFSM(t, a, "ns", 50)
	fillFSM(t, b, "other", 3)
	before := dump(t, b)
	stream := streamOf(t, a)
	changed := bytes.Clone(stream)
	changed[len(changed)/2] ^= 1
	for name, other := range map[string][]byte{
		"one byte changed": changed,
		"one byte more":    append(bytes.Clone(stream), 0),
	} {
		t.Run(name, func(t *testing.T) {
			if err := b.StageSnapshot(bytes.NewReader(stream)); err != nil {
				t.Fatal(err)
			}
			if err := b.Restore(io.NopCloser(bytes.NewReader(other))); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Restore of another stream than the staged one = %v, want ErrCorrupt", err)
			}
			if after := dump(t, b); !reflect.DeepEqual(after, before) {
				t.Fatalf("a refused restore changed the state: %d keys, %d before", len(after), len(before))
			}
			noRestoreDirs(t, b)
			if b.staging.state != nil {
				t.Fatal("the staged state stays staged after a refused restore")
			}
		})
	}
	// The stream itself restores, built as usual.
	if err := b.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
		t.Fatal(err)
	}
	sameContents(t, a, b)
	if c := b.SnapshotCounts(); c.Restored != 1 || c.Staged != 0 {
		t.Fatalf("%+v; want Restored 1, Staged 0", c)
	}
}

// TestStagingAStreamThatIsNotWholeLeavesNothing: a stream cut short, or
// with a bad checksum, is not staged; the state stays as it was, nothing
// is left beside it, and a whole stream then restores as usual.
func TestStagingAStreamThatIsNotWholeLeavesNothing(t *testing.T) {
	a, b := openFSM(t), openFSM(t)
	fillFSM(t, a, "ns", 50)
	fillFSM(t, b, "other", 3)
	before := dump(t, b)
	stream := streamOf(t, a)
	badSum := bytes.Clone(stream)
	badSum[len(badSum)-1] ^= 1
	for name, s := range map[string][]byte{
		"cut short":    stream[:len(stream)/2],
		"bad checksum": badSum,
	} {
		t.Run(name, func(t *testing.T) {
			if err := b.StageSnapshot(bytes.NewReader(s)); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("StageSnapshot = %v, want ErrCorrupt", err)
			}
			noRestoreDirs(t, b)
			if after := dump(t, b); !reflect.DeepEqual(after, before) {
				t.Fatalf("a failed staging changed the state: %d keys, %d before", len(after), len(before))
			}
		})
	}
	if err := b.StageSnapshot(bytes.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	b.DropStaged()
	noRestoreDirs(t, b)
	if err := b.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
		t.Fatal(err)
	}
	sameContents(t, a, b)
	if c := b.SnapshotCounts(); c.Restored != 1 || c.Staged != 0 {
		t.Fatalf("%+v; want Restored 1, Staged 0", c)
	}
}
