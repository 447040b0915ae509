package fsm

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/statedhq/stated/internal/smalldisk"
	"github.com/statedhq/stated/raftstore/command"
)

// writeIncompressible applies mb MiB of random values, which stay in the
// memtable and the WAL.
func writeIncompressible(t *testing.T, f *FSM, mb int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	value := make([]byte, 64<<10)
	for i := range mb * 16 {
		for j := range value {
			value[j] = byte(rng.Uint32())
		}
		muts := []command.Mutation{{Op: command.OpPut, Namespace: "s", Key: fmt.Appendf(nil, "k%05d", i), Value: value}}
		if r := apply(t, f, uint64(i+1), commitCmd(1, muts, nil)); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
}

// countingHandler counts the log records whose message holds a string.
type countingHandler struct {
	mu     sync.Mutex
	substr string
	n      int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.substr) {
		h.mu.Lock()
		h.n++
		h.mu.Unlock()
	}
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }
func (h *countingHandler) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// TestAnOpenOntoAFullDiskFailsNamingTheDiskAndLogsLittle: a state whose
// WAL must be flushed when it opens (Pebble flushes the replayed WAL)
// on a disk too full for the table. Pebble retries that flush forever,
// at once, and Open waited for it: a start hung, logging each failure
// thousands of times a second. Open now gives up at the first
// failure that says the disk is full, with an error naming it, and the
// abandoned database retries only every few seconds, logged rate-limited.
func TestAnOpenOntoAFullDiskFailsNamingTheDiskAndLogsLittle(t *testing.T) {
	disk := smalldisk.Mount(t, 32)
	dir := filepath.Join(disk, "state")
	f, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeIncompressible(t, f, 8)
	if err := f.Close(); err != nil { // Close does not flush: the WAL holds it
		t.Fatal(err)
	}
	smalldisk.Fill(t, filepath.Join(disk, "filler"), 512<<10)

	logs := &countingHandler{substr: "background error"}
	type result struct {
		f   *FSM
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		f, err := Open(dir, slog.New(logs))
		done <- result{f, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("Open onto a full disk still waiting after 20 s, %d background errors logged", logs.count())
	}
	if r.err == nil {
		r.f.Close()
		t.Fatal("Open onto a full disk, with a WAL to flush, succeeded")
	}
	if !IsDiskFull(r.err) || !strings.Contains(r.err.Error(), "no space left on device") ||
		!strings.Contains(r.err.Error(), "the data dir's disk is full: free space and start again") ||
		!strings.Contains(r.err.Error(), dir) {
		t.Fatalf("Open onto a full disk: %v; want the state's dir, no space left on device and what to do", r.err)
	}
	t.Logf("Open onto a full disk: %v", r.err)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Open onto a full disk took %v to fail", took)
	}
	// The abandoned database retries its flush every few seconds, not
	// thousands of times a second, and so logs little.
	time.Sleep(time.Second)
	if n := logs.count(); n > 2 {
		t.Errorf("%d background errors logged within a second of the failed open; want at most 2", n)
	}
}

// TestAFlushOntoAFullDiskFailsNamingTheDisk: Pebble retries a failed
// flush forever, so DB.Flush on a full disk never returned, and neither
// did a checkpoint. Flush now fails at the first background error,
// naming it.
func TestAFlushOntoAFullDiskFailsNamingTheDisk(t *testing.T) {
	disk := smalldisk.Mount(t, 32)
	f, err := Open(filepath.Join(disk, "state"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Bounded: Close waits for a flush that may never end.
		closed := make(chan struct{})
		go func() { f.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Error("Close still waiting after 10 s")
		}
	})
	writeIncompressible(t, f, 8)
	// Room for the WAL's rotation, not for the table.
	smalldisk.Fill(t, filepath.Join(disk, "filler"), 512<<10)

	done := make(chan error, 1)
	go func() { done <- f.Flush() }()
	var ferr error
	select {
	case ferr = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Flush onto a full disk still waiting after 20 s")
	}
	if ferr == nil {
		t.Fatal("Flush onto a full disk succeeded")
	}
	if !IsDiskFull(ferr) || !strings.Contains(ferr.Error(), "no space left on device") || !strings.Contains(ferr.Error(), "disk is full") {
		t.Fatalf("Flush onto a full disk: %v; want no space left on device and what to do", ferr)
	}

	t.Logf("Flush onto a full disk: %v", ferr)

	// No second flush while the disk is full: Pebble's retries keep it
	// full to the byte, and the WAL rotation of another flush may then
	// fail to close the WAL, on which Pebble panics (rotateWAL).

	// With space again, Pebble's retries succeed, and so does Flush.
	if err := os.Remove(filepath.Join(disk, "filler")); err != nil {
		t.Fatal(err)
	}
	go func() { done <- f.Flush() }()
	select {
	case ferr = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Flush with space again still waiting after 20 s")
	}
	if ferr != nil {
		t.Fatalf("Flush with space again: %v", ferr)
	}
	if _, ok, err := f.Get("s", []byte("k00000"), KindValue, nil, 0); err != nil || !ok {
		t.Fatalf("get after the flush: %v, %v", ok, err)
	}
}
