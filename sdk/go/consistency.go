package stated

import (
	"strconv"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// Consistency says how fresh a read must be. The values mirror
// statedv1.Consistency.
type Consistency int

const (
	// ConsistencyDefault uses the Client's default (WithDefaultConsistency),
	// and if that is also ConsistencyDefault, read-your-writes:
	// ConsistencySession once the Client has committed, ConsistencyLocal
	// before.
	ConsistencyDefault Consistency = iota
	// ConsistencyLocal reads the daemon's state as it is, without waiting.
	// On a follower it may miss recent commits, even the Client's own.
	ConsistencyLocal
	// ConsistencySession waits until the daemon has applied the Client's
	// last commit (LastIndex), so the read sees the Client's own writes.
	ConsistencySession
	// ConsistencyLinearizable has the leader confirm its leadership and
	// apply everything committed before reading: the read sees every commit
	// acknowledged to any client before it started. It is the slowest.
	ConsistencyLinearizable
)

// String returns "default", "local", "session" or "linearizable".
func (c Consistency) String() string {
	switch c {
	case ConsistencyDefault:
		return "default"
	case ConsistencyLocal:
		return "local"
	case ConsistencySession:
		return "session"
	case ConsistencyLinearizable:
		return "linearizable"
	}
	return "Consistency(" + strconv.Itoa(int(c)) + ")"
}

// ReadOption adjusts one read.
type ReadOption func(*readOptions)

type readOptions struct {
	consistency Consistency
	minIndex    uint64
}

// WithConsistency sets the consistency of one read.
func WithConsistency(c Consistency) ReadOption {
	return func(o *readOptions) { o.consistency = c }
}

// WithMinIndex makes one read wait until the daemon serving it has applied
// at least Raft index index: read-your-writes across clients. A commit's
// index (CommitResult.Index) handed from the Client that made it to
// another Client, on any replica, lets that one read the commit with
// WithMinIndex(index).
//
// It raises the floor of the read's consistency and never lowers it:
//
//   - with ConsistencyDefault or ConsistencySession the read waits for the
//     higher of index and the Client's own LastIndex;
//   - with ConsistencyLocal it waits for index only (not for LastIndex);
//   - with ConsistencyLinearizable the leader waits for the higher of index
//     and its commit index.
//
// Given more than once, the highest index counts; 0 adds nothing. The wait
// is bounded by the read's ctx, and by the attempt timeout per attempt
// (see "Retries"): an index the cluster has not reached yet ends in
// context.DeadlineExceeded when ctx does.
func WithMinIndex(index uint64) ReadOption {
	return func(o *readOptions) { o.minIndex = max(o.minIndex, index) }
}

// readOptions resolves opts against the Client's default into the wire
// form. It reads LastIndex when called, so call it right before sending.
func (c *Client) readOptions(opts []ReadOption) *statedv1.ReadOptions {
	var o readOptions
	for _, opt := range opts {
		opt(&o)
	}
	cons := o.consistency
	if cons == ConsistencyDefault {
		cons = c.consistency
	}
	session := func(index uint64) *statedv1.ReadOptions {
		return &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_SESSION, MinIndex: index}
	}
	last := c.LastIndex()
	switch cons {
	case ConsistencyDefault:
		if idx := max(last, o.minIndex); idx > 0 {
			return session(idx)
		}
		return &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_LOCAL}
	case ConsistencySession:
		return session(max(last, o.minIndex))
	case ConsistencyLocal:
		// The daemon does not wait on a local read, so an explicit index
		// makes it a session read of that index alone.
		if o.minIndex > 0 {
			return session(o.minIndex)
		}
	}
	// Local, Linearizable, and values this SDK does not know, which the
	// daemon judges.
	return &statedv1.ReadOptions{Consistency: statedv1.Consistency(cons), MinIndex: o.minIndex}
}
