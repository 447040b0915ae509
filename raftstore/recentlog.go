package raftstore

import (
	"sync"

	"github.com/hashicorp/raft"
)

// recentLog keeps the newest entries this node stored in its Raft log in
// memory, and answers GetLog for them without reading the log store.
// Raft reads an entry back soon after storing it: the leader to send it
// to each follower, a follower to apply it once the leader says it is
// committed. From raft-wal each read costs a copy out of the segment and
// a decode; under three nodes with 100-mutation commits those reads were
// 3.7% of the leader's CPU and 2.8% of a follower's (BENCHMARKS.md).
//
// It holds one contiguous run of indexes [lo, hi], at most
// recentLogEntries of them and recentLogBytes of their data; past either
// bound the oldest go first. The entries are the ones Raft handed to
// StoreLogs, shared, not copied (hashicorp/raft's own LogCache keeps
// them the same way): nothing may write into them afterwards. Raft does
// not; the leader's state machine is handed the same entries and only
// reads them (fsm's model tests check that Apply leaves an entry's bytes
// as they were), and the daemon encodes each proposal into a buffer of
// its own. A deletion of any of them from the store removes them here
// first, so no entry the store no longer has is answered from memory:
// Raft relies on ErrLogNotFound below the log's first index to send a
// lagging follower a snapshot (walStore.GetLog).
type recentLog struct {
	logStore

	mu     sync.RWMutex
	ring   []*raft.Log // an entry at ring[index % len(ring)]
	lo, hi uint64      // the run held; empty when hi < lo
	bytes  int
	max    int
}

const (
	// recentLogEntries bounds the entries recentLog holds; a power of
	// two. Raft's leader sends a follower at most MaxAppendEntries (64)
	// per call.
	recentLogEntries = 1024
	// recentLogBytes bounds their data. A larger bound made replicas
	// slower, not faster: a 64 MiB cache cost three nodes 15% of their
	// 100-mutation commits (BENCHMARKS.md).
	recentLogBytes = 8 << 20
)

func newRecentLog(s logStore) *recentLog {
	return &recentLog{logStore: s, ring: make([]*raft.Log, recentLogEntries), lo: 1, max: recentLogBytes}
}

// entrySize is what an entry holds in memory beyond its fixed fields.
func entrySize(l *raft.Log) int { return len(l.Data) + len(l.Extensions) + 64 }

// IsMonotonic reports what the store does (raft.MonotonicLogStore).
func (r *recentLog) IsMonotonic() bool {
	m, ok := r.logStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

// GetLog answers from memory when it holds index, and from the store
// otherwise.
func (r *recentLog) GetLog(index uint64, l *raft.Log) error {
	r.mu.RLock()
	if r.lo <= index && index <= r.hi {
		*l = *r.ring[index%uint64(len(r.ring))]
		r.mu.RUnlock()
		return nil
	}
	r.mu.RUnlock()
	return r.logStore.GetLog(index, l)
}

// StoreLog stores one entry (raft.LogStore).
func (r *recentLog) StoreLog(l *raft.Log) error { return r.StoreLogs([]*raft.Log{l}) }

// StoreLogs stores logs, then holds them: once the store has them, so
// that memory never answers for an entry the store failed to take.
func (r *recentLog) StoreLogs(logs []*raft.Log) error {
	if err := r.logStore.StoreLogs(logs); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range logs {
		r.add(l)
	}
	return nil
}

func (r *recentLog) add(l *raft.Log) {
	if r.hi >= r.lo && l.Index != r.hi+1 {
		// Not the next one (Raft stored over a truncated tail, or after
		// a snapshot): start a new run.
		r.dropTo(r.hi)
	}
	size := entrySize(l)
	if size > r.max {
		r.dropTo(r.hi)
		r.lo, r.hi = l.Index+1, l.Index
		return
	}
	if r.hi < r.lo {
		r.lo, r.hi = l.Index, l.Index-1
	}
	if r.hi-r.lo+1 == uint64(len(r.ring)) {
		r.dropTo(r.lo)
	}
	r.ring[l.Index%uint64(len(r.ring))] = l
	r.hi = l.Index
	r.bytes += size
	for r.bytes > r.max {
		r.dropTo(r.lo)
	}
}

// dropTo lets go of the held entries from lo up to and including index.
func (r *recentLog) dropTo(index uint64) {
	for ; r.lo <= index && r.lo <= r.hi; r.lo++ {
		slot := &r.ring[r.lo%uint64(len(r.ring))]
		r.bytes -= entrySize(*slot)
		*slot = nil
	}
}

// dropFrom lets go of the held entries from index up to hi.
func (r *recentLog) dropFrom(index uint64) {
	for ; r.hi >= index && r.hi >= r.lo; r.hi-- {
		slot := &r.ring[r.hi%uint64(len(r.ring))]
		r.bytes -= entrySize(*slot)
		*slot = nil
	}
}

// DeleteRange lets go of the held entries in [min, max], then deletes
// them from the store.
func (r *recentLog) DeleteRange(min, max uint64) error {
	r.mu.Lock()
	switch {
	case r.hi < r.lo || max < r.lo || min > r.hi:
	case min <= r.lo:
		r.dropTo(max)
	case max >= r.hi:
		r.dropFrom(min)
	default:
		// A hole in the middle: Raft deletes only a head or a tail.
		r.dropTo(r.hi)
	}
	r.mu.Unlock()
	return r.logStore.DeleteRange(min, max)
}

var (
	_ logStore               = (*recentLog)(nil)
	_ raft.MonotonicLogStore = (*recentLog)(nil)
)
