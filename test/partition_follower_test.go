//go:build linux

package test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestPartitionIsolatedFollowerClientRecovers cuts off a follower
// whose daemon serves an SDK client that commits steadily (each commit
// has 90 s; the SDK retries inside it), and sends a raw commit without a
// deadline through it. The raw commit must end (OPERATIONS: without a
// leader "commits and linearizable reads fail Unavailable"); after the
// cable is back the client must commit again promptly, and the follower
// must catch up. The raw commit and a raw linearizable read, forwarded to
// the leader on a connection without keepalive, hung until the cable was
// back (a review: not returned 20 s after the cut, 3 runs of 3); with the
// peer connection's keepalive they fail Unavailable within seconds.
func TestPartitionIsolatedFollowerClientRecovers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := newRPCluster(ctx, t)
	leader := leaderOf(ctx, t, c.nodes)
	f := (leader + 1) % 3
	cf := c.sdk(ctx, f)
	w := startRPWorkers(ctx, t, cf, "f", 2, 90*time.Second)
	time.Sleep(2 * time.Second)
	t.Logf("leader %s, follower %s; acked %d before the cut", c.nodes[leader].id, c.nodes[f].id, w.total())

	if err := c.lab.cut(f); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	rawDone := make(chan error, 1)
	go func() {
		client, closeConn := c.nodes[f].client()
		defer closeConn()
		_, err := client.Commit(ctx, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{
			Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, Namespace: "rp", Key: []byte("raw"), Delta: 1}}})
		rawDone <- err
	}()
	readDone := make(chan error, 1)
	go func() {
		client, closeConn := c.nodes[f].client()
		defer closeConn()
		_, err := client.Get(ctx, &statedv1.GetRequest{Namespace: "rp", Key: []byte("raw"), Kind: statedv1.Kind_KIND_COUNTER,
			Read: &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_LINEARIZABLE}})
		readDone <- err
	}()
	var rawErr error
	rawReturned := false
	select {
	case rawErr = <-rawDone:
		rawReturned = true
		t.Logf("raw commit without deadline through the cut-off follower returned after %v: %v (%v)", time.Since(cutAt), rawErr, status.Code(rawErr))
	case <-time.After(20 * time.Second):
		t.Errorf("a raw commit with no deadline through the cut-off follower had not returned %v after the cut (the follower has no leader; OPERATIONS says such commits fail Unavailable)", time.Since(cutAt))
	}
	if rawReturned && rawErr == nil {
		t.Errorf("the cut-off follower acknowledged a commit")
	}
	// The read's connection notices the cut by its own keepalive: a
	// moment after the commit's, not at the same instant (seen once in
	// CI: not returned when the commit did, returned within a second).
	readReturned := false
	select {
	case err := <-readDone:
		readReturned = true
		t.Logf("raw linearizable read without deadline through the cut-off follower returned after %v: %v", time.Since(cutAt), err)
	case <-time.After(10 * time.Second):
		t.Errorf("a raw linearizable read with no deadline through the cut-off follower had not returned %v after the cut", time.Since(cutAt))
	}
	ackedAtHeal := w.total()
	t.Logf("acked %d when the cable goes back, %v after the cut", ackedAtHeal, time.Since(cutAt))
	if err := c.lab.plug(f); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	var recovered time.Duration
	for i := 0; i < 900; i++ { // 90 s
		if w.total() > ackedAtHeal+5 {
			recovered = time.Since(healed)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !rawReturned {
		select {
		case rawErr = <-rawDone:
			t.Logf("raw commit without deadline returned %v after the heal: %v", time.Since(healed), rawErr)
		case <-time.After(time.Second):
			t.Logf("raw commit without deadline still had not returned %v after the heal", time.Since(healed))
		}
	}
	if !readReturned {
		select {
		case err := <-readDone:
			t.Logf("raw linearizable read without deadline returned %v after the heal: %v", time.Since(healed), err)
		case <-time.After(time.Second):
			t.Logf("raw linearizable read without deadline still had not returned %v after the heal", time.Since(healed))
		}
	}
	if recovered == 0 {
		t.Errorf("the follower's client acknowledged nothing within 90 s of the heal")
	} else {
		t.Logf("the follower's client commits again %v after the heal", recovered)
		if recovered > 10*time.Second {
			t.Errorf("the follower's client took %v after the heal to commit again", recovered)
		}
	}
	time.Sleep(2 * time.Second)
	w.halt()
	w.errs.Range(func(k, v any) bool { t.Logf("error %q", k); return true })
	t.Logf("acked %d, longest acknowledged commit %v", w.total(), time.Duration(w.maxLat.Load()))
	c.waitAllCaughtUp(ctx, w.index.Load(), 30*time.Second)
	for _, n := range c.nodes {
		w.check(ctx, t, n)
	}
}
