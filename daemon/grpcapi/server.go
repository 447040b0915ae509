package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"google.golang.org/grpc"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/fsm"
)

// Store is what the gRPC API needs from the replicated store;
// *raftstore.Store satisfies it.
type Store interface {
	// CommitOutcome proposes c and waits until it is applied; it returns
	// the Raft index of the entry (of its first application when Duplicate
	// is set: a retry in a session), and the window adds' statuses and the
	// emissions of the entry. A *fsm.RejectError, *fsm.SessionError,
	// *fsm.FenceError or *fsm.OutboxFullError means nothing was applied.
	// It keeps nothing of c once it returns: the caller reuses its
	// mutations' memory.
	CommitOutcome(ctx context.Context, c *command.Commit) (raftstore.CommitOutcome, error)
	// CommitBatch proposes cs as one entry and returns each commit's
	// outcome and error, as CommitOutcome would for each; err is the
	// proposal's, for all of them.
	CommitBatch(ctx context.Context, cs []*command.Commit) ([]raftstore.CommitOutcome, []error, error)
	// WindowSpec returns a window namespace's spec, defaults filled in.
	WindowSpec(ns string) (command.WindowSpec, bool, error)
	// OpenSession opens a client session with id (zero: a random one),
	// fencing the client id's older ones; an open of the current session
	// answers it and changes nothing.
	OpenSession(ctx context.Context, clientID string, id uint64) (fsm.SessionOpened, error)
	// ReadBarrier waits until a read at consistency c, after minIndex, may
	// be served from the local state.
	ReadBarrier(ctx context.Context, c raftstore.Consistency, minIndex uint64) (uint64, error)
	Get(ns string, key []byte, kind fsm.Kind, subKey []byte) (fsm.Entry, bool, error)
	// Scan calls fn for each entry q selects; the Entry's slices are valid
	// only during the call.
	Scan(q fsm.ScanQuery, fn func(fsm.Entry) error) error
	// Group reads a consumer group's offsets, claims and newest
	// checkpointed offsets at one applied index.
	Group(group string) (fsm.GroupState, error)
	// Claim and Release propose partition claims.
	Claim(ctx context.Context, c *command.Claim) ([]fsm.ClaimedPartition, uint64, error)
	Release(ctx context.Context, c *command.Claim) (uint64, error)
	AppliedIndex() uint64
	Leadership
}

// Server implements statedv1.StateServer over a Store.
type Server struct {
	statedv1.UnimplementedStateServer
	store  Store
	logger *slog.Logger
	fwd    forwarding
	// scanSlots holds a token for each Scan stream served (see maxScans).
	scanSlots chan struct{}
	large     largeRequests
	guard     func() error
	observe   BatchObserver
	drain     drainSignal
}

// Option configures a Server or a ClusterServer.
type Option func(*options)

type options struct {
	logger     *slog.Logger
	forwarder  Forwarder
	largeBytes int64
	guard      func() error
	observe    BatchObserver
}

