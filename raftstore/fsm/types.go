package fsm

import (
	"time"

	"github.com/statedhq/stated/raftstore/command"
)

// Kind is the kind of state stored under a key. The values match
// stated.v1's Kind; one key may hold state of several kinds at once.
type Kind uint8

const (
	KindAny     Kind = 0
	KindValue   Kind = 1
	KindMap     Kind = 2
	KindList    Kind = 3
	KindCounter Kind = 4
)

func (k Kind) String() string {
	switch k {
	case KindValue:
		return "value"
	case KindMap:
		return "map"
	case KindList:
		return "list"
	case KindCounter:
		return "counter"
	}
	return "any"
}

// Entry is one stored item as a read returns it.
type Entry struct {
	Kind Kind
	Key  []byte
	// SubKey is a map entry's sub-key, or a list element's 8-byte
	// big-endian position.
	SubKey  []byte
	Value   []byte
	Counter int64
	// ExpiresAt is the Unix nanosecond expiry time, zero for never.
	ExpiresAt int64
}

// ScanQuery selects the entries a Scan visits, in key order.
type ScanQuery struct {
	Namespace string
	// Kind KindAny visits every entry of the namespace whose key is in
	// range; KindValue or KindCounter only entries of that kind; KindMap or
	// KindList the entries of the one map or list at Key, with Prefix,
	// Start and End bounding sub-keys instead of keys.
	Kind   Kind
	Key    []byte
	Prefix []byte
	Start  []byte // inclusive; nil is open
	End    []byte // exclusive; nil is open
	Limit  int    // zero is no limit
}

// Result is what Apply returns for each log entry. Err is a *RejectError
// when the command was refused as a whole and nothing of it applied.
type Result struct {
	Index uint64
	Err   error
	// Duplicate is set when the commit's (client id, sequence) was applied
	// before; Index is then the index of that first application and
	// nothing was applied again.
	Duplicate bool
	// Claimed is set for a TypeClaim command: each partition's new epoch
	// and stored offset.
	Claimed []ClaimedPartition
	// Checkpoint is set for a TypeCheckpoint command.
	Checkpoint *CheckpointResult
	// Session is set for a TypeOpenSession command.
	Session *SessionOpened
	// Adds is the status of each of a commit's window adds, in order.
	Adds []command.AddStatus
	// Emissions are the emissions the entry wrote to window outboxes (a
	// commit's updates, closed windows and fired timers; a tick's), in the
	// order the entry wrote them (per namespace, by id).
	Emissions []command.Emission
	// WindowsCreated is set when a TypeDefineWindows created its
	// namespace, and false when the namespace existed with the same spec.
	WindowsCreated bool
	// Batch is set for a TypeCommitBatch command: the result of each of
	// its commits, in order, each as a TypeCommit entry's would be (its
	// Index is the batch entry's, or a duplicate's first application's).
	Batch []*Result
}

// DedupWindow is how long the state machine remembers the (client id,
// sequence) of a commit of format version 2 or older, written before client
// sessions existed, to recognise its retry in an old log.
const DedupWindow = time.Hour
