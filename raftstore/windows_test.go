package raftstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/fsm"
	"github.com/statedhq/stated/raftstore/raftstoretest"
)

// windowView renders everything a node's window queries show.
func windowView(t *testing.T, s *raftstore.Store, keys ...string) string {
	t.Helper()
	var b bytes.Buffer
	sts, err := s.WindowStatuses()
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range sts {
		fmt.Fprintf(&b, "%+v\n", st)
		ns := st.Spec.Namespace
		ems, err := s.Emissions(ns, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ems {
			fmt.Fprintf(&b, "emission %+v\n", e)
		}
		open, err := s.OpenWindows(ns, nil, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range open {
			fmt.Fprintf(&b, "open %+v\n", w)
		}
		for _, k := range keys {
			ws, err := s.Windows(ns, []byte(k), 0, command.MaxEventTime+1)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range ws {
				fmt.Fprintf(&b, "window %+v\n", w)
			}
		}
	}
	return b.String()
}

// sameWindowsEverywhere waits until every running node applied index and
// checks that they all show what want shows.
func sameWindowsEverywhere(t *testing.T, c *raftstoretest.Cluster, index uint64, want string, keys ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for _, s := range c.Running() {
		if _, err := s.ReadBarrier(ctx, raftstore.Session, index); err != nil {
			t.Fatal(err)
		}
		if got := windowView(t, s, keys...); got != want {
			t.Fatalf("node %s shows\n%s\nwant\n%s", s.NodeID(), got, want)
		}
	}
}

func clickAdd(src, key string, ts int64) command.WindowAdd {
	return command.WindowAdd{Namespace: "clicks", Source: src, Key: []byte(key), EventTimeMs: ts, Int: 1}
}

// windowWriter proposes a test's window commands the way a client does:
// through whichever node leads, commits in a session, and each one tried
// again when a leader change refuses it or loses its outcome. The test
// cluster's leader lease is 100 ms, and on a loaded machine a leader now
// and then hears from no follower for that long and steps down, as Raft
// should; a test that proposes once and fails on ErrNotLeader tests the
// machine's load. A retry of a commit that did apply is answered as a
// duplicate, without its add statuses and emissions: the writer then reads
// the emissions from the outbox (ids above the last one it saw), where
// they stay until acknowledged, as a client does.
type windowWriter struct {
	t       *testing.T
	c       *raftstoretest.Cluster
	ctx     context.Context
	ns      string
	client  string
	session uint64
	seq     uint64
	seen    uint64           // the highest emission id seen
	node    *raftstore.Store // the node that applied the last write
	index   uint64           // and its index
}

func newWindowWriter(ctx context.Context, t *testing.T, c *raftstoretest.Cluster, ns string) *windowWriter {
	return &windowWriter{t: t, c: c, ctx: ctx, ns: ns, client: "writer-" + ns}
}

// retry reports whether a proposal that failed with err may be tried
// again at the leader: leadership moved, or the attempt timed out while
// the test's own deadline holds.
func (w *windowWriter) retry(err error) bool {
	if errors.Is(err, raftstore.ErrNotLeader) || errors.Is(err, raftstore.ErrClosed) ||
		(errors.Is(err, context.DeadlineExceeded) && w.ctx.Err() == nil) {
		// Wait for the cluster to settle before the next try.
		select {
		case <-w.ctx.Done():
			return false
		case <-time.After(10 * time.Millisecond):
		}
		return true
	}
	return false
}

// propose runs call on the leader until it returns an error not worth
// retrying (nil included), and returns that error.
func (w *windowWriter) propose(call func(ctx context.Context, l *raftstore.Store) error) error {
	w.t.Helper()
	for {
		l := w.c.Leader(w.t)
		actx, cancel := context.WithTimeout(w.ctx, waitTimeout)
		err := call(actx, l)
		cancel()
		if !w.retry(err) {
			w.node = l
			return err
		}
		w.t.Logf("trying again after: %v", err)
	}
}

// commit commits cm in the writer's session and returns its outcome; on
// a duplicate, Adds is empty and Emissions come from the outbox.
func (w *windowWriter) commit(cm *command.Commit) raftstore.CommitOutcome {
	w.t.Helper()
	if w.session == 0 {
		id, err := w.c.OpenSession(w.ctx, w.client, waitTimeout)
		if err != nil {
			w.t.Fatal(err)
		}
		w.session = id
	}
	w.seq++
	cm.ClientID, cm.SessionID, cm.Seq = w.client, w.session, w.seq
	var out raftstore.CommitOutcome
	err := w.propose(func(ctx context.Context, l *raftstore.Store) error {
		var err error
		out, err = l.CommitOutcome(ctx, cm)
		return err
	})
	if err != nil {
		w.t.Fatalf("commit %d: %v", cm.Seq, err)
	}
	w.index = out.Index
	if out.Duplicate {
		if out.Emissions, err = w.node.Emissions(w.ns, w.seen, 0); err != nil {
			w.t.Fatal(err)
		}
	}
	w.saw(out.Emissions)
	return out
}

func (w *windowWriter) saw(ems []command.Emission) {
	for _, e := range ems {
		w.seen = max(w.seen, e.ID)
	}
}

// define defines a namespace. uncertain reports that an earlier attempt
// failed with its outcome unknown: it may have created the namespace, and
// then a retry reports created false.
func (w *windowWriter) define(spec command.WindowSpec) (created, uncertain bool, err error) {
	w.t.Helper()
	err = w.propose(func(ctx context.Context, l *raftstore.Store) error {
		var err error
		created, err = l.DefineWindows(ctx, spec)
		if errors.Is(err, raftstore.ErrNotLeader) || errors.Is(err, context.DeadlineExceeded) {
			uncertain = true
		}
		return err
	})
	return created, uncertain, err
}

// tick proposes a window tick if one is due, and reports whether it did.
func (w *windowWriter) tick() bool {
	w.t.Helper()
	var ticked bool
	err := w.propose(func(ctx context.Context, l *raftstore.Store) error {
		var err error
		ticked, err = l.TickWindows(ctx)
		return err
	})
	if err != nil {
		w.t.Fatal(err)
	}
	if ticked {
		w.index = w.node.AppliedIndex()
	}
	return ticked
}

func TestWindowsCloseIdenticallyOnEveryNodeAndKeepTheirWatermarkAcrossFailover(t *testing.T) {
	c := raftstoretest.NewCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 4*waitTimeout)
	defer cancel()
	w := newWindowWriter(ctx, t, c, "clicks")
	spec := command.WindowSpec{Namespace: "clicks", Shape: command.ShapeTumbling, SizeMs: 1000, GraceMs: 100,
		Aggregate: command.AggSumInt, Emit: command.EmitFinal, Late: command.LateReturn, IdleTimeoutMs: 1000}
	if created, uncertain, err := w.define(spec); err != nil || !(created || uncertain) {
		t.Fatalf("define: %v %v", created, err)
	}
	if created, _, err := w.define(spec); err != nil || created {
		t.Fatalf("identical redefinition: %v %v", created, err)
	}
	l := c.Leader(t)
	before := l.AppliedIndex()
	bad := spec
	bad.SizeMs = 0
	var fe *command.FieldError
	if _, err := l.DefineWindows(ctx, bad); !errors.As(err, &fe) || fe.Field != "size_ms" || l.AppliedIndex() != before {
		t.Fatalf("bad spec: %v (applied %d, was %d): refused before the log", err, l.AppliedIndex(), before)
	}
	other := spec
	other.GraceMs = 200
	var re *fsm.RejectError
	if _, _, err := w.define(other); !errors.As(err, &re) || re.Field != "grace_ms" {
		t.Fatalf("redefinition: %v", err)
	}

	out := w.commit(&command.Commit{WindowAdds: []command.WindowAdd{
		clickAdd("p0", "a", 100), clickAdd("p0", "b", 200), clickAdd("p1", "a", 900), clickAdd("p1", "b", 1500)}})
	if (!out.Duplicate && len(out.Adds) != 4) || len(out.Emissions) != 0 {
		t.Fatalf("commit: %+v", out)
	}
	// p0 moves past [0,1000)'s close; p1 (at 1500) too: both windows close.
	out = w.commit(&command.Commit{WindowAdds: []command.WindowAdd{clickAdd("p0", "a", 1200)}})
	if len(out.Emissions) != 2 || out.Emissions[0].ID != 1 || string(out.Emissions[0].Key) != "a" ||
		out.Emissions[0].Int != 2 || string(out.Emissions[1].Key) != "b" {
		t.Fatalf("closing commit: %+v", out)
	}
	view := windowView(t, w.node, "a", "b")
	sameWindowsEverywhere(t, c, w.index, view, "a", "b")

	// The leader dies; the new one keeps the watermark (1200) and the
	// emission ids.
	old := c.Index(c.Leader(t).NodeID())
	c.Stop(old)
	l = c.Leader(t)
	sts, err := l.WindowStatuses()
	if err != nil || len(sts) != 1 || sts[0].Watermark != 1200 || sts[0].Pending != 2 {
		t.Fatalf("after failover: %+v %v", sts, err)
	}
	sent := time.Now()
	out = w.commit(&command.Commit{WindowAdds: []command.WindowAdd{clickAdd("p1", "a", 500), clickAdd("p1", "a", 2200),
		clickAdd("p0", "b", 2300)}, Acks: []command.EmissionAck{{Namespace: "clicks", ID: 1}}})
	if (!out.Duplicate && out.Adds[0] != command.AddLateReturned) || len(out.Emissions) != 2 || out.Emissions[0].ID != 3 ||
		out.Emissions[1].ID != 4 || out.Emissions[0].StartMs != 1000 {
		t.Fatalf("after failover: %+v", out)
	}
	if sts, err := w.node.WindowStatuses(); err != nil || sts[0].LateReturned != 1 {
		t.Fatalf("after failover, one late record returned: %+v %v", sts, err)
	}
	// p1 (at 2200) falls silent: once it is idle, the leader's tick
	// closes [2000,3000) at p0's watermark. Until then (both sources were
	// active when that commit was proposed, at or after sent) no tick is
	// due. (An early tick, on a machine so slow that a second passed,
	// would only move the watermark to 2300, closing nothing.)
	if w.tick() && time.Since(sent) < time.Duration(spec.IdleTimeoutMs)*time.Millisecond {
		t.Fatal("a tick with nothing due proposed one")
	}
	out = w.commit(&command.Commit{WindowAdds: []command.WindowAdd{clickAdd("p0", "b", 3300)}})
	var ems []command.Emission
	deadline := time.Now().Add(waitTimeout)
	for {
		// The emissions come from the commit when p1 was idle already
		// when it applied (a slow machine), or else from a tick.
		if ems, err = w.node.Emissions("clicks", 4, 0); err != nil || len(ems) > 0 {
			break
		}
		if !w.tick() {
			if time.Now().After(deadline) {
				t.Fatal("no tick proposed after p1 went idle")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if err != nil || len(ems) != 2 || ems[0].StartMs != 2000 || ems[0].Watermark != 3300 {
		t.Fatalf("after the tick: %+v %v", ems, err)
	}
	w.saw(ems)
	c.Restart(t, old)
	w.commit(&command.Commit{WindowAdds: []command.WindowAdd{clickAdd("p0", "c", 3400)}})
	view = windowView(t, w.node, "a", "b", "c")
	sameWindowsEverywhere(t, c, w.index, view, "a", "b", "c")
}

func TestWindowsReachAFollowerThroughAnInstalledSnapshot(t *testing.T) {
	rec := &recorder{msgs: map[string][]logLine{}}
	c := raftstoretest.NewCluster(t, 3,
		raftstoretest.WithLogger(slog.New(recordHandler{r: rec})),
		raftstoretest.WithConfig(func(cfg *raftstore.Config) {
			cfg.SnapshotThreshold = 64
			cfg.TrailingLogs = 16
			cfg.SnapshotInterval = 100 * time.Millisecond
		}))
	ctx, cancel := context.WithTimeout(context.Background(), 4*waitTimeout)
	defer cancel()
	w := newWindowWriter(ctx, t, c, "clicks")
	if _, _, err := w.define(command.WindowSpec{Namespace: "clicks", Shape: command.ShapeHopping, SizeMs: 300, AdvanceMs: 100,
		Aggregate: command.AggCount, Emit: command.EmitFinal, Late: command.LateDrop}); err != nil {
		t.Fatal(err)
	}
	ts := int64(0)
	commit := func(n int) {
		t.Helper()
		for range n {
			ts += 37
			w.commit(&command.Commit{WindowAdds: []command.WindowAdd{clickAdd("", fmt.Sprint("k", ts%5), ts)}})
		}
	}
	commit(40)
	f, id, _ := wipeFollowerBehindASnapshot(t, c, commit, 120)
	c.Restart(t, f)
	if !rec.waitLogged(id, "Installed remote snapshot") {
		t.Errorf("%s caught up without installing a snapshot", id)
	}
	commit(5)
	keys := []string{"k0", "k1", "k2", "k3", "k4"}
	sameWindowsEverywhere(t, c, w.index, windowView(t, w.node, keys...), keys...)
	if sts, _ := c.Node(f).WindowStatuses(); len(sts) != 1 || sts[0].Watermark != ts || sts[0].Pending == 0 {
		t.Fatalf("rejoined node's windows: %+v", sts)
	}
}
