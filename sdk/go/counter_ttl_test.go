package stated_test

import (
	"context"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon/daemontest"
	stated "github.com/statedhq/stated/sdk/go"
)

// TestACounterAddWithoutATTLKeepsTheCountersExpiry: WithTTL and the
// proto's ttl_millis: zero means no expiry, except on a counter add,
// which keeps the counter's current expiry (as Redis INCR keeps a key's);
// an add with a TTL sets a new one.
func TestACounterAddWithoutATTLKeepsTheCountersExpiry(t *testing.T) {
	d := daemontest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := stated.Dial(ctx, d.SocketPath(), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := stated.NewCounter(c, "counters")
	expiry := func() time.Time {
		t.Helper()
		var ex time.Time
		for e, err := range c.Scan(ctx, stated.ScanQuery{Namespace: "counters", Kind: stated.KindCounter}) {
			if err != nil {
				t.Fatal(err)
			}
			ex = e.ExpiresAt
		}
		return ex
	}
	if err := n.Add(ctx, "k", 1, stated.WithTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	first := expiry()
	// The expiry is reported rounded up to the millisecond.
	if d := time.Until(first); d < 59*time.Minute || d > time.Hour+time.Millisecond {
		t.Fatalf("an add with a 1h TTL expires in %v", d)
	}
	if err := n.Add(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	if got := expiry(); !got.Equal(first) {
		t.Fatalf("after an add without a TTL the counter expires at %v, want its expiry %v kept", got, first)
	}
	if err := n.Add(ctx, "k", 1, stated.WithTTL(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if d := time.Until(expiry()); d < 119*time.Minute || d > 2*time.Hour+time.Millisecond {
		t.Fatalf("an add with a 2h TTL: the counter expires in %v", d)
	}
	if v, err := n.Get(ctx, "k"); err != nil || v != 3 {
		t.Fatalf("counter = %d, %v; want 3", v, err)
	}
}
