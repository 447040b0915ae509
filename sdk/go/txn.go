package stated

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/internal/grpccodec"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// Txn collects mutations and Kafka offsets that commit atomically, in one
// Commit call: the daemon applies all of them or none. Build one with
// Client.Txn or Client.Update. A Txn is not safe for concurrent use, and it
// commits at most once.
//
// The builder methods copy their byte arguments, so a caller may reuse its
// buffers at once. They validate nothing: the daemon checks names, sizes
// and offsets at Commit and refuses the whole Txn with ErrInvalidArgument,
// naming the offending field (e.g. "mutations[3].key").
type Txn struct {
	c     *Client
	alloc txnAlloc // the mutations' and copies' blocks (txnalloc.go)
	// mutations are the mutations to send, counter adds merged as they
	// are added (merge.go); nmut counts them, built counts the builder
	// calls that made them, and origin, once an add was merged, has each
	// one's builder index. Past wireLimit mutations the Txn is in wire
	// form (txnwire.go): wire and adds hold them, and mutations the first
	// ones no more.
	mutations []*statedv1.Mutation
	nmut      int
	built     int
	origin    []int
	runs      counterRuns
	wire      *[]byte   // the mutations but counter adds, as sent; nil until in wire form
	adds      []wireAdd // the counter adds in wire form, where each goes in wire
	wireAt    int       // the mutations it builds as messages before wire form: 0 for maxCoalescedWrites, -1 for none (wire form from the first)
	offsets   []*statedv1.Offset
	// Window parts (windows.go).
	windowAdds []*statedv1.WindowAdd
	hints      []*statedv1.WatermarkHint
	acks       []*statedv1.EmissionAck
	timers     []*statedv1.TimerOp
	source     string // AddWindow's source without FromSource (SetDefaultSource)
	err        error  // the first error of a typed handle; Commit returns it
	done       bool
}

// CommitResult describes a successful commit.
type CommitResult struct {
	// Index is the Raft log index of the commit. Reads with
	// ConsistencySession wait until the daemon has applied it.
	Index uint64
	// Duplicate is set when an earlier attempt of this commit had been
	// applied already (its answer was lost): Index is that attempt's, and
	// nothing was applied twice.
	Duplicate bool
	// Adds has one result per AddWindow of the Txn, in order: whether the
	// record was on time, or late and dropped or returned.
	Adds []AddResult
	// Emissions are what the commit's Raft entry emitted, in every window
	// namespace: windows it closed, updates (EmitUpdates) and timers it
	// fired. They stay pending until a later Txn acknowledges them (Ack).
	// A Duplicate commit has neither Adds nor Emissions: its emissions
	// wait in the outbox (Client.Emissions), but the late records a
	// LateReturn namespace returned to the lost answer are not returned
	// again.
	Emissions []Emission
}

// WriteOption adjusts one write.
type WriteOption func(*writeOptions)

type writeOptions struct {
	ttl time.Duration
}

// WithTTL makes the written entry expire ttl after the daemon's leader
// accepts the commit. It is sent in whole milliseconds, rounded up, so a
// positive ttl below 1ms becomes 1ms. Zero means no expiry, except on a
// counter add: an add without a TTL keeps the counter's current expiry
// (as Redis INCR keeps a key's), and an add with one sets a new one.
func WithTTL(ttl time.Duration) WriteOption {
	return func(o *writeOptions) { o.ttl = ttl }
}

// ttlMillis converts write options into the wire's ttl_millis.
func ttlMillis(opts []WriteOption) int64 {
	if len(opts) == 0 {
		return 0 // without allocating o below, which escapes into opt
	}
	var o writeOptions
	for _, opt := range opts {
		opt(&o)
	}
	ms := o.ttl.Milliseconds() // truncates toward zero
	switch {
	case o.ttl > 0 && o.ttl%time.Millisecond != 0:
		ms++
	case o.ttl < 0 && ms == 0:
		ms = -1 // keep it negative, for the daemon to refuse
	}
	return ms
}

// Txn starts an empty transaction.
func (c *Client) Txn() *Txn { return &Txn{c: c} }

// Put sets the value at key in namespace ns.
func (t *Txn) Put(ns string, key, value []byte, opts ...WriteOption) *Txn {
	return t.mutate(statedv1.MutationKind_MUTATION_KIND_PUT, ns, key, nil, value, 0, ttlMillis(opts))
}

// Delete removes everything stored under key in ns, of every kind: its
// value, map, list and counter.
func (t *Txn) Delete(ns string, key []byte) *Txn {
	return t.mutate(statedv1.MutationKind_MUTATION_KIND_DELETE, ns, key, nil, nil, 0, 0)
}

