//go:build linux

package test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// TestPartitionExactlyOnceAcrossCutsAsymmetricDropsAndFlaps commits
// counter adds through SDK clients on a follower's daemon and on the
// leader's daemon while the follower is cut off, while answers from the
// leader to the follower are dropped (the forwarded commit reaches the
// leader, its answer never comes back), while the follower's packets to
// the leader are dropped, and while the follower's and then the leader's
// cable flaps. Each commit has 60 s to finish (the SDK retries inside
// it). Afterwards every node must hold every acknowledged commit once.
func TestPartitionExactlyOnceAcrossCutsAsymmetricDropsAndFlaps(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	c := newRPCluster(ctx, t)
	leader := leaderOf(ctx, t, c.nodes)
	f := (leader + 1) % 3
	t.Logf("leader %s, follower under test %s", c.nodes[leader].id, c.nodes[f].id)
	cf := c.sdk(ctx, f)
	cl := c.sdk(ctx, leader)
	wf := startRPWorkers(ctx, t, cf, "f", 3, 60*time.Second)
	wl := startRPWorkers(ctx, t, cl, "l", 2, 60*time.Second)
	progress := func(what string) {
		t.Logf("%s: follower client acked %d, leader client acked %d", what, wf.total(), wl.total())
	}
	time.Sleep(2 * time.Second)
	progress("warm-up")

	// 1. Full cut of the follower.
	if err := c.lab.cut(f); err != nil {
		t.Fatal(err)
	}
	time.Sleep(8 * time.Second)
	progress("follower cut 8s")
	if err := c.lab.plug(f); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	progress("plugged 5s")

	// 2. The follower drops what comes from the leader: forwarded commits
	// arrive at the leader, their answers are lost.
	leader = leaderOf(ctx, t, c.nodes)
	if leader == f {
		t.Logf("the follower under test leads now; dropping at another follower instead")
	}
	c.dropFrom(f, leader)
	time.Sleep(8 * time.Second)
	progress("follower drops leader's packets 8s")
	c.heal(f)
	time.Sleep(5 * time.Second)
	progress("healed 5s")

	// 3. The leader drops what comes from the follower.
	leader = leaderOf(ctx, t, c.nodes)
	c.dropFrom(leader, f)
	time.Sleep(8 * time.Second)
	progress("leader drops follower's packets 8s")
	c.heal(leader)
	time.Sleep(5 * time.Second)
	progress("healed 5s")

	// 4. The follower's cable flaps, then the leader's.
	for _, who := range []string{"follower", "leader"} {
		victim := f
		if who == "leader" {
			victim = leaderOf(ctx, t, c.nodes)
		}
		for i := 0; i < 12; i++ {
			if err := c.lab.cut(victim); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Duration(200+100*(i%5)) * time.Millisecond)
			if err := c.lab.plug(victim); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Duration(300+200*(i%3)) * time.Millisecond)
		}
		progress(who + " flapped 12 times")
		time.Sleep(3 * time.Second)
	}

	// Let everything finish: commits in retry get their 60 s.
	before := wf.total() + wl.total()
	time.Sleep(5 * time.Second)
	progress("after the last heal")
	if after := wf.total() + wl.total(); after == before {
		t.Errorf("no commit acknowledged in the 5 s after every fault healed")
	}
	wf.halt()
	wl.halt()
	var unknown atomic.Int64
	for _, w := range []*rpWorkers{wf, wl} {
		w.errs.Range(func(k, v any) bool {
			t.Logf("workers %s: error %q x%d", w.prefix, k, v.(*atomic.Int64).Load())
			unknown.Add(v.(*atomic.Int64).Load())
			return true
		})
		t.Logf("workers %s: acked %d, duplicates answered %d, longest acknowledged commit %v", w.prefix, w.total(), w.dups.Load(), time.Duration(w.maxLat.Load()))
	}
	if unknown.Load() > 0 {
		t.Errorf("%d commits failed within their 60 s although every fault lasted at most 8 s", unknown.Load())
	}
	idx := max(wf.index.Load(), wl.index.Load())
	c.waitAllCaughtUp(ctx, idx, 30*time.Second)
	for _, n := range c.nodes {
		wf.check(ctx, t, n)
		wl.check(ctx, t, n)
	}
}
