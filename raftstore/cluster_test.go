package raftstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/fsm"
	"github.com/statedhq/stated/raftstore/raftstoretest"
)

// Every wait in these tests is bounded by this.
const waitTimeout = raftstoretest.WaitTimeout

// forEachLogStore runs test once on each Raft log store, as a subtest
// named after it.
func forEachLogStore(t *testing.T, test func(t *testing.T, logStore string)) {
	for _, ls := range []string{raftstore.LogStoreBoltDB, raftstore.LogStoreWAL} {
		t.Run(ls, func(t *testing.T) { test(t, ls) })
	}
}

func increment(clientID string, seq uint64, key string, delta int64) *command.Commit {
	return &command.Commit{ClientID: clientID, Seq: seq, Mutations: []command.Mutation{
		{Op: command.OpCounterAdd, Namespace: "ns", Key: []byte(key), Delta: delta},
	}}
}

func readCounter(t *testing.T, s *raftstore.Store, key string) int64 {
	t.Helper()
	e, _, err := s.Get("ns", []byte(key), fsm.KindCounter, nil)
	if err != nil {
		t.Fatalf("%s: get %s: %v", s.NodeID(), key, err)
	}
	return e.Counter
}

// writers commit increments of one key, each through whichever node leads,
// retrying a commit with the same (client id, sequence) until it is
// acknowledged: no sequence is ever abandoned, so every increment applied
// is an acknowledged one.
type writers struct {
	stop  chan struct{}
	wg    sync.WaitGroup
	acked atomic.Int64
	// lastSeq and lastIndex are client w0's last acknowledged sequence and
	// the index it got for it.
	lastSeq, lastIndex atomic.Uint64
	errs               chan error
}

const maxCommitsPerWriter = 3000

func startWriters(t *testing.T, c *raftstoretest.Cluster, n int, key string) *writers {
	w := &writers{stop: make(chan struct{}), errs: make(chan error, n)}
	for i := range n {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			client := fmt.Sprintf("w%d", i)
			for seq := uint64(1); seq <= maxCommitsPerWriter; seq++ {
				select {
				case <-w.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
				idx, err := c.Commit(ctx, increment(client, seq, key, 1), time.Second)
				cancel()
				if err != nil {
					w.errs <- fmt.Errorf("%s seq %d: %w", client, seq, err)
					return
				}
				if i == 0 {
					w.lastIndex.Store(idx)
					w.lastSeq.Store(seq)
				}
				w.acked.Add(1)
			}
		}()
	}
	t.Cleanup(w.halt)
	return w
}

func (w *writers) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
}

// finish stops the writers and returns how many commits were acknowledged.
func (w *writers) finish(t *testing.T) int64 {
	t.Helper()
	w.halt()
	select {
	case err := <-w.errs:
		t.Fatalf("writer: %v", err)
	default:
	}
	return w.acked.Load()
}

