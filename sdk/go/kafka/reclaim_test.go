package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	stated "github.com/statedhq/stated/sdk/go"
)

// TestReclaimFencedAfterDefaultsPastTheSessionTimeout: the default delay
// before a fenced partition is claimed again is twice the group's session
// timeout (90 s with franz-go's default of 45 s), at least 1 minute, so
// that a zombie has learned it is out of the group before its partition
// is claimed back; a delay set in Config is kept.
func TestReclaimFencedAfterDefaultsPastTheSessionTimeout(t *testing.T) {
	c, err := stated.Dial(context.Background(), "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		set  time.Duration
		opts []kgo.Opt
		want time.Duration
	}{
		{0, nil, 90 * time.Second},
		{0, []kgo.Opt{kgo.SessionTimeout(90 * time.Second)}, 3 * time.Minute},
		{0, []kgo.Opt{kgo.SessionTimeout(10 * time.Second)}, time.Minute},
		{5 * time.Second, []kgo.Opt{kgo.SessionTimeout(90 * time.Second)}, 5 * time.Second},
		{-1, nil, -1},
	} {
		p, err := New(Config{State: c, Group: "g", Topics: []string{"t"}, ReclaimFencedAfter: tc.set,
			KafkaOptions: append([]kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, tc.opts...),
			Handler:      func(context.Context, *stated.Txn, *kgo.Record) error { return nil }})
		if err != nil {
			t.Fatal(err)
		}
		got := p.cfg.ReclaimFencedAfter
		p.close()
		if got != tc.want {
			t.Errorf("ReclaimFencedAfter %v with %d options: %v, want %v", tc.set, len(tc.opts), got, tc.want)
		}
	}
}
