package fsm

import (
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// LogBytes is what the state machine knows of the size of the Raft log
// since the newest snapshot, for a trigger that snapshots by bytes rather
// than by entries.
type LogBytes struct {
	// SinceSnapshot is the bytes of the command entries (their Data)
	// Raft handed to the state machine since the newest snapshot it took
	// or restored, or since Open when there is none since: on a restart,
	// Raft hands over again every entry after its newest snapshot (the
	// state machine skips those it applied), so these are counted too.
	SinceSnapshot uint64
	// Entries is how many command entries SinceSnapshot counts.
	Entries uint64
	// Applied is the bytes of the command entries Raft handed to the
	// state machine since Open, snapshots or not: the difference of two
	// readings is what was applied between them.
	Applied uint64
}

// logBytes counts the bytes of the log entries the state machine sees.
// The apply loop adds to applied; Snapshot, called by Raft on the same
// loop at the snapshot's index, moves the mark to it, so that the count
// since the mark is exact.
type logBytes struct {
	applied, entries atomic.Uint64 // since Open
	// mark and markEntries are applied and entries at the newest snapshot
	// started and not failed, or restored.
	mark, markEntries atomic.Uint64
}

// count adds the command entries of logs.
func (c *logBytes) count(logs []*raft.Log) {
	var n, e uint64
	for _, l := range logs {
		if l.Type == raft.LogCommand {
			n += uint64(len(l.Data))
			e++
		}
	}
	c.applied.Add(n)
	c.entries.Add(e)
}

// markFrom is where the count of a snapshot starts, and the mark it
// replaced, to put back if the snapshot fails.
type markFrom struct{ bytes, entries, prevBytes, prevEntries uint64 }

// markSnapshot moves the mark to now; on the apply loop.
func (c *logBytes) markSnapshot() markFrom {
	m := markFrom{bytes: c.applied.Load(), entries: c.entries.Load()}
	m.prevBytes = c.mark.Swap(m.bytes)
	m.prevEntries = c.markEntries.Swap(m.entries)
	return m
}

// unmark puts the mark back where it was before m, unless a newer
// snapshot moved it since: the snapshot of m was not persisted, and the
// log was not compacted.
func (c *logBytes) unmark(m markFrom) {
	if c.mark.CompareAndSwap(m.bytes, m.prevBytes) {
		c.markEntries.Store(m.prevEntries)
	}
}

// LogBytes returns the counts; cheap (a few atomic loads).
func (f *FSM) LogBytes() LogBytes {
	c := &f.logBytes
	mark, markEntries := c.mark.Load(), c.markEntries.Load()
	applied, entries := c.applied.Load(), c.entries.Load()
	return LogBytes{SinceSnapshot: applied - min(mark, applied), Entries: entries - min(markEntries, entries), Applied: applied}
}