// await waits until at least n commits are acknowledged.
func (w *writers) await(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for w.acked.Load() < n {
		select {
		case err := <-w.errs:
			t.Fatalf("writer: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d commits acknowledged within %v", w.acked.Load(), n, waitTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// lastCommandIndex is the index of the newest commit the ready leader has
// applied: at least that of every acknowledged commit. (Not the Raft
// commit index: no-op, barrier and configuration entries have indexes the
// state machine never applies; see TestLinearizableReadOnAnIdleClusterReturns.)
func lastCommandIndex(t *testing.T, c *raftstoretest.Cluster) uint64 {
	t.Helper()
	return c.Leader(t).AppliedIndex()
}

// checkEveryNode waits until every running node has applied the leader's
// last commit (a session barrier) and checks that each holds want under
// key.
func checkEveryNode(t *testing.T, c *raftstoretest.Cluster, key string, want int64) {
	t.Helper()
	idx := lastCommandIndex(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for _, s := range c.Running() {
		if _, err := s.ReadBarrier(ctx, raftstore.Session, idx); err != nil {
			t.Fatalf("%s: session barrier at %d: %v", s.NodeID(), idx, err)
		}
		if got := readCounter(t, s, key); got != want {
			t.Errorf("%s: %s = %d, want %d acknowledged increments", s.NodeID(), key, got, want)
		}
	}
}

func TestLeaderFailoverLosesNoAcknowledgedCommit(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		c := raftstoretest.NewCluster(t, 3, raftstoretest.WithLogStore(logStore))
		w := startWriters(t, c, 3, "c")
		w.await(t, 50)

		old := c.Leader(t)
		oldTerm, oldIdx := old.Status().Term, c.Index(old.NodeID())
		c.Stop(oldIdx) // mid-way: writers have commits in flight at it
		w.await(t, w.acked.Load()+50)
		l := c.Leader(t)
		if l.NodeID() == old.NodeID() || l.Status().Term <= oldTerm {
			t.Fatalf("leader after failover: %s in term %d; old: %s in term %d", l.NodeID(), l.Status().Term, old.NodeID(), oldTerm)
		}

		c.Restart(t, oldIdx)
		w.await(t, w.acked.Load()+50)
		acked := w.finish(t)
		checkEveryNode(t, c, "c", acked)

		// A retry of the last acknowledged commit, after failovers, returns
		// its first index and applies nothing; a retry of an older one is
		// refused, never applied.
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		last := w.lastSeq.Load()
		idx, err := c.Commit(ctx, increment("w0", last, "c", 1), time.Second)
		if err != nil || idx != w.lastIndex.Load() {
			t.Fatalf("retry of w0/%d = %d, %v; want its first index %d", last, idx, err, w.lastIndex.Load())
		}
		if _, err := c.Commit(ctx, increment("w0", last-1, "c", 1), time.Second); !errors.Is(err, fsm.ErrSessionRefused) {
			t.Fatalf("retry of w0/%d below the highest: %v, want a session refusal", last-1, err)
		}
		checkEveryNode(t, c, "c", acked)
	})
}

// recorder keeps the messages each node logs, with their times.
type recorder struct {
	mu   sync.Mutex
	msgs map[string][]logLine // node -> messages
}

type logLine struct {
	msg string
	at  time.Time
}

type recordHandler struct {
	r    *recorder
	node string
}

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	h.r.msgs[h.node] = append(h.r.msgs[h.node], logLine{r.Message, r.Time})
	return nil
}
func (h recordHandler) WithAttrs(as []slog.Attr) slog.Handler {
	for _, a := range as {
		if a.Key == "node" {
			h.node = a.Value.String()
		}
	}
	return h
}
func (h recordHandler) WithGroup(string) slog.Handler { return h }

func (r *recorder) logged(node, substr string) bool {
	return !r.firstSince(node, substr, time.Time{}).IsZero()
}

// firstSince is when node first logged a message holding substr at or
// after since; zero if it has not.
func (r *recorder) firstSince(node, substr string, since time.Time) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.msgs[node] {
		if !m.at.Before(since) && strings.Contains(m.msg, substr) {
			return m.at
		}
	}
	return time.Time{}
}

// waitLogged is logged, waiting up to waitTimeout for the message: a
// node can be ready (joined and serving) before Raft finishes installing
// the snapshot it is being sent.
func (r *recorder) waitLogged(node, msg string) bool {
	deadline := time.Now().Add(waitTimeout)
	for !r.logged(node, msg) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// snapshotIndexes lists the indexes of the Raft snapshots in a node's
// data directory, leaving out any being written (a .tmp directory).
func snapshotIndexes(t *testing.T, dir string) []uint64 {
	t.Helper()
	metas, err := filepath.Glob(filepath.Join(dir, "raft", "snapshots", "*", "meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, p := range metas {
		if strings.HasSuffix(filepath.Dir(p), ".tmp") {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var m raft.SnapshotMeta
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out = append(out, m.Index)
	}
	return out
}

// snapshotCluster is a 3-node cluster for the snapshot tests: its log
// messages are recorded, its config set by cfg, and commit(n) commits n
// increments of counter "c", as client clientID with sequences 1, 2, …,
// or, for "", with no client id at all (no session or dedup record).
// acked counts the increments committed.
type snapshotCluster struct {
	*raftstoretest.Cluster
	rec   *recorder
	ctx   context.Context
	acked int64
	t     *testing.T
	id    string
}

func newSnapshotCluster(t *testing.T, logStore, clientID string, cfg func(*raftstore.Config)) *snapshotCluster {
	rec := &recorder{msgs: map[string][]logLine{}}
	c := raftstoretest.NewCluster(t, 3, raftstoretest.WithLogStore(logStore),
		raftstoretest.WithLogger(slog.New(recordHandler{r: rec})), raftstoretest.WithConfig(cfg))
	ctx, cancel := context.WithTimeout(context.Background(), 4*waitTimeout)
	t.Cleanup(cancel)
	return &snapshotCluster{Cluster: c, rec: rec, ctx: ctx, t: t, id: clientID}
}

func (c *snapshotCluster) commit(n int) {
	c.t.Helper()
	for range n {
		c.acked++
		if c.id == "" {
			c.commitSessionless()
			continue
		}
		if _, err := c.Commit(c.ctx, increment(c.id, uint64(c.acked), "c", 1), time.Second); err != nil {
			c.t.Fatal(err)
		}
	}
}

// commitSessionless commits the increment that makes the counter c.acked,
// without a client id. Nothing deduplicates a retry then, and an attempt
// that failed may still apply: a leader that lost its lease under -race
// answers ErrLeadershipLost for an entry a new leader may commit (on
// e478d85's CI race pass a retry counted twice). So after a failed
// attempt the test learns from the leader, linearizably, whether the
// counter holds the increment before it tries again: the commits are
// sequential, so the counter says exactly.
func (c *snapshotCluster) commitSessionless() {
	c.t.Helper()
	for {
		err := errors.New("no leader")
		if l := c.CurrentLeader(); l != nil {
			actx, cancel := context.WithTimeout(c.ctx, waitTimeout)
			_, _, err = l.Commit(actx, increment("", 0, "c", 1))
			cancel()
		}
		if err == nil || c.holds(int64(c.acked)) {
			return
		}
	}
}

// holds reports whether the counter is want, read linearizably on the
// leader: once a leader has committed an entry of its term, an entry an
// earlier leader left uncommitted either applied before it or never will.
func (c *snapshotCluster) holds(want int64) bool {
	c.t.Helper()
	for {
		if l := c.CurrentLeader(); l != nil {
			if _, err := l.ReadBarrier(c.ctx, raftstore.Linearizable, 0); err == nil {
				return readCounter(c.t, l, "c") == want
			}
		}
		if c.ctx.Err() != nil {
			c.t.Fatalf("no linearizable read of the counter before the test's deadline: %v", c.ctx.Err())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wipeFollowerBehindASnapshot wipes a follower, makes after more commits
// with commit, and has the leader take a snapshot, so that the wiped node,
// once restarted, can catch up only from a snapshot. It returns the
// follower's index and id, and the leader.
func wipeFollowerBehindASnapshot(t *testing.T, c *raftstoretest.Cluster, commit func(int), after int) (int, string, *raftstore.Store) {
	t.Helper()
	f := c.Index(c.Followers()[0].NodeID())
	id := c.ID(f)
	c.Wipe(f)
	commit(after)
	l := c.Leader(t)
	if err := l.Snapshot(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		t.Fatal(err)
	}
	return f, id, l
}

func TestWipedFollowerRejoinsFromSnapshot(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		c := newSnapshotCluster(t, logStore, "t", func(cfg *raftstore.Config) {
			cfg.SnapshotThreshold = 64
			cfg.TrailingLogs = 16
			cfg.SnapshotInterval = 100 * time.Millisecond
		})
		rec, ctx, commit := c.rec, c.ctx, c.commit

		commit(150)
		// Compact the leader's log well past anything the wiped node had:
		// from now on it can only catch up from a snapshot.
		f, id, l := wipeFollowerBehindASnapshot(t, c.Cluster, commit, 150)
		if len(snapshotIndexes(t, c.Dir(c.Index(l.NodeID())))) == 0 {
			t.Fatal("the leader took no snapshot")
		}

		c.Restart(t, f) // joins again with the same id and address
		s := c.Node(f)
		if !rec.waitLogged(id, "Installed remote snapshot") {
			t.Errorf("%s caught up without installing a snapshot", id)
		}
		if len(snapshotIndexes(t, c.Dir(f))) == 0 {
			t.Errorf("%s keeps no snapshot after installing one", id)
		}
		// The state was built as the stream arrived, not read back after.
		if n := s.SnapshotCounts(); n.Restored == 0 || n.Staged != n.Restored {
			t.Errorf("%s's snapshot counts after the install: %+v; want every restore staged as it was received", id, n)
		}
		members, _, err := c.Leader(t).Members()
		if err != nil || len(members) != 3 {
			t.Fatalf("members after the rejoin = %+v, %v; want 3", members, err)
		}

		// Session reads at the rejoined node include every commit, those in
		// the snapshot and those after it.
		commit(20)
		idx := lastCommandIndex(t, c.Cluster)
		if _, err := s.ReadBarrier(ctx, raftstore.Session, idx); err != nil {
			t.Fatal(err)
		}
		if got := readCounter(t, s, "c"); got != c.acked {
			t.Fatalf("rejoined %s: counter %d, want %d", id, got, c.acked)
		}
		checkEveryNode(t, c.Cluster, "c", c.acked)
	})
}

// TestAFollowerSentAStateNewerThanTheSnapshotCountsEachCommitOnce: a
// leader's snapshot refers to its state, and a follower that needs it is
// sent the state as it is when sent, here 40 commits past the snapshot's
// index. The follower then receives those commits again as log entries
// and must skip them: counter adds applied twice would count twice.
func TestAFollowerSentAStateNewerThanTheSnapshotCountsEachCommitOnce(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		// No client id: no session or dedup record, so only the applied
		// index keeps a replayed entry from counting again.
		c := newSnapshotCluster(t, logStore, "", func(cfg *raftstore.Config) {
			// Only the snapshot taken by hand below.
			cfg.SnapshotThreshold = 1 << 30
			cfg.SnapshotBytes = 0
			cfg.TrailingLogs = 16
		})
		rec, ctx, commit := c.rec, c.ctx, c.commit
		commit(100)
		f, id, _ := wipeFollowerBehindASnapshot(t, c.Cluster, commit, 100)
		commit(40) // the leader's state moves past its snapshot
		c.Restart(t, f)
		if !rec.waitLogged(id, "Installed remote snapshot") {
			t.Fatalf("%s caught up without installing a snapshot", id)
		}
		commit(10)
		if _, err := c.Node(f).ReadBarrier(ctx, raftstore.Session, lastCommandIndex(t, c.Cluster)); err != nil {
			t.Fatal(err)
		}
		checkEveryNode(t, c.Cluster, "c", c.acked)
	})
}

// TestWipedVoterCannotElectALeaderMissingCommitsItAcknowledged is the
// loss the chaos suite found: commits acknowledged by the leader and one
// follower only; that follower loses its disk and comes back empty under
// its old id; the leader dies. Raft would let the third, stale node win
// the empty node's vote and then truncate the acknowledged commits when
// the old leader returns. The empty node must refuse every vote until the
// cluster has accepted its join, and the join must replace its old
// incarnation; then the old leader's return elects a complete leader and
// every commit survives on every node.
func TestWipedVoterCannotElectALeaderMissingCommitsItAcknowledged(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		rec := &recorder{msgs: map[string][]logLine{}}
		c := raftstoretest.NewCluster(t, 3, raftstoretest.WithLogStore(logStore), raftstoretest.WithLogger(slog.New(recordHandler{r: rec})))
		ctx, cancel := context.WithTimeout(context.Background(), 4*waitTimeout)
		defer cancel()
		var acked int64
		commit := func(n int) {
			t.Helper()
			for range n {
				if _, err := c.Commit(ctx, increment("t", uint64(acked+1), "c", 1), time.Second); err != nil {
					t.Fatal(err)
				}
				acked++
			}
		}

		commit(20)
		leader := c.Index(c.Leader(t).NodeID())
		fs := c.Followers()
		stale, wiped := c.Index(fs[0].NodeID()), c.Index(fs[1].NodeID())
		// These commits are acknowledged by the leader and the node about to
		// lose its disk, and by nobody else.
		c.Network().Isolate(c.ID(stale))
		commit(50)
		c.Wipe(wiped)
		c.Stop(leader)
		c.Network().Heal()

		joined := c.RestartInBackground(wiped)
		// The stale node campaigns; only the empty node can answer it.
		for !rec.logged(c.ID(wiped), "refused a vote") {
			if c.Node(stale).IsLeader() {
				t.Fatalf("%s, missing %d acknowledged commits, was elected with the vote of the wiped %s", c.ID(stale), 50, c.ID(wiped))
			}
			select {
			case err := <-joined:
				t.Fatalf("the wiped %s joined (err %v) while the only node with every acknowledged commit was down: a leader was elected without them", c.ID(wiped), err)
			case <-ctx.Done():
				t.Fatalf("%s never asked the wiped %s for a vote: %v", c.ID(stale), c.ID(wiped), ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
		if c.Node(stale).IsLeader() {
			t.Fatalf("%s was elected leader without the acknowledged commits", c.ID(stale))
		}

		// The old leader returns: it is elected (the stale node votes for its
		// longer log), replaces the wiped node's old incarnation and adds the
		// new one, which then votes again.
		c.Restart(t, leader)
		if err := <-joined; err != nil {
			t.Fatal(err)
		}
		if c.Node(wiped).NeedsJoin() {
			t.Fatalf("%s still needs a join after joining", c.ID(wiped))
		}
		members, _, err := c.Leader(t).Members()
		if err != nil || len(members) != 3 {
			t.Fatalf("members after the rejoin = %+v, %v; want 3", members, err)
		}
		commit(5)
		checkEveryNode(t, c, "c", acked)
	})
}

// TestNodeThatCrashedBeforeItsJoinCompletedStillRefusesVotes: the state
// "joining" is on disk. A node that has no Raft state and does not
// bootstrap is marked joining when it opens, and stays so across a
// restart until Joined. (A node that joined and then received nothing
// has no Raft state on its next start and joins again, which is safe.)
func TestNodeThatCrashedBeforeItsJoinCompletedStillRefusesVotes(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		cfg := raftstore.DefaultConfig()
		cfg.NodeID = "n1"
		cfg.Dir = t.TempDir()
		cfg.LogStore = logStore
		cfg.RaftBind = "127.0.0.1:0"
		cfg.Bootstrap = false
		open := func() *raftstore.Store {
			t.Helper()
			s, err := raftstore.Open(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		s := open()
		if !s.NeedsJoin() {
			t.Fatal("a node without state that does not bootstrap does not need a join")
		}
		inc := s.Incarnation()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		// Bootstrap on the next start must not turn a joining node into a
		// cluster of its own.
		cfg.Bootstrap = true
		s = open()
		if !s.NeedsJoin() || s.HadState() {
			t.Fatalf("restarted joining node: NeedsJoin %v, HadState %v; want true, false", s.NeedsJoin(), s.HadState())
		}
		// Its disk is the same: so is the incarnation it joins under.
		if s.Incarnation() != inc || inc == "" {
			t.Fatalf("restarted joining node: incarnation %q, want %q from its first start", s.Incarnation(), inc)
		}
		if err := s.Joined(); err != nil {
			t.Fatal(err)
		}
		if s.NeedsJoin() {
			t.Fatal("NeedsJoin after Joined")
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestJoinedNodesVoteWhenTheAnswersToTheirJoinsAreLost is the deadlock CI
// once hit in the podman StatefulSet test: the bootstrap node added the
// other two as voters, lost its leadership, and could never be elected
// again, since the two refused every vote while their Joins went
// unanswered and a Join needs a leader. Here the leader accepts both
// joins and the answers never reach them (Joined is never called). Each
// must learn from its own log that it was accepted; then, with the leader
// gone, the two must elect one of themselves and commit. A retried join
// of the same incarnation, with the old leader still down, must keep the
// member rather than replace it (a replacement could not commit without
// the down member).
func TestJoinedNodesVoteWhenTheAnswersToTheirJoinsAreLost(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		ctx, cancel := context.WithTimeout(context.Background(), 4*waitTimeout)
		defer cancel()
		open := func(id string, bootstrap bool) *raftstore.Store {
			t.Helper()
			cfg := raftstore.DefaultConfig()
			cfg.NodeID = id
			cfg.Dir = t.TempDir()
			cfg.LogStore = logStore
			cfg.RaftBind = "127.0.0.1:0"
			cfg.GRPCAddr = id + ".grpc.invalid:1"
			cfg.Bootstrap = bootstrap
			cfg.ApplyTimeout = 5 * time.Second
			cfg.HeartbeatTimeout = 200 * time.Millisecond
			cfg.ElectionTimeout = 200 * time.Millisecond
			cfg.LeaderLeaseTimeout = 100 * time.Millisecond
			s, err := raftstore.Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		member := func(s *raftstore.Store) raftstore.Member {
			return raftstore.Member{ID: s.NodeID(), RaftAddr: s.RaftAddr(), GRPCAddr: s.NodeID() + ".grpc.invalid:1", Voter: true, Incarnation: s.Incarnation()}
		}
		first := open("n0", true)
		if err := first.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		a, b := open("n1", false), open("n2", false)
		for _, s := range []*raftstore.Store{a, b} {
			if !s.NeedsJoin() || len(s.Incarnation()) != 32 {
				t.Fatalf("%s: NeedsJoin %v, incarnation %q; want a joining node with a 32-digit incarnation", s.NodeID(), s.NeedsJoin(), s.Incarnation())
			}
			// A leader with a 100 ms lease may step down under load (the
			// race pass): the join goes to whichever node leads then.
			for deadline := time.Now().Add(waitTimeout); ; time.Sleep(20 * time.Millisecond) {
				via := first
				for _, n := range []*raftstore.Store{first, a, b} {
					if n.IsLeader() {
						via = n
					}
				}
				_, err := via.Join(ctx, member(s), "")
				if err == nil {
					break
				}
				if !errors.Is(err, raftstore.ErrNotLeader) || time.Now().After(deadline) {
					t.Fatalf("join %s through %s: %v", s.NodeID(), via.NodeID(), err)
				}
			}
		}
		for _, s := range []*raftstore.Store{a, b} {
			deadline := time.Now().Add(waitTimeout)
			for s.NeedsJoin() {
				if time.Now().After(deadline) {
					t.Fatalf("%s was added as a voter but, without the answer to its join, still refuses votes", s.NodeID())
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		if err := first.Close(); err != nil {
			t.Fatal(err)
		}

		var l, other *raftstore.Store
		deadline := time.Now().Add(waitTimeout)
		for l == nil {
			if time.Now().After(deadline) {
				t.Fatalf("no leader among %s and %s once the node that added them is gone", a.NodeID(), b.NodeID())
			}
			switch {
			case a.IsLeader():
				l, other = a, b
			case b.IsLeader():
				l, other = b, a
			default:
				time.Sleep(10 * time.Millisecond)
			}
		}
		if _, _, err := l.Commit(ctx, increment("c", 0, "k", 1)); err != nil {
			t.Fatalf("commit on the new leader %s: %v", l.NodeID(), err)
		}

		jctx, jcancel := context.WithTimeout(ctx, 5*time.Second)
		defer jcancel()
		if _, err := l.Join(jctx, member(other), ""); err != nil {
			t.Fatalf("a retried join of %s under the incarnation it joined with, n0 down: %v", other.NodeID(), err)
		}
		members, _, err := l.Members()
		if err != nil || len(members) != 3 {
			t.Fatalf("members after the retried join = %+v, %v; want all 3 kept", members, err)
		}
		if _, _, err := l.Commit(ctx, increment("c", 0, "k", 1)); err != nil {
			t.Fatalf("commit after the retried join: %v", err)
		}
	})
}

// TestTwoNodesJoiningUnderOneIDAtOnceAreNotBothAccepted starts two nodes
// with one id and has the leader take their joins together. Checked one
// after the other, the second is refused (the id is a member at another
// address); checked together, both passed, and Raft's AddVoter of an id
// that is already a voter moved it to the second address: both were
// answered as members, and the metadata paired one node's gRPC address
// with the other's Raft address.
func TestTwoNodesJoiningUnderOneIDAtOnceAreNotBothAccepted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	defer cancel()
	open := func(id string, bootstrap bool) *raftstore.Store {
		t.Helper()
		cfg := raftstore.DefaultConfig()
		cfg.NodeID = id
		cfg.Dir = t.TempDir()
		cfg.RaftBind = "127.0.0.1:0"
		cfg.GRPCAddr = id + ".grpc.invalid:1"
		cfg.Bootstrap = bootstrap
		cfg.HeartbeatTimeout = 200 * time.Millisecond
		cfg.ElectionTimeout = 200 * time.Millisecond
		cfg.LeaderLeaseTimeout = 100 * time.Millisecond
		s, err := raftstore.Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	l := open("n0", true)
	if err := l.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	twins := []*raftstore.Store{open("n1", false), open("n1", false)}
	errs := make([]error, len(twins))
	var wg sync.WaitGroup
	for i, s := range twins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each node's gRPC address is its Raft address, so that the
			// metadata shows which node it came from.
			_, errs[i] = l.Join(ctx, raftstore.Member{ID: "n1", RaftAddr: s.RaftAddr(), GRPCAddr: s.RaftAddr(), Voter: true, Incarnation: s.Incarnation()}, "")
		}()
	}
	wg.Wait()
	accepted := -1
	for i, err := range errs {
		switch {
		case err == nil && accepted < 0:
			accepted = i
		case err == nil:
			t.Fatalf("both joins of id n1 accepted, from %s and %s", twins[0].RaftAddr(), twins[1].RaftAddr())
		case !errors.Is(err, raftstore.ErrMemberConflict):
			t.Fatalf("join from %s: %v, want ErrMemberConflict", twins[i].RaftAddr(), err)
		}
	}
	if accepted < 0 {
		t.Fatalf("neither join accepted: %v", errs)
	}
	members, _, err := l.Members()
	if err != nil {
		t.Fatal(err)
	}
	want := twins[accepted].RaftAddr()
	for _, m := range members {
		if m.ID == "n1" && (m.RaftAddr != want || m.GRPCAddr != want) {
			t.Fatalf("member n1 at raft %s, grpc %s; want both %s, the node accepted", m.RaftAddr, m.GRPCAddr, want)
		}
	}
}

func TestPartitionedLeaderCannotCommitAndMajorityMovesOn(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		c := raftstoretest.NewCluster(t, 3, raftstoretest.WithLogStore(logStore))
		ctx, cancel := context.WithTimeout(context.Background(), 4*waitTimeout)
		defer cancel()
		var acked int64
		commit := func(n int) {
			t.Helper()
			for range n {
				acked++
				if _, err := c.Commit(ctx, increment("t", uint64(acked), "c", 1), time.Second); err != nil {
					t.Fatal(err)
				}
			}
		}
		commit(20)

		old := c.Leader(t)
		oldTerm, before := old.Status().Term, old.Status().LastLogIndex
		c.Network().Isolate(old.NodeID())
		// Proposed right after the cut, while old still believes it leads:
		// the entry reaches its log and no one else's.
		gctx, gcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, _, err := old.Commit(gctx, increment("ghost", 0, "ghost", 1))
		gcancel()
		if err == nil {
			t.Fatal("an isolated leader acknowledged a commit")
		}
		if !errors.Is(err, raftstore.ErrNotLeader) && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("isolated leader's commit: err = %v, want ErrNotLeader or a timeout", err)
		}
		appended := old.Status().LastLogIndex > before
		t.Logf("isolated leader's commit failed with %v; its entry reached its log: %v", err, appended)

		// The majority elects a leader among itself and commits.
		var l *raftstore.Store
		deadline := time.Now().Add(waitTimeout)
		for l == nil || l.NodeID() == old.NodeID() {
			if time.Now().After(deadline) {
				t.Fatal("the majority elected no leader")
			}
			time.Sleep(10 * time.Millisecond)
			l = c.CurrentLeader()
		}
		commit(20)
		if old.IsLeader() {
			t.Fatal("the isolated leader still leads after the majority committed")
		}
		if _, _, err := old.Commit(ctx, increment("ghost", 2, "ghost", 1)); !errors.Is(err, raftstore.ErrNotLeader) {
			t.Fatalf("deposed leader's commit: err = %v, want ErrNotLeader", err)
		}

		c.Network().Heal()
		// The old leader rejoins as a follower of a later term, its uncommitted
		// entry replaced by the new leader's log.
		for old.IsLeader() || old.Status().Term <= oldTerm || old.Status().LeaderID == "" {
			if time.Now().After(deadline.Add(waitTimeout)) {
				t.Fatalf("old leader after healing: %+v", old.Status())
			}
			time.Sleep(10 * time.Millisecond)
		}
		commit(5)
		checkEveryNode(t, c, "c", acked)
		for _, s := range c.Running() {
			if got := readCounter(t, s, "ghost"); got != 0 {
				t.Errorf("%s: the isolated leader's unacknowledged write is present: ghost = %d", s.NodeID(), got)
			}
		}
	})
}

func TestMembershipChangesUnderLoad(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		c := raftstoretest.NewCluster(t, 3, raftstoretest.WithLogStore(logStore))
		w := startWriters(t, c, 2, "c")
		w.await(t, 30)

		c.AddNode(t)
		w.await(t, w.acked.Load()+30)
		c.AddNode(t)
		w.await(t, w.acked.Load()+30)
		assertVoters(t, c, 5, "")

		// Remove a follower that was there from the start.
		gone := -1
		for i := range 3 {
			if !c.Node(i).IsLeader() {
				gone = i
				break
			}
		}
		c.Remove(t, gone)
		w.await(t, w.acked.Load()+30)
		assertVoters(t, c, 4, c.ID(gone))

		acked := w.finish(t)
		checkEveryNode(t, c, "c", acked)
	})
}

func assertVoters(t *testing.T, c *raftstoretest.Cluster, want int, absent string) {
	t.Helper()
	members, _, err := c.Leader(t).Members()
	if err != nil {
		t.Fatal(err)
	}
	voters := 0
	for _, m := range members {
		if m.ID == absent {
			t.Fatalf("removed node %s is still a member: %+v", absent, members)
		}
		if m.Voter {
			voters++
		}
	}
	if voters != want || len(members) != want {
		t.Fatalf("members = %+v; want %d voters", members, want)
	}
}

func TestLinearizableReadsNeverGoBackInTime(t *testing.T) {
	c := raftstoretest.NewCluster(t, 3)
	h := raftstoretest.NewHistory()
	const (
		clients      = 4
		opsPerClient = 80
		runFor       = 3 * time.Second
	)
	start := time.Now()
	var wg sync.WaitGroup
	for client := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(client), uint64(start.UnixNano())))
			id := fmt.Sprintf("lin%d", client)
			seq := uint64(0)
			for range opsPerClient {
				if time.Since(start) > runFor {
					return
				}
				if rng.IntN(2) == 0 {
					seq++
					delta := int64(1 + rng.IntN(3))
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					call := time.Now()
					_, err := c.Commit(ctx, increment(id, seq, "c", delta), 300*time.Millisecond)
					ret := time.Now()
					cancel()
					// An add that was not acknowledged may still apply:
					// its outcome is unknown.
					h.Add(client, delta, call, ret, err == nil)
					continue
				}
				l := c.CurrentLeader()
				if l == nil {
					time.Sleep(2 * time.Millisecond)
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				call := time.Now()
				_, err := l.ReadBarrier(ctx, raftstore.Linearizable, 0)
				cancel()
				if err != nil {
					continue // no read happened
				}
				e, _, err := l.Get("ns", []byte("c"), fsm.KindCounter, nil)
				if err != nil {
					continue
				}
				h.Read(client, e.Counter, call, time.Now())
			}
		}()
	}

	time.Sleep(runFor / 3)
	old := c.Index(c.Leader(t).NodeID())
	c.Stop(old)
	time.Sleep(runFor / 3)
	c.Restart(t, old)
	wg.Wait()

	if h.Len() < clients*10 {
		t.Fatalf("only %d operations recorded; the history proves little", h.Len())
	}
	if err := raftstoretest.CheckCounter(h, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d operations linearizable", h.Len())
}

// A linearizable read must not wait for a write that may never come. The
// leader's commit index often ends with an entry the state machine never
// sees (the no-op of an election, the barrier of WaitReady, a membership
// change), so waiting until the state machine's applied index reaches it
// waits for the next commit.
func TestLinearizableReadOnAnIdleClusterReturns(t *testing.T) {
	c := raftstoretest.NewCluster(t, 3)
	l := c.Leader(t) // WaitReady: a barrier entry is the newest one
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := l.ReadBarrier(ctx, raftstore.Linearizable, 0); err != nil {
		t.Fatalf("linearizable read on an idle cluster: %v; leader status %+v", err, l.Status())
	}
}

// TestTransferLeadershipHandsItToTheOtherVoterAndBack: a leader's transfer
// returns once it knows the other voter leads, in a later term, with every
// commit kept, and that voter's transfer makes the first lead again; a
// follower's transfer and a lone voter's are refused and change nothing.
func TestTransferLeadershipHandsItToTheOtherVoterAndBack(t *testing.T) {
	alone := raftstoretest.NewCluster(t, 1)
	if _, err := alone.Leader(t).TransferLeadership(context.Background()); !errors.Is(err, raftstore.ErrNoOtherVoter) {
		t.Fatalf("a lone voter's transfer: %v; want ErrNoOtherVoter", err)
	}
	c := raftstoretest.NewCluster(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	first := c.Leader(t)
	if _, err := c.Commit(ctx, increment("c", 1, "k", 1), time.Second); err != nil {
		t.Fatal(err)
	}
	other := c.Followers()[0]
	if _, err := other.TransferLeadership(ctx); !errors.Is(err, raftstore.ErrNotLeader) {
		t.Fatalf("a follower's transfer: %v; want ErrNotLeader", err)
	}
	if !first.IsLeader() {
		t.Fatalf("a follower's refused transfer moved leadership")
	}
	for i, from := range []*raftstore.Store{first, other} {
		to := []*raftstore.Store{other, first}[i]
		term := from.Term()
		got, err := from.TransferLeadership(ctx)
		if err != nil {
			t.Fatalf("transfer %d from %s: %v", i+1, from.NodeID(), err)
		}
		if got != to.NodeID() || from.IsLeader() {
			t.Fatalf("transfer %d from %s: returned %q, still leading %t; want %s", i+1, from.NodeID(), got, from.IsLeader(), to.NodeID())
		}
		if l := c.Leader(t); l != to || l.Term() <= term {
			t.Fatalf("after transfer %d from %s: %s leads in term %d; want %s in a term after %d", i+1, from.NodeID(), l.NodeID(), l.Term(), to.NodeID(), term)
		}
		if _, err := c.Commit(ctx, increment("c", uint64(i+2), "k", 1), time.Second); err != nil {
			t.Fatalf("commit after transfer %d: %v", i+1, err)
		}
	}
	if got := readCounter(t, c.Leader(t), "k"); got != 3 {
		t.Fatalf("counter %d after three commits across two transfers; want 3", got)
	}
}
