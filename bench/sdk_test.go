package bench

import (
	"context"
	"flag"
	"sync/atomic"
	"testing"

	stated "github.com/statedhq/stated/sdk/go"
)

// TestStatedBenchmarkRunsAgainstStatedRun runs the SDK benchmark's bodies
// for a few iterations each against a real single-node `stated run`, so
// that the harness cannot rot unnoticed: every row reports its metrics,
// and the commits it timed are in the daemon's state.
func TestStatedBenchmarkRunsAgainstStatedRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a stated process")
	}
	bt := flag.Lookup("test.benchtime")
	old := bt.Value.String()
	if err := bt.Value.Set("20x"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bt.Value.Set(old) })

	nodes := startCluster(t, 1)
	c := dial(t, leader(t, nodes))
	var key atomic.Uint64
	check := func(name string, r testing.BenchmarkResult, units ...string) {
		t.Helper()
		if r.N != 20 {
			t.Errorf("%s: ran %d iterations, want 20 (-benchtime 20x)", name, r.N)
		}
		for _, u := range units {
			if r.Extra[u] <= 0 {
				t.Errorf("%s: metric %s = %v, want > 0 (all: %v)", name, u, r.Extra[u], r.Extra)
			}
		}
	}
	check("commit=10/clients=4", testing.Benchmark(func(b *testing.B) { benchCommits(b, c, &key, 10, 4) }),
		"mutations/s", "p50-µs", "p99-µs", "p999-µs")
	for _, cons := range []stated.Consistency{stated.ConsistencyLocal, stated.ConsistencySession, stated.ConsistencyLinearizable} {
		check("read="+cons.String(), testing.Benchmark(func(b *testing.B) { benchReads(b, c, &key, cons) }), "reads/s", "p50-µs", "p99-µs")
	}
	check("rss", testing.Benchmark(func(b *testing.B) { benchRSS(b, nodes) }), "VmHWM-MB", "VmRSS-MB")

	// testing.Benchmark runs a body with b.N = 1 before b.N = 20: 21
	// commits of 10 puts under distinct keys.
	if got := key.Load(); got != 210 {
		t.Fatalf("the commit benchmark wrote %d keys, want 210", got)
	}
	st, err := c.NodeStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Counts.StateKeys < 210 {
		t.Fatalf("the daemon holds %d keys, want at least the 210 the benchmark committed", st.Counts.StateKeys)
	}
	for _, k := range []uint64{0, 209} {
		if _, found, err := c.Get(context.Background(), benchNamespace, benchKey(k), stated.WithConsistency(stated.ConsistencySession)); err != nil || !found {
			t.Fatalf("key %d the benchmark committed: found %v, %v", k, found, err)
		}
	}
}