// MapPut sets subKey of the map at key in ns.
func (t *Txn) MapPut(ns string, key, subKey, value []byte, opts ...WriteOption) *Txn {
	return t.mutate(statedv1.MutationKind_MUTATION_KIND_MAP_PUT, ns, key, subKey, value, 0, ttlMillis(opts))
}

// MapDelete removes subKey of the map at key in ns.
func (t *Txn) MapDelete(ns string, key, subKey []byte) *Txn {
	return t.mutate(statedv1.MutationKind_MUTATION_KIND_MAP_DELETE, ns, key, subKey, nil, 0, 0)
}

// ListAppend appends value to the list at key in ns.
func (t *Txn) ListAppend(ns string, key, value []byte, opts ...WriteOption) *Txn {
	return t.mutate(statedv1.MutationKind_MUTATION_KIND_LIST_APPEND, ns, key, nil, value, 0, ttlMillis(opts))
}

// CounterAdd adds delta (which may be negative) to the counter at key in ns.
// The daemon does the addition, so concurrent adds never lose updates.
// Adds to one key in one Txn are sent as one add of their sum where that
// changes no outcome (see "Counters" in the package documentation).
func (t *Txn) CounterAdd(ns string, key []byte, delta int64, opts ...WriteOption) *Txn {
	ttl := ttlMillis(opts)
	if mergeAdd(t, ns, key, delta, ttl) {
		return t
	}
	return t.mutate(statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, ns, key, nil, nil, delta, ttl)
}

// DeletePrefix removes everything stored under every key of ns that starts
// with prefix, of every kind. An empty prefix clears the namespace.
func (t *Txn) DeletePrefix(ns string, prefix []byte) *Txn {
	return t.mutate(statedv1.MutationKind_MUTATION_KIND_DELETE_PREFIX, ns, prefix, nil, nil, 0, 0)
}

// CommitOffset records, in the same commit as the Txn's state changes, that
// the consumer group has processed topic's partition up to next-1: next is
// the offset of the last processed record plus one, as Kafka commits it.
// The daemon refuses an offset lower than the one it stores.
func (t *Txn) CommitOffset(group, topic string, partition int32, next int64) *Txn {
	t.offsets = append(t.offsets, &statedv1.Offset{Group: group, Topic: topic, Partition: partition, Offset: next})
	return t
}

// Len returns the number of mutations, offsets, window adds, watermark
// hints, acknowledgements and timer operations in the Txn.
func (t *Txn) Len() int {
	return t.built + len(t.offsets) + len(t.windowAdds) + len(t.hints) + len(t.acks) + len(t.timers)
}

// setErr remembers the first error of a typed handle, for Commit to return.
func (t *Txn) setErr(err error) {
	if t.err == nil {
		t.err = err
	}
}

// request builds the wire request for the commit on lane l, with its
// counter adds merged (merge.go); t.origin maps the request's mutation
// indexes back to the Txn's, nil when they are the same. A Txn in wire
// form (txnwire.go) sends its mutations beside it, and the request has
// none.
func (t *Txn) request(l *lane) *statedv1.CommitRequest {
	return &statedv1.CommitRequest{
		Mutations: t.mutations,
		Offsets:   t.offsets,
		ClientId:  t.c.id,
		SessionId: l.session,
		Lane:      l.id,
		Sequence:  l.next,

		WindowAdds:     t.windowAdds,
		WatermarkHints: t.hints,
		Acks:           t.acks,
		Timers:         t.timers,
	}
}

// Commit sends the Txn to the daemon and returns once it is committed. An
// empty Txn is sent as well. If a typed handle failed to encode a value, the
// Txn is not sent and Commit returns that error (it matches ErrCodec). A
// second Commit returns ErrTxnDone, whatever the first returned.
//
// Commit sends the Txn in the Client's session (it waits for the session to
// open, see "Sessions" in the package documentation) and retries while the
// daemon is unavailable (see "Retries"); every attempt carries the same
// session, lane and sequence, so the daemon applies the Txn at most once.
// It never retries a refused commit. After it returns ErrUnavailable, a
// context error, ErrSessionExpired or ErrClosed (the Client closed while
// the commit was in flight) the commit may or may not have been applied. A Client fenced by a newer session of its client id returns
// ErrSessionFenced from then on; a commit fenced while it was retried
// (after more than one attempt) may have applied too, and its error says
// so.
func (t *Txn) Commit(ctx context.Context) (CommitResult, error) {
	if t.done {
		return CommitResult{}, ErrTxnDone
	}
	t.done = true
	defer t.releaseWire()
	if t.err != nil {
		return CommitResult{}, t.err
	}
	c := t.c
	if err := c.checkOpen("commit"); err != nil {
		return CommitResult{}, err
	}
	if err := t.tooManyMutations(); err != nil {
		return CommitResult{}, c.rpcErr("commit", err)
	}
	// A session that expired while the Client was idle is reopened once,
	// for a commit that no attempt has sent in the old session yet.
	for reopened := false; ; reopened = true {
		res, attempts, err := t.commitInSession(ctx)
		var se *SessionError
		if !errors.As(err, &se) {
			return res, err
		}
		// Expired: not open, or superseded by the Client's own newer
		// session (sessionRefused).
		expired := errors.Is(se, ErrSessionExpired)
		switch {
		case expired && attempts == 1 && !reopened:
			continue
		case attempts > 1 && (expired || se.Reason == "superseded"):
			return CommitResult{}, sessionUnknownOutcome(se)
		}
		return CommitResult{}, se
	}
}

