//go:build linux

package test

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

// TestPartitionClientRecoversAfterALongBlackhole black-holes the
// link between the leader and one follower (each drops the other's
// packets with iptables; the third node reaches both, so the leader keeps
// its majority) for 20 s while an SDK client commits through the
// follower's daemon, then heals it and measures how long until that
// client commits again: within 5 s of the follower naming its leader
// again (Raft's reconnect comes first). The follower's connection for
// forwarding to the leader had no keepalive: it stayed open through the
// blackhole, and calls forwarded on it waited for TCP's retransmission
// timer, backed off meanwhile, to fire again after the heal (a review
// measured 47 s after a 60 s blackhole, 12 s after 15 s).
func TestPartitionClientRecoversAfterALongBlackhole(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := newRPCluster(ctx, t)
	l := leaderOf(ctx, t, c.nodes)
	b := (l + 2) % 3
	w := startRPWorkers(ctx, t, c.sdk(ctx, b), "b", 2, 150*time.Second)
	time.Sleep(2 * time.Second)
	c.dropFrom(l, b)
	c.dropFrom(b, l)
	time.Sleep(18 * time.Second)
	if out, err := exec.Command("ip", "netns", "exec", c.lab.nodes[b], "ss", "-tnio", "dst", c.lab.addr(l)+":7420").CombinedOutput(); err == nil {
		t.Logf("follower's connections to the leader's gRPC port during the blackhole:\n%s", out)
	}
	time.Sleep(2 * time.Second)
	at := w.total()
	c.heal(l)
	c.heal(b)
	healed := time.Now()
	// The follower forwards to the leader it knows: Raft's own reconnect
	// (the leader's next dial to the follower: one in flight at the heal
	// gives up after a second plus the election timeout, longer under
	// load, and raftstore's transport test holds that bound) comes first,
	// and is not what this test is about. The bound is from the moment
	// the follower names its leader again.
	var recovered, known time.Duration
	for i := 0; i < 1200 && recovered == 0; i++ { // 120 s
		if known == 0 {
			if st, err := nodeStatus(ctx, c.nodes[b]); err == nil && st.LeaderId != "" {
				known = max(time.Since(healed), time.Nanosecond)
			}
		}
		if w.total() > at+5 {
			recovered = time.Since(healed)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st, err := nodeStatus(ctx, c.nodes[b]); err == nil {
		t.Logf("follower %s role %s leader %q after the heal; it named a leader %v after the heal", c.nodes[b].id, st.Role, st.LeaderId, known)
	}
	switch {
	case recovered == 0:
		t.Errorf("the follower's client committed nothing within 120 s of the heal")
	case known == 0 && recovered > 5*time.Second, known > 0 && recovered-known > 5*time.Second:
		t.Errorf("after a 20 s blackhole between leader and follower, the follower's client commits again only %v after the heal, %v after the follower named its leader", recovered, recovered-known)
	default:
		t.Logf("the follower's client commits again %v after the heal", recovered)
	}
	w.halt()
	w.errs.Range(func(k, v any) bool { t.Logf("error %q", k); return true })
	c.waitAllCaughtUp(ctx, w.index.Load(), 30*time.Second)
	for _, n := range c.nodes {
		w.check(ctx, t, n)
	}
}
