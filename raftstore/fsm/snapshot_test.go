package fsm

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// blockingSink is a snapshot sink whose first Write blocks until release
// is closed, or until a slow disk would have caught up.
type blockingSink struct {
	bytes.Buffer
	release   <-chan struct{}
	slow      time.Duration
	writing   chan struct{} // closed at the first Write
	once      sync.Once
	cancelled bool
}

func (s *blockingSink) Write(p []byte) (int, error) {
	s.once.Do(func() {
		close(s.writing)
		select {
		case <-s.release:
		case <-time.After(s.slow):
		}
	})
	return s.Buffer.Write(p)
}
func (s *blockingSink) ID() string    { return "blocking" }
func (s *blockingSink) Cancel() error { s.cancelled = true; return nil }
func (s *blockingSink) Close() error  { return nil }

// fillFSM applies n commits of one 64 KiB value each, enough that a
// snapshot's Persist writes to its sink while it still iterates.
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

func TestRestoreDuringItsOwnSnapshotsPersistLeavesAWorkingStateMachine(t *testing.T) {
	// Raft persists a follower's own snapshot on one goroutine while the
	// leader's InstallSnapshot restores on another.
	f, leader := openFSM(t), openFSM(t)
	fillFSM(t, f, "mine", 40)
	fillFSM(t, leader, "leader", 50)
	incoming := snapshotBytes(t, leader)

	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	restored := make(chan struct{})
	sink := &blockingSink{release: restored, slow: time.Second, writing: make(chan struct{})}
	persisted := make(chan error, 1)
	go func() { persisted <- snap.Persist(sink) }()
	<-sink.writing // Persist is mid-stream, its iterator open

	restoreErr := make(chan error, 1)
	go func() {
		restoreErr <- f.Restore(io.NopCloser(bytes.NewReader(incoming)))
		close(restored)
	}()
	if err := <-restoreErr; err != nil {
		t.Fatalf("Restore during a Persist: %v", err)
	}
	perr := <-persisted
	snap.Release()

	if f.AppliedIndex() != 50 {
		t.Fatalf("applied index after the restore = %d, want the leader's 50", f.AppliedIndex())
	}
	res := applyNoPanic(t, f, 51, commitCmd(1, []command.Mutation{{Op: command.OpPut, Namespace: "after", Key: []byte("k"), Value: []byte("v")}}, nil))
	if res.Err != nil {
		t.Fatalf("Apply after the restore: %v", res.Err)
	}
	if _, ok, err := f.Get("after", []byte("k"), KindValue, nil, 0); err != nil || !ok {
		t.Fatalf("the entry applied after the restore is not there: ok=%v err=%v", ok, err)
	}
	if _, ok, _ := f.Get("mine", []byte("k1"), KindValue, nil, 0); ok {
		t.Fatal("the replaced state is still visible after the restore")
	}
	// The snapshot either was persisted whole, as the state it was taken
	// of, or failed and was cancelled; never a torn stream.
	if perr != nil {
		if !sink.cancelled {
			t.Fatalf("Persist failed (%v) without cancelling its sink", perr)
		}
		return
	}
	check := openFSM(t)
	if err := check.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatalf("the snapshot persisted during the restore does not restore: %v", err)
	}
	if check.AppliedIndex() != 40 {
		t.Fatalf("the persisted snapshot holds applied index %d, want 40", check.AppliedIndex())
	}
}

func TestRestoreDetachesASnapshotNotYetPersisted(t *testing.T) {
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
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("Persist of a snapshot of the replaced state panicked: %v", r)
			}
		}()
		if err := snap.Persist(&sink); err == nil {
			t.Fatal("Persist of a snapshot of the replaced state succeeded")
		}
	}()
	if !sink.cancelled {
		t.Fatal("the sink of a detached snapshot was not cancelled")
	}
	snap.Release()
	if res := applyNoPanic(t, f, 6, commitCmd(1, []command.Mutation{{Op: command.OpPut, Namespace: "after", Key: []byte("k"), Value: []byte("v")}}, nil)); res.Err != nil {
		t.Fatalf("Apply after the restore: %v", res.Err)
	}
}

func TestCloseDuringPersistWaitsForIt(t *testing.T) {
	f, err := Open(t.TempDir()+"/state", nil)
	if err != nil {
		t.Fatal(err)
	}
	fillFSM(t, f, "mine", 40)
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	sink := &blockingSink{release: closed, slow: time.Second, writing: make(chan struct{})}
	persisted := make(chan error, 1)
	go func() { persisted <- snap.Persist(sink) }()
	<-sink.writing
	if err := f.Close(); err != nil {
		t.Fatalf("Close during a Persist: %v", err)
	}
	close(closed)
	if err := <-persisted; err != nil {
		t.Fatalf("Persist that Close waited for: %v", err)
	}
	snap.Release()
	check := openFSM(t)
	if err := check.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil || check.AppliedIndex() != 40 {
		t.Fatalf("the snapshot persisted across Close: applied %d, err %v", check.AppliedIndex(), err)
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
