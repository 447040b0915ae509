package bench

import (
	"context"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkLeaderStop measures what a rolling restart costs the services
// beside the other nodes: three `stated run` processes, a Client on a
// follower's socket committing single counter adds back to back (clients
// goroutines), and the leader stopped: signal=TERM as Kubernetes or podman
// stop a pod (the leader hands leadership over before it goes),
// signal=KILL as a crash, the reference (the others elect a leader once
// their heartbeat timeout passes). gap-ms is the longest wait between two
// acknowledged commits from the signal on (the commits the stop held up
// waited that long); exit-ms is how long the stopped process took to
// exit; gap-ms ends once commits flow again, at most 10 s after the
// signal. Each iteration starts a new cluster; run with -benchtime 1x and
// -count for medians.
func BenchmarkLeaderStop(b *testing.B) {
	for _, s := range []struct {
		name string
		sig  syscall.Signal
	}{{"TERM", syscall.SIGTERM}, {"KILL", syscall.SIGKILL}} {
		b.Run("signal="+s.name, func(b *testing.B) { benchLeaderStop(b, s.sig) })
	}
}

func benchLeaderStop(b *testing.B, sig syscall.Signal) {
	const clients = 4
	var gaps, exits []float64
	for range b.N {
		b.StopTimer()
		nodes := startCluster(b, 3)
		lead := leader(b, nodes)
		follower := otherThan(nodes, lead)
		c := dial(b, follower)
		ctx, stop := context.WithCancel(context.Background())
		var (
			mu       sync.Mutex
			last     time.Time // the newest acknowledgement
			signaled time.Time
			gap      time.Duration // the longest since the signal
			acked    int
		)
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				for ctx.Err() == nil {
					cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					_, err := c.Txn().CounterAdd(benchNamespace, []byte("stop"), 1).Commit(cctx)
					cancel()
					if err != nil {
						if ctx.Err() == nil {
							b.Errorf("commit: %v", err)
						}
						return
					}
					now := time.Now()
					mu.Lock()
					if !signaled.IsZero() {
						from := last
						if from.Before(signaled) {
							from = signaled
						}
						gap = max(gap, now.Sub(from))
						acked++
					}
					last = now
					mu.Unlock()
				}
			})
		}
		time.Sleep(2 * time.Second) // commits flow before the stop
		b.StartTimer()
		mu.Lock()
		signaled = time.Now()
		mu.Unlock()
		if err := lead.cmd.Process.Signal(sig); err != nil {
			b.Fatal(err)
		}
		select {
		case <-lead.done:
		case <-time.After(30 * time.Second):
			b.Fatalf("%s did not exit within 30 s of %v:\n%s", lead.id, sig, lead.logs)
		}
		exit := time.Since(signaled)
		lead.cmd = nil
		// Commits flow again once 200 more were acknowledged, or 10 s on.
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			mu.Lock()
			n := acked
			mu.Unlock()
			if n >= 200 {
				break
			}
		}
		b.StopTimer()
		stop()
		wg.Wait()
		mu.Lock()
		if acked == 0 {
			gap = time.Since(signaled)
		}
		gaps, exits = append(gaps, float64(gap)/1e6), append(exits, float64(exit)/1e6)
		mu.Unlock()
		for _, nd := range nodes {
			nd.kill()
		}
	}
	b.ReportMetric(median(gaps), "gap-ms")
	b.ReportMetric(median(exits), "exit-ms")
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	return s[len(s)/2]
}
