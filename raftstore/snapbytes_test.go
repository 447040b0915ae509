package raftstore

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/fsm"
)

// sizeTriggerConfig is a store whose only snapshot trigger is the size
// one: Raft's entry count never fires, and the size check runs every
// 20 ms. TrailingLogs is small so that a snapshot visibly compacts.
func sizeTriggerConfig(logStore, dir string, snapshotBytes int64) Config {
	cfg := storeConfig(logStore, dir)
	cfg.SnapshotBytes = snapshotBytes
	cfg.SnapshotThreshold = 1 << 40
	cfg.SnapshotInterval = 20 * time.Millisecond
	cfg.TrailingLogs = 2
	return cfg
}

// putBig commits one put of n bytes under key k and returns the size of
// the entry's command.
func putBig(t *testing.T, s *Store, k string, n int, fill byte) {
	t.Helper()
	_, _, err := s.Commit(context.Background(), &command.Commit{Mutations: []command.Mutation{
		{Op: command.OpPut, Namespace: "big", Key: []byte(k), Value: bytes.Repeat([]byte{fill}, n)},
	}})
	if err != nil {
		t.Fatal(err)
	}
}

func firstIndex(t *testing.T, s *Store) uint64 {
	t.Helper()
	i, err := s.log.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// waitFor polls cond every 10 ms until it holds or 20 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSizeTriggerSnapshotsOnceTheLogHoldsSnapshotBytesAndNotBefore(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		s := openStore(t, sizeTriggerConfig(logStore, t.TempDir(), 1<<20))
		defer s.Close()

		// A few KB of commits: below the threshold, no snapshot. The
		// check is called here directly so that "not yet" is decided,
		// not waited for.
		for i := range 8 {
			putBig(t, s, fmt.Sprintf("small-%d", i), 512, 's')
		}
		if err := s.snapshotIfDue(); err != nil {
			t.Fatal(err)
		}
		if n := s.SnapshotCounts().Persisted; n != 0 {
			t.Fatalf("%d snapshots after a few KB of commits, want none", n)
		}
		st := s.SnapshotBytesStatus()
		if st.Threshold != 1<<20 || st.SinceSnapshot < 8*512 || st.SinceSnapshot >= 1<<20 {
			t.Fatalf("status after a few KB = %+v, want threshold 1 MiB and at least 4 KiB since the snapshot", st)
		}
		first := firstIndex(t, s)

		// 1.25 MiB more in 64 KiB commits crosses it: the trigger
		// snapshots and Raft compacts the log.
		for i := range 20 {
			putBig(t, s, fmt.Sprintf("big-%d", i), 64<<10, 'b')
		}
		waitFor(t, "a size-triggered snapshot", func() bool { return s.SnapshotCounts().Persisted >= 1 })
		waitFor(t, "the log compacted", func() bool { return firstIndex(t, s) > first })
		st = s.SnapshotBytesStatus()
		if st.SinceSnapshot >= 1<<20 {
			t.Fatalf("status after the snapshot = %+v, want the count since it below 1 MiB", st)
		}
	})
}

func TestSizeTriggerZeroSnapshotsByEntriesOnly(t *testing.T) {
	s := openStore(t, sizeTriggerConfig(LogStoreWAL, t.TempDir(), 0))
	defer s.Close()
	if s.trigger.done != nil {
		t.Fatal("the size trigger runs with SnapshotBytes 0")
	}
	for i := range 32 {
		putBig(t, s, fmt.Sprintf("k-%d", i), 64<<10, 'a')
	}
	if err := s.snapshotIfDue(); err != nil {
		t.Fatal(err)
	}
	if n := s.SnapshotCounts().Persisted; n != 0 {
		t.Fatalf("%d snapshots with the size trigger off, want none", n)
	}
	if st := s.SnapshotBytesStatus(); st.Threshold != 0 || st.SinceSnapshot < 2<<20 {
		t.Fatalf("status = %+v, want threshold 0 and 2 MiB counted", st)
	}
}

