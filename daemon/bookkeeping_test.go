package daemon_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/internal/testenv"
	stated "github.com/statedhq/stated/sdk/go"
)

// TestBookkeepingStaysBoundedUnderSustainedCommits commits at full rate
// from clients that come and go (every client a session, every commit in
// a session, a third of them with a short TTL) and checks what the state
// holds besides the data: once the load stops, idle sessions and expired
// entries are deleted within a few expiry intervals, whatever the rate was.
// Before sessions, every commit left a retry record and an index record
// for an hour, and expiry deleted at most 200 entries a second.
func TestBookkeepingStaysBoundedUnderSustainedCommits(t *testing.T) {
	d := daemontest.Start(t, func(c *daemon.Config) {
		c.ExpiryInterval = 100 * time.Millisecond
		c.SessionIdleTimeout = time.Second
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const (
		workers      = 8
		clientsEach  = 5
		ttl          = 300 * time.Millisecond
		keysInFlight = 64 // per client, so that the state's own size is bounded too
	)
	commitsEach := 400 // per client: 8 × 5 × 400 = 16,000 commits
	if testenv.Race {
		// Under the race detector, beside the CI's other packages, the
		// 16,000 commits took more than the 2 minutes: 6,000 still turn
		// each client's session over many times.
		commitsEach = 150
	}
	var committed atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for cl := range clientsEach {
				c, err := stated.Dial(ctx, d.SocketPath(), stated.WithClientID(fmt.Sprintf("w%d-c%d", w, cl)))
				if err != nil {
					t.Error(err)
					return
				}
				for i := range commitsEach {
					txn := c.Txn().CounterAdd("load", []byte(fmt.Sprint("w", w)), 1)
					if i%3 == 0 {
						txn.Put("ttl", []byte(fmt.Sprint(w, "/", i%keysInFlight)), []byte("v"), stated.WithTTL(ttl))
					}
					if _, err := txn.Commit(ctx); err != nil {
						t.Error(err)
						c.Close()
						return
					}
					committed.Add(1)
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	probe, err := stated.Dial(ctx, d.SocketPath(), stated.WithLazySession())
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	st, err := probe.NodeStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after %d commits: %+v", committed.Load(), st.Counts)
	// One session per client at most, one lane per client (each committed
	// one at a time), and no per-commit record at all.
	if st.Counts.Sessions > workers*clientsEach || st.Counts.SessionLanes > workers*clientsEach || st.Counts.LegacyRetryRecords != 0 {
		t.Fatalf("bookkeeping after the load: %+v", st.Counts)
	}
	// Everything idle or expired goes: the sessions after their 1s idle
	// timeout, the TTL entries after 300ms; the sweep runs every 100ms.
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err = probe.NodeStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c := st.Counts
		if c.Sessions == 0 && c.SessionLanes == 0 && c.TTLPending == 0 && c.StateKeys == workers {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bookkeeping not reclaimed 20s after the load: %+v (want no session, no TTL entry, the %d counters)", c, workers)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for w := range workers {
		n, err := probe.GetCounter(ctx, "load", []byte(fmt.Sprint("w", w)))
		if err != nil || n != int64(clientsEach*commitsEach) {
			t.Fatalf("counter w%d = %d, %v; want %d", w, n, err, clientsEach*commitsEach)
		}
	}
}
