package stated_test

import (
	"context"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	stated "github.com/statedhq/stated/sdk/go"
)

// TestACommitMadeWhileTheDaemonIsDownGoesThroughSoonAfterItIsBack: a
// sidecar's daemon restarts (a crash, an upgrade) while its service goes
// on committing. The Client connects again within about
// DefaultReconnectBackoff of the daemon's return, and the commit it kept
// retrying through the outage goes through. With gRPC's own connection
// backoff (1 s growing 1.6-fold to two minutes) the Client's next attempt
// after a 30 s outage comes 36-50 s into it: the commit went through 14.2
// and 15.0 s after the daemon was back in two runs (now 0.2-0.5 s).
func TestACommitMadeWhileTheDaemonIsDownGoesThroughSoonAfterItIsBack(t *testing.T) {
	t.Parallel()
	const (
		outage = 30 * time.Second
		// bound is well above what the Client needs (the backoff's 1 s
		// plus jitter, then the Client's own retry backoff, up to 1 s)
		// and below what gRPC's default left it waiting.
		bound = 6 * time.Second
	)
	// The restarted node keeps its data dir, socket and Raft address.
	cfg := daemontest.Config(t, "node1")
	d1 := daemontest.Start(t, func(c *daemon.Config) { c.DataDir, c.SocketPath = cfg.DataDir, cfg.SocketPath })
	raftAddr := d1.Store().RaftAddr()
	same := func(c *daemon.Config) { c.DataDir, c.SocketPath, c.RaftAddr = cfg.DataDir, cfg.SocketPath, raftAddr }
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := stated.Dial(ctx, cfg.SocketPath, stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Txn().Put("ns", []byte("k"), []byte("before")).Commit(ctx); err != nil {
		t.Fatal(err)
	}

	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	type result struct {
		at  time.Time
		err error
	}
	committed := make(chan result, 1)
	go func() {
		// Retried by the Client (Unavailable) until the daemon is back.
		_, err := c.Txn().Put("ns", []byte("k"), []byte("during")).Commit(ctx)
		committed <- result{time.Now(), err}
	}()
	select {
	case r := <-committed:
		t.Fatalf("a commit while the daemon is down returned %v", r.err)
	case <-time.After(outage):
	}
	daemontest.Start(t, same)
	back := time.Now()
	r := <-committed
	if r.err != nil {
		t.Fatalf("the commit retried through the outage: %v", r.err)
	}
	t.Logf("the commit went through %v after the daemon was back", r.at.Sub(back).Round(time.Millisecond))
	if late := r.at.Sub(back); late > bound {
		t.Errorf("the commit retried through a %v outage went through %v after the daemon was back, want within %v", outage, late.Round(time.Millisecond), bound)
	}
	it, found, err := c.Get(ctx, "ns", []byte("k"), stated.WithConsistency(stated.ConsistencyLinearizable))
	if err != nil || !found || string(it.Value) != "during" {
		t.Errorf("after the restart k holds %q (found %v, %v), want \"during\"", it.Value, found, err)
	}
}
