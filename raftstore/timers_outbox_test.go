package raftstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/fsm"
)

// TestACommitBatchRefusesOnlyItsCommitsWhoseTimersMeetAFullOutbox: the
// leader refuses a commit whose timers would fire into a full outbox
// before it proposes (fsm.CheckTimersOutbox); in a CommitBatch that
// commit alone is refused, and the others apply, each answered in its
// place.
func TestACommitBatchRefusesOnlyItsCommitsWhoseTimersMeetAFullOutbox(t *testing.T) {
	s := openStore(t, testConfig(t.TempDir()))
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.DefineWindows(ctx, command.WindowSpec{Namespace: "w", Shape: command.ShapeTumbling, SizeMs: 60_000,
		Aggregate: command.AggCount, Emit: command.EmitFinal, Late: command.LateDrop, MaxPendingEmissions: 2}); err != nil {
		t.Fatal(err)
	}
	wm := time.Now().Add(-time.Hour).UnixMilli()
	if _, _, err := s.Commit(ctx, &command.Commit{WindowAdds: []command.WindowAdd{{Namespace: "w", Source: "s", Key: []byte("u"), EventTimeMs: wm}}}); err != nil {
		t.Fatal(err)
	}
	timers := func(n int) *command.Commit {
		c := &command.Commit{}
		for i := range n {
			c.Timers = append(c.Timers, command.TimerOp{Namespace: "w", Key: fmt.Appendf(nil, "k%d", i), TimeMs: wm - 1})
		}
		return c
	}
	if _, _, err := s.Commit(ctx, timers(3)); err != nil { // fires 3: the outbox is full
		t.Fatal(err)
	}
	put := func(k string) *command.Commit {
		return &command.Commit{Mutations: []command.Mutation{{Op: command.OpPut, Namespace: "ns", Key: []byte(k), Value: []byte("v")}}}
	}
	outs, errs, err := s.CommitBatch(ctx, []*command.Commit{put("a"), timers(1), put("b")})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(errs[1], fsm.ErrOutboxFull) {
		t.Fatalf("the commit with a timer on a full outbox: %v, want ErrOutboxFull", errs[1])
	}
	for _, i := range []int{0, 2} {
		if errs[i] != nil || outs[i].Index == 0 {
			t.Fatalf("commit %d of the batch: %+v, %v; want it applied", i, outs[i], errs[i])
		}
	}
	for _, k := range []string{"a", "b"} {
		if _, ok, err := s.Get("ns", []byte(k), fsm.KindValue, nil); err != nil || !ok {
			t.Fatalf("key %s after the batch: %v %v", k, ok, err)
		}
	}
}
