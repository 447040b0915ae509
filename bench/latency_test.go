package bench

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// latencies collects per-operation latencies from parallel goroutines and
// reports their quantiles.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d []time.Duration) { l.mu.Lock(); l.d = append(l.d, d...); l.mu.Unlock() }

// quantile is the element at p×(n−1) of the sorted latencies, in µs.
func (l *latencies) quantile(p float64) float64 {
	slices.Sort(l.d)
	return float64(l.d[int(p*float64(len(l.d)-1))].Nanoseconds()) / 1e3
}

// report adds p50, p99 and, when withP999, p999 in µs to b's metrics.
func (l *latencies) report(b *testing.B, withP999 bool) {
	if len(l.d) == 0 {
		return
	}
	b.ReportMetric(l.quantile(0.50), "p50-µs")
	b.ReportMetric(l.quantile(0.99), "p99-µs")
	if withP999 {
		b.ReportMetric(l.quantile(0.999), "p999-µs")
	}
}

// parallel has exactly workers goroutines share b.N operations; op(w, i)
// runs operation i on worker w and its latency is recorded. It reports
// ops×unitsPerOp per second under unit ("mutations/s") and the latency
// quantiles of one op.
func parallel(b *testing.B, workers, unitsPerOp int, unit string, withP999 bool, op func(w, i int) error) {
	var lat latencies
	var mu sync.Mutex
	next := 0
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var mine []time.Duration
			defer func() { lat.add(mine) }()
			for {
				mu.Lock()
				i := next
				if i == b.N {
					mu.Unlock()
					return
				}
				next++
				mu.Unlock()
				start := time.Now()
				if err := op(w, i); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(start))
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if b.Failed() {
		return
	}
	b.ReportMetric(float64(b.N*unitsPerOp)/b.Elapsed().Seconds(), unit)
	lat.report(b, withP999)
}
