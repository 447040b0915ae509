package fsm

import (
	"context"

	"github.com/cockroachdb/pebble/v2"
)

// Counts is the bookkeeping a replica holds, counted in its state: what
// must stay bounded under any sustained load.
type Counts struct {
	// Sessions and SessionLanes are the open client sessions and their
	// lanes (expired ones not yet deleted included).
	Sessions     uint64
	SessionLanes uint64
	// EndedSessions are the records of ended sessions kept to refuse a
	// late open of them (session.go); TypeExpireSessions sweeps them
	// after their retention.
	EndedSessions uint64
	// TTLPending is the number of records in the expiry index: one per
	// entry with a TTL not yet deleted by expiry (a counter add or list
	// append with a TTL replaces the entry's record), plus, until their
	// own time, those of entries deleted or put again since.
	TTLPending uint64
	// StateKeys and StateBytes are the keyed state's entries and their
	// bytes (keys plus values, as stored).
	StateKeys  uint64
	StateBytes uint64
	// LegacyRetryRecords are per-commit retry records of commits written
	// before client sessions; expiry deletes them after DedupWindow.
	LegacyRetryRecords uint64
	// WindowNamespaces are the defined window namespaces; OpenWindows
	// their open windows and PendingEmissions their unacknowledged
	// emissions, summed.
	WindowNamespaces uint64
	OpenWindows      uint64
	PendingEmissions uint64
}

// Counts counts the bookkeeping and the keyed state. It reads every key it
// counts, so it costs a scan of the state: an operator's call, not one for
// a hot path.
func (f *FSM) Counts() (Counts, error) { return f.CountsContext(context.Background()) }

// CountsContext is Counts that stops, with ctx's cause, when ctx ends: a
// scan of a large state takes seconds, and nobody may be waiting for it
// any more.
func (f *FSM) CountsContext(ctx context.Context) (Counts, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return Counts{}, ErrClosed
	}
	snap := f.db.NewSnapshot()
	defer snap.Close()
	var c Counts
	for _, r := range []struct {
		prefix byte
		keys   *uint64
		bytes  *uint64
	}{
		{prefixSession, &c.Sessions, nil},
		{prefixLane, &c.SessionLanes, nil},
		{prefixEndedSession, &c.EndedSessions, nil},
		{prefixExpiry, &c.TTLPending, nil},
		{prefixState, &c.StateKeys, &c.StateBytes},
		{prefixDedup, &c.LegacyRetryRecords, nil},
	} {
		it, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{r.prefix}, UpperBound: []byte{r.prefix + 1}})
		if err != nil {
			return Counts{}, err
		}
		// NextPrefix steps over the older versions of a key (a session
		// record, a hot counter) still in the memtable; Next visits each.
		for ok := it.First(); ok; ok = it.NextPrefix() {
			*r.keys++
			if r.bytes != nil {
				*r.bytes += uint64(len(it.Key()) + len(it.Value()))
			}
			if *r.keys%4096 == 0 && ctx.Err() != nil {
				it.Close()
				return Counts{}, context.Cause(ctx)
			}
		}
		if err := it.Close(); err != nil {
			return Counts{}, err
		}
	}
	names, err := windowNames(snap)
	if err != nil {
		return Counts{}, err
	}
	for _, ns := range names {
		_, m, _, err := readWindowNS(snap, ns)
		if err != nil {
			return Counts{}, err
		}
		c.WindowNamespaces++
		c.OpenWindows += uint64(max(m.OpenWindows, 0))
		c.PendingEmissions += uint64(max(m.Pending, 0))
	}
	return c, nil
}
