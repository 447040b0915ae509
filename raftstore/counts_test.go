package raftstore

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// TestCountsCallersShareOneScan: calls of Counts made while a scan runs
// wait for that scan instead of starting their own, a caller whose
// context ends stops waiting (with its context's error) while the scan
// goes on, and the scan's counts reach those still waiting. Before, every
// call scanned the whole state under the state machine's read lock with
// no way to stop, and a client retrying on its attempt timeout stacked up
// scans of a large state without end.
func TestCountsCallersShareOneScan(t *testing.T) {
	s := openStore(t, testConfig(t.TempDir()))
	defer s.Close()
	for range 3 {
		addOne(t, s)
	}
	var scans atomic.Int32
	release := make(chan struct{})
	countsScanHook = func() {
		scans.Add(1)
		<-release
	}
	defer func() { countsScanHook = func() {} }()

	type result struct {
		keys uint64
		err  error
	}
	first := make(chan result, 1)
	go func() {
		c, err := s.Counts(context.Background())
		first <- result{c.StateKeys, err}
	}()
	for deadline := time.Now().Add(10 * time.Second); scans.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first call started no scan")
		}
	}
	// Callers that give up while the scan is held: each returns its own
	// context's error, and none starts a scan of its own.
	for i := range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := s.Counts(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("caller %d, its context ended: err = %v, want DeadlineExceeded", i, err)
		}
	}
	second := make(chan result, 1)
	go func() {
		c, err := s.Counts(context.Background())
		second <- result{c.StateKeys, err}
	}()
	// Release the scan only once the second waiter joined it: 7 calls.
	for deadline := time.Now().Add(10 * time.Second); callers(s) < 7; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls joined the running scan, want 7", callers(s))
		}
	}
	close(release)
	for i, ch := range []chan result{first, second} {
		r := <-ch
		if r.err != nil || r.keys != 1 {
			t.Fatalf("waiting caller %d: %d state keys, %v; want 1 (the counter), nil", i, r.keys, r.err)
		}
	}
	if n := scans.Load(); n != 1 {
		t.Fatalf("%d scans for 7 calls made while one ran, want 1", n)
	}
	// Once it ended, the next call scans again: counts are never older
	// than the call.
	addOne(t, s)
	if _, err := s.Counts(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := scans.Load(); n != 2 {
		t.Fatalf("%d scans after a call made once the first ended, want 2", n)
	}
}

// callers is how many calls joined the running scan of Counts, 0 when
// none runs.
func callers(s *Store) int {
	s.countsMu.Lock()
	defer s.countsMu.Unlock()
	if s.countsRun == nil {
		return 0
	}
	return s.countsRun.callers
}
