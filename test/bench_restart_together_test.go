package test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkClusterRestartTogether measures what a StatefulSet's members
// restarted all at once (a node pool's reboot, `kubectl rollout restart`
// with podManagementPolicy Parallel) wait for: three `stated run`
// processes with one --join list of all members and --bootstrap-node-id
// n1, SIGKILLed together and started together, timed from the start to
// the last of them serving (its health check SERVING: a leader elected
// and the log replayed). Each member asks its join addresses which
// cluster they serve while the others start (they accept connections
// and answer nothing until they serve).
func BenchmarkClusterRestartTogether(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	nodes := make([]*node, 3)
	var join []string
	for i := range nodes {
		nodes[i] = newNamedNode(b, fmt.Sprint("n", i+1))
		join = append(join, nodes[i].grpcAddr)
	}
	for _, n := range nodes {
		_, port, err := net.SplitHostPort(n.raftAddr)
		if err != nil {
			b.Fatal(err)
		}
		n.args = []string{"--join", strings.Join(join, ","), "--bootstrap-node-id", "n1",
			"--advertise-raft-addr", "localhost:" + port, "--log-level", "warn"}
		n.start(ctx) // one after the other, as a StatefulSet first starts them
	}
	var all, first []time.Duration
	b.ResetTimer()
	for range b.N {
		for _, n := range nodes {
			n.kill()
		}
		t0 := time.Now()
		var mu sync.Mutex
		var serving []time.Duration
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Go(func() {
				n.start(ctx)
				mu.Lock()
				serving = append(serving, time.Since(t0))
				mu.Unlock()
			})
		}
		wg.Wait()
		slices.Sort(serving)
		first = append(first, serving[0])
		all = append(all, serving[len(serving)-1])
	}
	b.StopTimer()
	slices.Sort(all)
	slices.Sort(first)
	b.ReportMetric(all[len(all)/2].Seconds(), "all-serving-p50-s")
	b.ReportMetric(first[len(first)/2].Seconds(), "first-serving-p50-s")
	b.ReportMetric(all[len(all)-1].Seconds(), "all-serving-max-s")
}
