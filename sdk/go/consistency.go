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
}

// WithConsistency sets the consistency of one read.
func WithConsistency(c Consistency) ReadOption {
	return func(o *readOptions) { o.consistency = c }
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
	last := c.LastIndex()
	switch cons {
	case ConsistencyDefault:
		if last > 0 {
			return &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_SESSION, MinIndex: last}
		}
		return &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_LOCAL}
	case ConsistencySession:
		return &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_SESSION, MinIndex: last}
	}
	// Local, Linearizable, and values this SDK does not know, which the
	// daemon judges.
	return &statedv1.ReadOptions{Consistency: statedv1.Consistency(cons)}
}
