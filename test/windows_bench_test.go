package test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/raftstore/fsm"
	stated "github.com/statedhq/stated/sdk/go"
)

// The window-state benchmarks of issue 12 run a single in-process stated
// (real Raft, bbolt and Pebble in a temp dir) and drive it through the Go
// SDK over its unix socket, as a service would. Run them with:
//
//	go test ./test -run '^$' -bench 'BenchmarkWindowAdd|BenchmarkWindowCloseLatency/hint' -benchtime 3s
//	go test ./test -run '^$' -bench 'BenchmarkWindowCloseLatency/idle' -benchtime 20x
//	go test ./test -run TestWindowStateStaysFlatUnderSteadyLoad -v
//
// raftstore/fsm's BenchmarkWindowAdd applies the same adds to the state
// machine alone: its share of the figures here.

// windowBenchBase is where the benchmarks' event times start: a multiple
// of 100 hours, so every window size used here starts a window on it (the
// same base as raftstore/fsm's BenchmarkWindowAdd).
const windowBenchBase = int64(1_700_000_000_000) / (100 * 3_600_000) * (100 * 3_600_000)

// benchSDK starts a single-node daemon and returns an SDK client of its
// unix socket, closed before the daemon.
func benchSDK(b *testing.B) *stated.Client {
	b.Helper()
	d := daemontest.Start(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := stated.Dial(ctx, d.SocketPath(), stated.WithBlock())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

func windowKeys(n int) [][]byte {
	keys := make([][]byte, n)
	for k := range keys {
		keys[k] = fmt.Appendf(nil, "user-%06d", k)
	}
	return keys
}

// BenchmarkWindowAdd measures adds to a window namespace that holds
// 100,000 open windows, in commits of 1 and 100 adds from 1 and 16
// goroutines sharing one Client (one session, a lane per commit in
// flight). The namespaces and event times are those of raftstore/fsm's
// BenchmarkWindowAdd: tumbling hour windows, one open window for each of
// 100,000 keys; hopping hour windows advancing by a minute (size/advance =
// 60), 60 open windows for each of 1,667 keys, adds going to the newest
// one-minute slice, which exists. SumInt of 1 per add; no window closes
// during the run. ns/op is per add.
func BenchmarkWindowAdd(b *testing.B) {
	const hourMs, minuteMs = 3_600_000, 60_000
	for _, sh := range []struct {
		name string
		spec stated.WindowSpec
		keys int
		// at is the event time of the i-th add, in milliseconds.
		at func(i int64) int64
	}{
		{"tumbling", stated.WindowSpec{Shape: stated.Tumbling, Size: time.Hour}, 100_000,
			func(i int64) int64 { return windowBenchBase + i%hourMs }},
		{"hopping-60", stated.WindowSpec{Shape: stated.Hopping, Size: time.Hour, Advance: time.Minute}, 100_000 / 60,
			func(i int64) int64 { return windowBenchBase + 59*minuteMs + i%minuteMs }},
	} {
		b.Run(sh.name, func(b *testing.B) {
			ctx := context.Background()
			client := benchSDK(b)
			spec := sh.spec
			spec.Namespace, spec.Aggregate, spec.Emit, spec.Late = "bench", stated.SumInt, stated.EmitFinal, stated.LateDrop
			// The watermark stays 100 hours behind the records: nothing closes.
			spec.MaxOutOfOrder = 100 * time.Hour
			if err := client.DefineWindows(ctx, spec); err != nil {
				b.Fatal(err)
			}
			keys := windowKeys(sh.keys)
			// Open the windows: every key gets its window (hopping: its 60).
			for from := 0; from < len(keys); from += 1000 {
				if _, err := client.Update(ctx, func(t *stated.Txn) error {
					for _, k := range keys[from:min(from+1000, len(keys))] {
						t.AddWindow("bench", k, time.UnixMilli(windowBenchBase+59*minuteMs), stated.Int(1), stated.FromSource("t/0"))
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
			}
			open := openWindowsOf(ctx, b, client)
			if open < 100_000-60 {
				b.Fatalf("%d windows open after filling, want about 100,000", open)
			}
			for _, c := range []struct{ adds, conc int }{{1, 1}, {1, 16}, {100, 1}, {100, 16}} {
				b.Run(fmt.Sprintf("adds=%d/concurrency=%d", c.adds, c.conc), func(b *testing.B) {
					runWindowAdds(b, client, keys, sh.at, c.adds, c.conc)
				})
			}
			if now := openWindowsOf(ctx, b, client); now != open {
				b.Fatalf("open windows went from %d to %d during the run: the adds must go to open windows only", open, now)
			}
		})
	}
}

// openWindowsOf returns the open windows of the namespace "bench".
func openWindowsOf(ctx context.Context, b *testing.B, client *stated.Client) int64 {
	sts, err := client.WindowStatus(ctx)
	if err != nil || len(sts) != 1 {
		b.Fatalf("window status: %+v, %v", sts, err)
	}
	if sts[0].Pending != 0 || sts[0].LateDropped != 0 {
		b.Fatalf("windows closed or records were late: %+v", sts[0])
	}
	return sts[0].OpenWindows
}

// runWindowAdds has conc goroutines share b.N adds to "bench", perCommit
// to a commit, the i-th add to keys[i%len(keys)] at at(i), and reports
// adds/s and the commit latency percentiles.
func runWindowAdds(b *testing.B, client *stated.Client, keys [][]byte, at func(int64) int64, perCommit, conc int) {
	ctx := context.Background()
	var lat latencies
	var next atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			defer func() { lat.add(mine) }()
			for {
				to := next.Add(int64(perCommit))
				from := to - int64(perCommit)
				if from >= int64(b.N) {
					return
				}
				start := time.Now()
				res, err := client.Update(ctx, func(t *stated.Txn) error {
					for i := from; i < min(to, int64(b.N)); i++ {
						t.AddWindow("bench", keys[i%int64(len(keys))], time.UnixMilli(at(i)), stated.Int(1), stated.FromSource("t/0"))
					}
					return nil
				})
				if err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(start))
				for _, a := range res.Adds {
					if a.Late {
						b.Errorf("add at %v was late", a.EventTime)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "adds/s")
	lat.report(b)
}

// BenchmarkWindowCloseLatency measures how soon a window's result is out
// once the watermark passes its close time.
//
//   - hint/windows=N: N keys each have a window open (tumbling, one
//     second); a commit with a watermark hint past their close time is
//     timed until its response, which carries the N emissions. The
//     windows are opened and the emissions acknowledged with the timer
//     stopped. ns/op is the hint commit's latency.
//   - idle-tick: a window is held open by a source that then goes silent;
//     timed is the span from the moment it turns idle (its last commit's
//     response + the idle timeout) to the window's emission appearing in
//     the outbox (polled with Client.Emissions every 2 ms). The leader
//     checks for due ticks every second, so this is mostly the wait for
//     that check: about uniform over 0 to 1 s. Rounds start at points
//     spread over that second. Run it with -benchtime 20x.
func BenchmarkWindowCloseLatency(b *testing.B) {
	const sizeMs = 1000
	define := func(b *testing.B, client *stated.Client, spec stated.WindowSpec) {
		spec.Namespace, spec.Shape, spec.Size = "bench", stated.Tumbling, sizeMs*time.Millisecond
		spec.Aggregate, spec.Emit, spec.Late = stated.Count, stated.EmitFinal, stated.LateDrop
		if err := client.DefineWindows(context.Background(), spec); err != nil {
			b.Fatal(err)
		}
	}
	for _, n := range []int{1, 100, 10_000} {
		b.Run(fmt.Sprintf("hint/windows=%d", n), func(b *testing.B) {
			ctx := context.Background()
			client := benchSDK(b)
			// Records alone never close a window: only the hint does.
			define(b, client, stated.WindowSpec{MaxOutOfOrder: 100 * time.Hour})
			keys := windowKeys(n)
			var lat latencies
			d := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				start := windowBenchBase + int64(i)*sizeMs
				for from := 0; from < n; from += 1000 {
					if _, err := client.Update(ctx, func(t *stated.Txn) error {
						for _, k := range keys[from:min(from+1000, n)] {
							t.AddWindow("bench", k, time.UnixMilli(start), stated.NoValue(), stated.FromSource("s"))
						}
						return nil
					}); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				t0 := time.Now()
				res, err := client.Update(ctx, func(t *stated.Txn) error {
					t.AdvanceWatermark("bench", "s", time.UnixMilli(start+sizeMs))
					return nil
				})
				el := time.Since(t0)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				if res.Duplicate {
					// An attempt ran past the SDK's attempt timeout (seen
					// under -race) and its retry found it applied: the
					// emissions wait in the outbox.
					res.Emissions = pendingEmissions(ctx, b, client, n)
				}
				if len(res.Emissions) != n || res.Emissions[0].Start.UnixMilli() != start {
					b.Fatalf("hint to %d: %d emissions, want %d of windows starting at %d", start+sizeMs, len(res.Emissions), n, start)
				}
				d = append(d, el)
				if _, err := client.Update(ctx, func(t *stated.Txn) error {
					t.Ack(res.Emissions...)
					return nil
				}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "emissions/s")
			lat.add(d)
			lat.report(b)
		})
	}
	b.Run("idle-tick", func(b *testing.B) {
		ctx := context.Background()
		client := benchSDK(b)
		const idle = 500 * time.Millisecond
		define(b, client, stated.WindowSpec{IdleTimeout: idle})
		var lat latencies
		d := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := range b.N {
			// Source "a" holds the namespace's watermark at start, "b" is
			// past the window's close: once both are idle, the watermark
			// is b's and the window closes.
			start := windowBenchBase + int64(i)*2*sizeMs
			// Each round would start right after the tick that closed the
			// last window, so that every round went idle at the same point
			// of the leader's 1 s tick period: a delay spread over the
			// period (timer stopped) samples all of it.
			b.StopTimer()
			time.Sleep(time.Duration(i*389%1000) * time.Millisecond)
			b.StartTimer()
			if _, err := client.Update(ctx, func(t *stated.Txn) error {
				t.AddWindow("bench", []byte("k"), time.UnixMilli(start), stated.NoValue(), stated.FromSource("a"))
				t.AdvanceWatermark("bench", "b", time.UnixMilli(start+sizeMs))
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			idleAt := time.Now().Add(idle)
			deadline := idleAt.Add(30 * time.Second)
			var ems []stated.Emission
			for {
				var err error
				if ems, err = client.Emissions(ctx, "bench", 0, 10); err != nil {
					b.Fatal(err)
				}
				if len(ems) > 0 {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("window at %d not closed 30 s after its sources went idle", start)
				}
				time.Sleep(2 * time.Millisecond)
			}
			d = append(d, time.Since(idleAt))
			if len(ems) != 1 || ems[0].Start.UnixMilli() != start {
				b.Fatalf("outbox holds %+v, want the window at %d", ems, start)
			}
			if _, err := client.Update(ctx, func(t *stated.Txn) error {
				t.Ack(ems...)
				return nil
			}); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		lat.add(d)
		lat.report(b)
		b.ReportMetric(float64(slices.Min(d).Microseconds()), "min-µs")
		b.ReportMetric(float64(slices.Max(d).Microseconds()), "max-µs")
	})
}

// pendingEmissions reads up to n pending emissions of "bench".
func pendingEmissions(ctx context.Context, b *testing.B, client *stated.Client, n int) []stated.Emission {
	var out []stated.Emission
	for len(out) < n {
		after := uint64(0)
		if len(out) > 0 {
			after = out[len(out)-1].ID
		}
		ems, err := client.Emissions(ctx, "bench", after, min(n-len(out), 10_000))
		if err != nil {
			b.Fatal(err)
		}
		if len(ems) == 0 {
			break
		}
		out = append(out, ems...)
	}
	return out
}

// TestWindowStateStaysFlatUnderSteadyLoad runs a steady stream of adds
// whose event time moves on 100 ms per commit (100 keys, tumbling 1 s
// windows, 10 s retention, records up to 200 ms out of order), each commit
// acknowledging the emissions of the one before, as a service does. It
// samples the window state as it goes: open windows and pending emissions
// (NodeStatus), the windows the daemon still stores (open and retained
// closed ones, read key by key with Client.Windows), and the window
// records in Pebble itself (windowRecordsOnDisk). Expiry must keep up:
// however long the stream, a key stores no more windows than its
// retention and one segment hold, none that started before that, the data
// records stay within that bound, and the outbox holds no more than a
// commit's closings.
func TestWindowStateStaysFlatUnderSteadyLoad(t *testing.T) {
	t.Parallel()
	skipLong(t)
	_, client, d := sdkSetup(t)
	// Longer than sdkSetup's bound: under -race the stream takes a minute.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const (
		keys, commits, stepMs = 100, 1503, 100
		sizeMs, retentionMs   = 1000, 10_000
		oooMs                 = 200
	)
	// The segment width is max(retention/2, 1 s); a segment is dropped
	// once the watermark is a retention past its end, so a key keeps at
	// most (retention + segment) / size + 2 windows (the open one and one
	// straddling the cut).
	const segmentMs = retentionMs / 2
	const perKeyBound = (retentionMs+segmentMs)/sizeMs + 2
	must(t, client.DefineWindows(ctx, stated.WindowSpec{
		Namespace: "flat", Shape: stated.Tumbling, Size: sizeMs * time.Millisecond, Retention: retentionMs * time.Millisecond,
		MaxOutOfOrder: oooMs * time.Millisecond, Aggregate: stated.SumInt, Emit: stated.EmitFinal, Late: stated.LateDrop,
	}))
	ks := windowKeys(keys)
	type sample struct {
		commits, created, open, pending, stored int64
		wm, earliest                            int64
		disk                                    windowDisk
	}
	var got []sample
	var prev []stated.Emission
	var closed int64
	take := func(c int) {
		st, err := client.NodeStatus(ctx)
		must(t, err)
		ws, err := client.WindowStatus(ctx)
		must(t, err)
		s := sample{commits: int64(c), open: int64(st.Counts.OpenWindows), pending: int64(st.Counts.PendingEmissions),
			wm: ws[0].Watermark.UnixMilli(), earliest: -1}
		s.created = ws[0].OpenWindows + closed
		for _, k := range ks {
			w, err := client.Windows(ctx, "flat", k, time.Time{}, time.Time{})
			must(t, err)
			if len(w) > perKeyBound {
				t.Errorf("after %d commits key %s stores %d windows, more than %d", c, k, len(w), perKeyBound)
			}
			s.stored += int64(len(w))
			if len(w) > 0 && (s.earliest < 0 || w[0].Start.UnixMilli() < s.earliest) {
				s.earliest = w[0].Start.UnixMilli()
			}
		}
		if limit := s.wm - retentionMs - 2*segmentMs; s.earliest >= 0 && s.earliest < limit {
			t.Errorf("after %d commits a window starting at %d is still stored, %d ms before the watermark %d",
				c, s.earliest, s.wm-s.earliest, s.wm)
		}
		s.disk = windowRecordsOnDisk(ctx, t, d)
		if s.disk.data > keys*perKeyBound {
			t.Errorf("after %d commits the state holds %d window data records, more than %d", c, s.disk.data, keys*perKeyBound)
		}
		if s.open > 2*keys || s.pending > 2*keys {
			t.Errorf("after %d commits: %d open windows, %d pending emissions; want at most %d of each", c, s.open, s.pending, 2*keys)
		}
		got = append(got, s)
	}
	for c := range commits {
		res, err := client.Update(ctx, func(tx *stated.Txn) error {
			tx.Ack(prev...)
			for k, key := range ks {
				at := windowBenchBase + int64(c)*stepMs - int64((k*13)%oooMs)
				tx.AddWindow("flat", key, time.UnixMilli(at), stated.Int(1), stated.FromSource("clicks/0"))
			}
			return nil
		})
		must(t, err)
		for _, a := range res.Adds {
			if a.Late {
				t.Fatalf("commit %d: add at %v late", c, a.EventTime)
			}
		}
		prev = res.Emissions
		closed += int64(len(prev))
		// Every 250 commits (25 s of event time), right after one that
		// closed windows (one in 10 does), so that the outbox holds its
		// emissions.
		if c >= 250 && c%250 == 2 {
			take(c + 1)
		}
	}
	t.Logf("%8s %8s %10s %6s %8s %8s %10s %8s %8s %8s %10s", "commits", "adds", "windows", "open", "pending", "stored", "stored/key",
		"data", "index", "outbox", "sst bytes")
	for _, s := range got {
		t.Logf("%8d %8d %10d %6d %8d %8d %10.1f %8d %8d %8d %10d", s.commits, s.commits*keys, s.created, s.open, s.pending, s.stored,
			float64(s.stored)/keys, s.disk.data, s.disk.index, s.disk.outbox, s.disk.sstBytes)
	}
	// Flat: the last sample stores no more than the first (which is past
	// the first retention: 250 commits are 25 s of event time), while the
	// windows created grew sixfold.
	first, last := got[0], got[len(got)-1]
	if first.wm-windowBenchBase < retentionMs+2*segmentMs {
		t.Fatalf("first sample at watermark +%d ms, before retention could drop anything", first.wm-windowBenchBase)
	}
	if last.stored > first.stored+keys || last.disk.data > first.disk.data+keys {
		t.Errorf("stored windows grew from %d to %d, data records from %d to %d", first.stored, last.stored, first.disk.data, last.disk.data)
	}
	if last.created < 5*first.created {
		t.Errorf("windows created: %d at the first sample, %d at the last", first.created, last.created)
	}
}

// windowDisk is what a local checkpoint of the state holds of window
// state: records under the window data, close index and outbox prefixes
// (0x0C, 0x0D, 0x0E, listed in docs/WINDOWS.md), and the bytes of all its
// tables.
type windowDisk struct {
	data, index, outbox, sstBytes int64
}

// windowRecordsOnDisk flushes d's memtable, makes a local checkpoint of
// its state (a checkpoint barrier through Raft, as the checkpoint
// coordinator does) and counts its window records in Pebble itself, so
// that records a query no longer shows (those of dropped segments) count
// until they are deleted.
func windowRecordsOnDisk(ctx context.Context, t *testing.T, d *daemon.Daemon) windowDisk {
	t.Helper()
	must(t, d.Store().Flush())
	cp, err := d.Store().Checkpoint(ctx)
	must(t, err)
	var out windowDisk
	files, err := os.ReadDir(cp.Dir)
	must(t, err)
	for _, f := range files {
		if strings.HasSuffix(f.Name(), ".sst") {
			fi, err := f.Info()
			must(t, err)
			out.sstBytes += fi.Size()
		}
	}
	opts := fsm.PebbleOptions()
	opts.ReadOnly, opts.ErrorIfNotExists = true, true
	db, err := pebble.Open(cp.Dir, opts)
	must(t, err)
	defer db.Close()
	for _, r := range []struct {
		prefix byte
		n      *int64
	}{{0x0C, &out.data}, {0x0D, &out.index}, {0x0E, &out.outbox}} {
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{r.prefix}, UpperBound: []byte{r.prefix + 1}})
		must(t, err)
		for ok := it.First(); ok; ok = it.Next() {
			*r.n++
		}
		must(t, it.Close())
	}
	return out
}
