package raftstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"

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

func TestWindowsCloseIdenticallyOnEveryNodeAndKeepTheirWatermarkAcrossFailover(t *testing.T) {
	c := raftstoretest.NewCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 4*waitTimeout)
	defer cancel()
	l := c.Leader(t)
	spec := command.WindowSpec{Namespace: "clicks", Shape: command.ShapeTumbling, SizeMs: 1000, GraceMs: 100,
		Aggregate: command.AggSumInt, Emit: command.EmitFinal, Late: command.LateReturn, IdleTimeoutMs: 1000}
	if created, err := l.DefineWindows(ctx, spec); err != nil || !created {
		t.Fatalf("define: %v %v", created, err)
	}
	if created, err := l.DefineWindows(ctx, spec); err != nil || created {
		t.Fatalf("identical redefinition: %v %v", created, err)
	}
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
	if _, err := l.DefineWindows(ctx, other); !errors.As(err, &re) || re.Field != "grace_ms" {
		t.Fatalf("redefinition: %v", err)
	}

	out, err := l.CommitOutcome(ctx, &command.Commit{WindowAdds: []command.WindowAdd{
		clickAdd("p0", "a", 100), clickAdd("p0", "b", 200), clickAdd("p1", "a", 900), clickAdd("p1", "b", 1500)}})
	if err != nil || len(out.Adds) != 4 || len(out.Emissions) != 0 {
		t.Fatalf("commit: %+v %v", out, err)
	}
	// p0 moves past [0,1000)'s close; p1 (at 1500) too: both windows close.
	out, err = l.CommitOutcome(ctx, &command.Commit{WindowAdds: []command.WindowAdd{clickAdd("p0", "a", 1200)}})
	if err != nil || len(out.Emissions) != 2 || out.Emissions[0].ID != 1 || string(out.Emissions[0].Key) != "a" ||
		out.Emissions[0].Int != 2 || string(out.Emissions[1].Key) != "b" {
		t.Fatalf("closing commit: %+v %v", out, err)
	}
	view := windowView(t, l, "a", "b")
	sameWindowsEverywhere(t, c, out.Index, view, "a", "b")

	// The leader dies; the new one keeps the watermark (1200) and the
	// emission ids.
	old := c.Index(l.NodeID())
	c.Stop(old)
	l = c.Leader(t)
	sts, err := l.WindowStatuses()
	if err != nil || len(sts) != 1 || sts[0].Watermark != 1200 || sts[0].Pending != 2 {
		t.Fatalf("after failover: %+v %v", sts, err)
	}
	out, err = l.CommitOutcome(ctx, &command.Commit{WindowAdds: []command.WindowAdd{clickAdd("p1", "a", 500), clickAdd("p1", "a", 2200),
		clickAdd("p0", "b", 2300)}, Acks: []command.EmissionAck{{Namespace: "clicks", ID: 1}}})
	if err != nil || out.Adds[0] != command.AddLateReturned || len(out.Emissions) != 2 || out.Emissions[0].ID != 3 ||
		out.Emissions[1].ID != 4 || out.Emissions[0].StartMs != 1000 {
		t.Fatalf("after failover: %+v %v", out, err)
	}
	// p1 (at 2200) falls silent: once it is idle, the leader's tick
	// closes [2000,3000) at p0's watermark.
	if due, err := l.TickWindows(ctx); err != nil || due {
		t.Fatalf("a tick with nothing due: %v %v", due, err)
	}
	out, err = l.CommitOutcome(ctx, &command.Commit{WindowAdds: []command.WindowAdd{clickAdd("p0", "b", 3300)}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Emissions) == 0 { // else p1 was idle already when the commit applied (a slow machine)
		deadline := time.Now().Add(waitTimeout)
		for {
			ticked, err := l.TickWindows(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ticked {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no tick proposed after p1 went idle")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	ems, err := l.Emissions("clicks", 4, 0)
	if err != nil || len(ems) != 2 || ems[0].StartMs != 2000 || ems[0].Watermark != 3300 {
		t.Fatalf("after the tick: %+v %v", ems, err)
	}
	c.Restart(t, old)
	if _, err := l.CommitOutcome(ctx, &command.Commit{WindowAdds: []command.WindowAdd{clickAdd("p0", "c", 3400)}}); err != nil {
		t.Fatal(err)
	}
	view = windowView(t, l, "a", "b", "c")
	sameWindowsEverywhere(t, c, l.AppliedIndex(), view, "a", "b", "c")
}

func TestWindowsReachAFollowerThroughAnInstalledSnapshot(t *testing.T) {
	rec := &recorder{msgs: map[string][]string{}}
	c := raftstoretest.NewCluster(t, 3,
		raftstoretest.WithLogger(slog.New(recordHandler{r: rec})),
		raftstoretest.WithConfig(func(cfg *raftstore.Config) {
			cfg.SnapshotThreshold = 64
			cfg.TrailingLogs = 16
			cfg.SnapshotInterval = 100 * time.Millisecond
		}))
	ctx, cancel := context.WithTimeout(context.Background(), 4*waitTimeout)
	defer cancel()
	l := c.Leader(t)
	if _, err := l.DefineWindows(ctx, command.WindowSpec{Namespace: "clicks", Shape: command.ShapeHopping, SizeMs: 300, AdvanceMs: 100,
		Aggregate: command.AggCount, Emit: command.EmitFinal, Late: command.LateDrop}); err != nil {
		t.Fatal(err)
	}
	ts := int64(0)
	commit := func(n int) {
		t.Helper()
		for range n {
			ts += 37
			if _, err := c.Leader(t).CommitOutcome(ctx, &command.Commit{WindowAdds: []command.WindowAdd{
				clickAdd("", fmt.Sprint("k", ts%5), ts)}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	commit(40)
	f := c.Index(c.Followers()[0].NodeID())
	id := c.ID(f)
	c.Wipe(f)
	commit(120)
	l = c.Leader(t)
	if err := l.Snapshot(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		t.Fatal(err)
	}
	c.Restart(t, f)
	if !rec.logged(id, "Installed remote snapshot") {
		t.Errorf("%s caught up without installing a snapshot", id)
	}
	commit(5)
	keys := []string{"k0", "k1", "k2", "k3", "k4"}
	sameWindowsEverywhere(t, c, c.Leader(t).AppliedIndex(), windowView(t, c.Leader(t), keys...), keys...)
	if sts, _ := c.Node(f).WindowStatuses(); len(sts) != 1 || sts[0].Watermark != ts || sts[0].Pending == 0 {
		t.Fatalf("rejoined node's windows: %+v", sts)
	}
}