func newOptions(opts []Option) options {
	o := options{logger: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithLogger sets where the server logs internal errors. Default: discard.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithForwarder lets a follower forward the calls only the leader serves
// (commits, joins, removals and linearizable reads) to the leader through
// f. Without it a follower answers them Unavailable.
func WithForwarder(f Forwarder) Option {
	return func(o *options) { o.forwarder = f }
}

// WithLargeRequestBudget bounds the bytes of commit requests of 1 MiB or
// more that the server works on at once (see largeRequests); a request
// beyond it waits, bounded by its deadline. 0 leaves them unbounded, the
// default.
func WithLargeRequestBudget(bytes int64) Option {
	return func(o *options) { o.largeBytes = bytes }
}

// WithWriteGuard makes the leader ask guard before it proposes a commit
// (Commit, and each CommitBatch call): an error refuses the commit, and a
// *DiskFullError is answered RESOURCE_EXHAUSTED with a DiskFull detail.
func WithWriteGuard(guard func() error) Option {
	return func(o *options) { o.guard = guard }
}

// DiskFullError is a commit refused because the leader's data dir's disk
// has less free space than the daemon's --min-free-disk.
type DiskFullError struct {
	NodeID string
	Dir    string
	Free   int64
	Min    int64
}

func (e *DiskFullError) Error() string {
	return fmt.Sprintf("the data dir's disk of node %s (%s) has %s free, below --min-free-disk %s: commits are refused until there is room (free space or grow the volume)",
		e.NodeID, e.Dir, fmtMiB(e.Free), fmtMiB(e.Min))
}

// fmtMiB prints n in MiB with one decimal, or in bytes below 1 MiB.
func fmtMiB(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// checkWrite asks the write guard, if any, whether this node, the leader,
// may propose a commit now.
func (s *Server) checkWrite() error {
	if s.guard == nil {
		return nil
	}
	return s.guard()
}

// New returns a Server serving store.
func New(store Store, opts ...Option) *Server {
	o := newOptions(opts)
	return &Server{store: store, logger: o.logger, fwd: newForwarding(store, o), scanSlots: make(chan struct{}, maxScans),
		large: newLargeRequests(o.largeBytes), guard: o.guard, observe: o.observe, drain: newDrainSignal()}
}

// Commit validates the transaction and proposes it as one Raft entry; a
// follower forwards it to the leader.
func (s *Server) Commit(ctx context.Context, r *statedv1.CommitRequest) (*statedv1.CommitResponse, error) {
	if err := validateCommit(r); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	release, err := s.large.admit(ctx, r)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	defer release()
	conn, fctx, err := s.fwd.leaderConn(ctx)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if conn != nil {
		resp, err := statedv1.NewStateClient(conn).Commit(fctx, r)
		return resp, s.toStatus(ctx, forwardedError(err))
	}
	return s.commitHere(ctx, r)
}

// commitHere proposes the validated commit r on this node, the leader.
func (s *Server) commitHere(ctx context.Context, r *statedv1.CommitRequest) (*statedv1.CommitResponse, error) {
	if err := s.checkWrite(); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	c := toCommand(r)
	out, err := s.store.CommitOutcome(ctx, c)
	releaseMutations(c)
	if err != nil {
		return nil, s.commitStatus(ctx, err)
	}
	return commitResponse(out), nil
}

// commitStatus is the status a commit's error is answered with.
func (s *Server) commitStatus(ctx context.Context, err error) error {
	var full *fsm.OutboxFullError
	if errors.As(err, &full) {
		spec, _, _ := s.store.WindowSpec(full.Namespace) // for the detail only; 0 when unknown
		return outboxFullStatus(full, spec.MaxPendingEmissions)
	}
	return s.toStatus(ctx, err)
}

// commitResponse is the answer to an applied commit.
func commitResponse(out raftstore.CommitOutcome) *statedv1.CommitResponse {
	return &statedv1.CommitResponse{
		Index: out.Index, Duplicate: out.Duplicate,
		AddResults: addResultsToWire(out.Adds), Emissions: emissionsToWire(out.Emissions),
	}
}

// OpenSession opens a client session as a replicated command; a follower
// forwards it to the leader.
func (s *Server) OpenSession(ctx context.Context, r *statedv1.OpenSessionRequest) (*statedv1.OpenSessionResponse, error) {
	if err := validateOpenSession(r); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	conn, fctx, err := s.fwd.leaderConn(ctx)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if conn != nil {
		resp, err := statedv1.NewStateClient(conn).OpenSession(fctx, r)
		return resp, s.toStatus(ctx, forwardedError(err))
	}
	opened, err := s.store.OpenSession(ctx, r.GetClientId(), r.GetSessionId())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &statedv1.OpenSessionResponse{
		SessionId: opened.ID, Index: opened.Index, IdleTimeoutMillis: opened.IdleTimeout / 1e6,
		LineageId: s.store.Lineage(),
	}, nil
}

// Get reads one value, counter or map entry.
func (s *Server) Get(ctx context.Context, r *statedv1.GetRequest) (*statedv1.GetResponse, error) {
	if err := validateGet(r); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if conn, fctx, err := s.readLeaderConn(ctx, r.GetRead()); err != nil || conn != nil {
		if err != nil {
			return nil, s.toStatus(ctx, err)
		}
		resp, err := statedv1.NewStateClient(conn).Get(fctx, r)
		return resp, s.toStatus(ctx, forwardedError(err))
	}
	if err := s.barrier(ctx, r.GetRead()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	applied := s.store.AppliedIndex()
	e, found, err := s.store.Get(r.GetNamespace(), r.GetKey(), fsm.Kind(r.GetKind()), r.GetSubKey())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	resp := &statedv1.GetResponse{Found: found, AppliedIndex: applied}
	if found {
		resp.Value = e.Value
		resp.Counter = e.Counter
		resp.ExpiresAtUnixMillis = unixMillis(e.ExpiresAt)
	}
	return resp, nil
}

// GetOffsets returns the offsets stored for a consumer group.
func (s *Server) GetOffsets(ctx context.Context, r *statedv1.GetOffsetsRequest) (*statedv1.GetOffsetsResponse, error) {
	if err := validateGetOffsets(r); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if conn, fctx, err := s.readLeaderConn(ctx, r.GetRead()); err != nil || conn != nil {
		if err != nil {
			return nil, s.toStatus(ctx, err)
		}
		resp, err := statedv1.NewStateClient(conn).GetOffsets(fctx, r)
		return resp, s.toStatus(ctx, forwardedError(err))
	}
	if err := s.barrier(ctx, r.GetRead()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	// One read: each offset with the claim of the same state.
	g, err := s.store.Group(r.GetGroup())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	resp := offsetsResponse(g.Applied, g.Offsets, g.Claims)
	for _, o := range g.Checkpointed {
		resp.Checkpointed = append(resp.Checkpointed, &statedv1.Offset{Group: o.Group, Topic: o.Topic, Partition: o.Partition, Offset: o.Offset})
	}
	return resp, nil
}

// readLeaderConn returns a connection to the leader when r is a
// linearizable read and this node is a follower; nil when the read is
// served here. Local and session reads are always served here.
func (s *Server) readLeaderConn(ctx context.Context, r *statedv1.ReadOptions) (grpc.ClientConnInterface, context.Context, error) {
	if consistency(r) != raftstore.Linearizable {
		return nil, ctx, nil
	}
	return s.fwd.leaderConn(ctx)
}

// barrier waits until the read r asks for may be served locally.
func (s *Server) barrier(ctx context.Context, r *statedv1.ReadOptions) error {
	_, err := s.store.ReadBarrier(ctx, consistency(r), r.GetMinIndex())
	return err
}

// consistency maps the requested level; UNSPECIFIED is SESSION when the
// client sent an index to wait for, else LOCAL.
func consistency(r *statedv1.ReadOptions) raftstore.Consistency {
	switch r.GetConsistency() {
	case statedv1.Consistency_CONSISTENCY_LOCAL:
		return raftstore.Local
	case statedv1.Consistency_CONSISTENCY_SESSION:
		return raftstore.Session
	case statedv1.Consistency_CONSISTENCY_LINEARIZABLE:
		return raftstore.Linearizable
	}
	if r.GetMinIndex() > 0 {
		return raftstore.Session
	}
	return raftstore.Local
}

// toCommand converts a validated request. Mutation kinds and command.Op
// share their values (1..7), so the conversion is a cast; TTLs go from
// milliseconds to nanoseconds, which validation keeps from overflowing.
// A commit of pooledMutations mutations or more gets them from a pool,
// where releaseMutations gives them back.
func toCommand(r *statedv1.CommitRequest) *command.Commit {
	c := &command.Commit{
		ClientID:  r.GetClientId(),
		SessionID: r.GetSessionId(),
		Lane:      r.GetLane(),
		Seq:       r.GetSequence(),
		Mutations: newMutations(len(r.GetMutations())),
		Offsets:   make([]command.Offset, len(r.GetOffsets())),
	}
	for i, m := range r.GetMutations() {
		c.Mutations[i] = command.Mutation{
			Op:        command.Op(m.GetKind()),
			Namespace: m.GetNamespace(),
			Key:       m.GetKey(),
			SubKey:    m.GetSubKey(),
			Value:     m.GetValue(),
			Delta:     m.GetDelta(),
			TTL:       m.GetTtlMillis() * 1e6,
		}
	}
	for i, o := range r.GetOffsets() {
		c.Offsets[i] = command.Offset{Group: o.GetGroup(), Topic: o.GetTopic(), Partition: o.GetPartition(), Offset: o.GetOffset(), Epoch: o.GetEpoch()}
	}
	windowParts(c, r)
	return c
}

// The mutations of a large commit are converted into memory kept from
// one call to the next: the Store encodes them into the Raft entry before
// CommitOutcome returns and keeps nothing of them after it, and the
// commit path's allocations of about a request's size are most of what
// the daemon's collector works for under large commits (BENCHMARKS.md).
const (
	// pooledMutations is the fewest mutations that come from the pool;
	// fewer are allocated, as the commits the SDK coalesces (at most 16
	// mutations) are, which the pool would not spare much.
	pooledMutations = 64
	// maxPooledMutations is the most a pooled slice keeps.
	maxPooledMutations = 1 << 14
)

var mutationPool sync.Pool // of *[]command.Mutation

// newMutations returns n zero mutations, from the pool when n is within
// its bounds.
func newMutations(n int) []command.Mutation {
	if n < pooledMutations || n > maxPooledMutations {
		return make([]command.Mutation, n)
	}
	if p, ok := mutationPool.Get().(*[]command.Mutation); ok && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]command.Mutation, n, max(n, 1024))
}

// releaseMutations gives c's mutations back to the pool, once nothing
// uses c any more: they are cleared, so that the pool keeps no request's
// keys and values alive.
func releaseMutations(c *command.Commit) {
	m := c.Mutations
	c.Mutations = nil
	if len(m) < pooledMutations || cap(m) > maxPooledMutations {
		return
	}
	clear(m)
	m = m[:0]
	mutationPool.Put(&m)
}

// unixMillis converts an fsm expiry time (Unix nanoseconds, zero for
// never) to the wire's Unix milliseconds, rounded down: an entry is never
// gone before the time reported (it may be found up to a millisecond
// after it; test/sdk_test.go holds the first half).
func unixMillis(nanos int64) int64 {
	if nanos == 0 {
		return 0
	}
	return nanos / 1e6
}