// commitInSession sends the Txn on a lane of the Client's session, with
// retries, and reports how many attempts it sent.
func (t *Txn) commitInSession(ctx context.Context) (CommitResult, int, error) {
	c := t.c
	l, err := c.acquireLane(ctx)
	if err != nil {
		return CommitResult{}, 0, err
	}
	req := t.request(l)
	var wire *wireCommit
	if t.wire != nil {
		// In wire form (txnwire.go): more mutations than a coalesced
		// call carries, so a Commit call of its own, as coalesce.go
		// sends it.
		if c.conn != nil {
			muts, release := t.wireMutations()
			defer release()
			wire = &wireCommit{conn: c.conn, w: grpccodec.WireCommit{Mutations: muts, Rest: req}}
		} else if req.Mutations, err = t.protoMutations(); err != nil {
			c.releaseLane(l)
			return CommitResult{}, 0, err
		}
	}
	attempts := 0
	var resp *statedv1.CommitResponse
	// uncertain is set once an attempt may have applied without the
	// Client knowing (no answer, or an answer too large to receive). A
	// leader below its --min-free-disk refuses a later attempt before its
	// session could answer it as a duplicate: that refusal does not mean
	// that nothing applied, so the attempt is sent again, until the
	// answer is known or ctx ends (an unknown outcome, as for
	// Unavailable).
	uncertain := false
	diskFullAfterUncertain := func(err error) bool {
		st, _ := status.FromError(err)
		return uncertain && isDiskFull(st)
	}
	send := func(solo bool) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			attempts++
			var err error
			switch {
			case wire != nil:
				resp, err = wire.send(ctx)
			case solo:
				resp, err = c.rpc.Commit(ctx, req)
			default:
				resp, err = c.sendCommit(ctx, req)
			}
			switch status.Code(err) {
			case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
				uncertain = true
			}
			if messageTooLarge(err) {
				uncertain = true
			}
			return err
		}
	}
	err = c.retryLoopAlso(ctx, c.retry.attemptTimeout, send(false), diskFullAfterUncertain)
	// ResourceExhausted (but for a full outbox) says that a message was
	// too large: the commit, which then applied nothing, or the answer,
	// which comes once the commit applied (the emissions of the windows
	// it closed, or of another commit that shared its call). The commit
	// is sent again alone to tell: a duplicate is answered without
	// emissions. A commit too large is refused again; one that applied
	// only now, with a large answer of its own, is a duplicate the time
	// after.
	for solo := 0; solo < 2 && messageTooLarge(err); solo++ {
		err = c.retryLoopAlso(ctx, c.retry.attemptTimeout, send(true), diskFullAfterUncertain)
	}
	c.releaseLane(l)
	if err != nil {
		err = asFenced(c.rpcErr("commit", remapFieldIndex(err, t.origin)))
		if se := asSessionError(err); se != nil {
			return CommitResult{}, attempts, c.sessionRefused(l, se)
		}
		return CommitResult{}, attempts, err
	}
	c.observeIndex(resp.GetIndex())
	return CommitResult{
		Index: resp.GetIndex(), Duplicate: resp.GetDuplicate(),
		Adds: t.addResults(resp.GetAddResults()), Emissions: emissionsOf(resp.GetEmissions()),
	}, attempts, nil
}

// messageTooLarge reports whether err says that a commit or its answer
// exceeded a message size limit (ResourceExhausted without the OutboxFull
// detail of a full window outbox or the DiskFull detail of a nearly full
// disk).
func messageTooLarge(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.ResourceExhausted && !isOutboxFull(st) && !isDiskFull(st)
}

// Update builds a Txn with fn and commits it. If fn returns an error,
// nothing is sent and Update returns that error.
func (c *Client) Update(ctx context.Context, fn func(*Txn) error) (CommitResult, error) {
	t := c.Txn()
	if err := fn(t); err != nil {
		return CommitResult{}, err
	}
	return t.Commit(ctx)
}

// DeletePrefix removes everything stored under every key of ns that starts
// with prefix, in a commit of its own. An empty prefix clears the
// namespace.
func (c *Client) DeletePrefix(ctx context.Context, ns string, prefix []byte) error {
	_, err := c.Txn().DeletePrefix(ns, prefix).Commit(ctx)
	return err
}