func TestRestartAfterASizeTriggeredSnapshotReplaysOnlyTheEntriesAfterItAndLosesNothing(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		cfg := sizeTriggerConfig(logStore, t.TempDir(), 1<<20)
		s := openStore(t, cfg)
		const n = 40 // 2.5 MiB in 64 KiB commits
		for i := range n {
			putBig(t, s, fmt.Sprintf("k-%d", i), 64<<10, byte('a'+i%26))
		}
		// Until the trigger has caught up: every snapshot it will take of
		// these has started (the count restarts when one does).
		waitFor(t, "size-triggered snapshots of the whole log", func() bool {
			st := s.SnapshotBytesStatus()
			return s.SnapshotCounts().Persisted >= 1 && st.SinceSnapshot < st.Threshold
		})
		// A few more after it, then a close.
		for i := range 3 {
			putBig(t, s, fmt.Sprintf("after-%d", i), 1000, 'z')
		}
		since := s.SnapshotBytesStatus().SinceSnapshot
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}

		s = openStore(t, cfg)
		defer s.Close()
		// WaitReady's barrier applied the log: what was replayed is what
		// followed the newest snapshot, not the 2.5 MiB (plus the small
		// entry the new leader may record its addresses with).
		if got := s.SnapshotBytesStatus().SinceSnapshot; got < since || got > since+4096 {
			t.Fatalf("replayed %d bytes of entries after the restart, want the %d after the newest snapshot", got, since)
		}
		for i := range n {
			e, ok, err := s.Get("big", []byte(fmt.Sprintf("k-%d", i)), fsm.KindValue, nil)
			if err != nil || !ok || len(e.Value) != 64<<10 || e.Value[0] != byte('a'+i%26) {
				t.Fatalf("k-%d after restart: found %v, %d bytes, %v", i, ok, len(e.Value), err)
			}
		}
		for i := range 3 {
			if _, ok, err := s.Get("big", []byte(fmt.Sprintf("after-%d", i)), fsm.KindValue, nil); err != nil || !ok {
				t.Fatalf("after-%d after restart: found %v, %v", i, ok, err)
			}
		}
	})
}

func TestCloseStartsNoSizeTriggeredSnapshot(t *testing.T) {
	s := openStore(t, sizeTriggerConfig(LogStoreWAL, t.TempDir(), 1<<20))
	// Over the threshold, then closed before the trigger's next look.
	s.stopSnapshotTrigger()
	for i := range 20 {
		putBig(t, s, fmt.Sprintf("k-%d", i), 64<<10, 'a')
	}
	if err := s.snapshotIfDue(); err != nil {
		t.Fatal(err)
	}
	if n := s.SnapshotCounts().Persisted; n != 0 {
		t.Fatalf("%d snapshots once Close began, want none", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSizeTriggeredSnapshotKeepsAboutTheThresholdOfTrailingLogNotTrailingLogsEntries(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		cfg := sizeTriggerConfig(logStore, t.TempDir(), 1<<20)
		cfg.TrailingLogs = 10240 // the default: 10240 entries of 64 KiB would be 640 MiB
		s := openStore(t, cfg)
		defer s.Close()
		first := firstIndex(t, s)
		for i := range 40 {
			putBig(t, s, fmt.Sprintf("k-%d", i), 64<<10, 'a')
		}
		waitFor(t, "a size-triggered snapshot", func() bool { return s.SnapshotCounts().Persisted >= 1 })
		waitFor(t, "the log compacted", func() bool { return firstIndex(t, s) > first })
		// About 1 MiB of trailing 64 KiB entries: 16, and a few non-command ones.
		last, err := s.log.LastIndex()
		if err != nil {
			t.Fatal(err)
		}
		if kept := last - firstIndex(t, s) + 1; kept > 40 {
			t.Fatalf("the log keeps %d entries after size-triggered snapshots, want about 16", kept)
		}
		// Lowered for the size-triggered snapshots only.
		waitFor(t, "TrailingLogs back at 10240 once the trigger is idle", func() bool {
			st := s.SnapshotBytesStatus()
			return st.SinceSnapshot < st.Threshold && s.raft.ReloadableConfig().TrailingLogs == 10240
		})
	})
}

func TestTrailingEntriesCapsTrailingLogsAtTheThresholdsBytes(t *testing.T) {
	for _, tc := range []struct {
		st   SnapshotBytesStatus
		want uint64
	}{
		{SnapshotBytesStatus{SinceSnapshot: 256 << 20, Entries: 256, Threshold: 256 << 20}, 256},       // 1 MiB entries
		{SnapshotBytesStatus{SinceSnapshot: 256 << 20, Entries: 1 << 20, Threshold: 256 << 20}, 10240}, // 256-byte entries: TrailingLogs
		{SnapshotBytesStatus{SinceSnapshot: 8 << 30, Entries: 2, Threshold: 256 << 20}, 1},             // entries larger than the threshold
		{SnapshotBytesStatus{SinceSnapshot: 0, Entries: 0, Threshold: 256 << 20}, 10240},               // nothing counted
		{SnapshotBytesStatus{SinceSnapshot: 1 << 30, Entries: 1024, Threshold: 4 << 30}, 4096},         // a state of 4 GiB on disk
	} {
		if got := trailingEntries(tc.st, tc.st.Threshold, 10240); got != tc.want {
			t.Errorf("trailingEntries(%+v, %d, 10240) = %d, want %d", tc.st, tc.st.Threshold, got, tc.want)
		}
	}
}
