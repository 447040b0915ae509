package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

// BenchmarkGrowth is the growth study of issue 15: how stated's costs move
// as its state grows. For each size in BENCH_GROWTH (keyed state, e.g.
// "1GB,10GB") and each count in BENCH_GROWTH_WINDOWS (open windows, e.g.
// "100000,1000000") it builds the state in a `stated run` process through
// the SDK (setup, not measured) and then measures, in this order: single
// and 100-mutation commits (BENCH_GROWTH_COMMIT_TIME each, default 5s), a
// full checkpoint to a file:// bucket, an incremental one after changing
// 1% of the keys (or windows), another after a second 1% once the first
// change's compactions settled, `stated restore` of that checkpoint into
// a new data dir, and a SIGKILL and restart until the first commit
// succeeds; the process's VmHWM/VmRSS throughout. GrowthTable (go run
// ./bench/report) puts the sizes side by side. Each size is built once:
// run it with -benchtime 1x (run.sh --growth does).
func BenchmarkGrowth(b *testing.B) {
	sizes, counts, err := growthKnobs()
	if err != nil {
		b.Fatal(err)
	}
	if len(sizes) == 0 && len(counts) == 0 {
		b.Skip("set BENCH_GROWTH (e.g. 1GB,10GB) and/or BENCH_GROWTH_WINDOWS (e.g. 100000,1000000), or run bash bench/run.sh --growth")
	}
	opts := growthOptions{commitTime: 5 * time.Second, quiet: 3 * time.Second}
	if s := os.Getenv("BENCH_GROWTH_COMMIT_TIME"); s != "" {
		if opts.commitTime, err = time.ParseDuration(s); err != nil || opts.commitTime <= 0 {
			b.Fatalf("BENCH_GROWTH_COMMIT_TIME=%q: want a positive duration such as 5s", s)
		}
	}
	for _, s := range sizes {
		b.Run("state="+s.label, func(b *testing.B) { runGrowth(b, keyedGrowth(s.bytes), opts) })
	}
	for _, n := range counts {
		b.Run(fmt.Sprintf("windows=%d", n), func(b *testing.B) { runGrowth(b, windowGrowth(n), opts) })
	}
}

type growthSize struct {
	label string
	bytes int64
}

// growthKnobs reads BENCH_GROWTH and BENCH_GROWTH_WINDOWS (comma-separated;
// unset or empty: none).
func growthKnobs() ([]growthSize, []int, error) {
	var sizes []growthSize
	var counts []int
	for _, f := range strings.FieldsFunc(os.Getenv("BENCH_GROWTH"), func(r rune) bool { return r == ',' || r == ' ' }) {
		n, err := ParseSize(f)
		if err != nil {
			return nil, nil, fmt.Errorf("BENCH_GROWTH: %w", err)
		}
		sizes = append(sizes, growthSize{f, n})
	}
	for _, f := range strings.FieldsFunc(os.Getenv("BENCH_GROWTH_WINDOWS"), func(r rune) bool { return r == ',' || r == ' ' }) {
		n, err := ParseWindowCount(f)
		if err != nil {
			return nil, nil, fmt.Errorf("BENCH_GROWTH_WINDOWS: %w", err)
		}
		counts = append(counts, n)
	}
	return sizes, counts, nil
}

type growthOptions struct {
	// commitTime is how long each commit row runs; quiet how long the
	// state's files must stay unchanged for its compactions to count as
	// settled.
	commitTime, quiet time.Duration
}

// growthCase is one kind of state at one size: how to build it, how to
// change 1% of it, and the single and batched commits measured on it.
type growthCase struct {
	// diskNeed is the free space the run needs in TMPDIR.
	diskNeed int64
	// build fills the state; change rewrites 1% of it and returns the
	// bytes it wrote (keys and values), or 0 if it cannot say.
	build  func(ctx context.Context, tb testing.TB, c *stated.Client)
	change func(ctx context.Context, tb testing.TB, c *stated.Client) int64
	// op adds n operations (puts or window adds) of worker w to txn.
	op func(w int, txn *stated.Txn, n int)
	// check is a read after the restart that must find the state.
	check func(ctx context.Context, tb testing.TB, c *stated.Client)
}

// growthFlags are the `stated run` flags of the growth runs besides
// BENCH_STATED_FLAGS: checkpoints in effect on request only (the study
// triggers them; the flag's zero is refused), to a file:// bucket in
// TMPDIR; and at most 1024 Raft log entries
// kept after a snapshot, since with the default 10240 and the build's
// 1 MB commits the log would keep up to 10 GB of them beside the state.
func growthFlags(bucket string) []string {
	return []string{"--checkpoint-interval", "1000h", "--checkpoint-url", bucket, "--raft-trailing-logs", "1024"}
}

// growthBucketDir makes the directory of the study's file:// bucket: in
// BENCH_GROWTH_BUCKET_DIR when set (a file system other than the data
// dir's, e.g. a tmpfs, standing for a bucket that does not share the
// data's disk, as S3 does not), in the test's temp dir otherwise.
func growthBucketDir(b *testing.B) string {
	parent := os.Getenv("BENCH_GROWTH_BUCKET_DIR")
	if parent == "" {
		parent = b.TempDir()
	}
	dir, err := os.MkdirTemp(parent, "bucket")
	if err != nil {
		b.Fatalf("BENCH_GROWTH_BUCKET_DIR: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// runGrowth builds gc's state in a new `stated run` process and reports
// the growth study's figures of it (units in growth.go's table).
func runGrowth(b *testing.B, gc growthCase, opts growthOptions) {
	if b.N > 1 {
		b.Fatalf("BenchmarkGrowth builds its state once: run it with -benchtime 1x (b.N = %d)", b.N)
	}
	checkDisk(b, gc.diskNeed)
	ctx := context.Background()
	bucket := (&url.URL{Scheme: "file", Path: growthBucketDir(b)}).String()
	flags := growthFlags(bucket)
	nodes := startClusterWith(b, 1, flags)
	nd := nodes[0]
	c := dial(b, nd)
	peak := rssAnonPeak(nd)

	start := time.Now()
	gc.build(ctx, b, c)
	// A state in use has its tables compacted down, not the side-by-side
	// L0 tables of an ordered build: a 1% change and settled compactions
	// give it that shape (as test/'s checkpoint benchmarks do).
	gc.change(ctx, b, c)
	waitStateQuiet(b, nd.dataDir, opts.quiet)
	b.ReportMetric(time.Since(start).Seconds(), "build-s")
	b.ReportMetric(float64(dirSize(b, filepath.Join(nd.dataDir, "state")))/(1<<20), "state-MB")
	b.ReportMetric(rssAnon(b, nd), "built-RssAnon-MB")

	growthCommits(context.Background(), b, "single", opts.commitTime, 1, 1, gc.op, c)
	growthCommits(context.Background(), b, "batch", opts.commitTime, 8, 100, gc.op, c)

	cp := checkpointsClient(b, nd)
	b.ReportMetric(rssAnon(b, nd), "commits-RssAnon-MB")
	checkpoint(ctx, b, cp, "full")
	b.ReportMetric(rssAnon(b, nd), "full-RssAnon-MB")
	// The full checkpoint flushed the commit rows' writes; the tables
	// their compactions write are new to the bucket. A checkpoint once
	// they settled takes them, so that the next one holds only the 1%
	// change.
	waitStateQuiet(b, nd.dataDir, opts.quiet)
	checkpoint(ctx, b, cp, "settle")
	changed := gc.change(ctx, b, c)
	if changed > 0 {
		b.ReportMetric(float64(changed)/(1<<20), "changed-MB")
	}
	checkpoint(ctx, b, cp, "incr")
	waitStateQuiet(b, nd.dataDir, opts.quiet)
	gc.change(ctx, b, c)
	checkpoint(ctx, b, cp, "incr2")
	reportMemory(b, nd)

	restoreCheckpoint(b, bucket)

	// What a restart reads: the Raft log after the newest Raft snapshot,
	// twice (hashicorp/raft's NewRaft reads every entry for configuration
	// changes; once leader, it applies them again, which the state
	// machine skips). boltdb maps its file: the pages read count in RSS.
	b.ReportMetric(float64(dirSize(b, filepath.Join(nd.dataDir, "raft")))/(1<<20), "raft-dir-MB")
	// The snapshot threshold counts entries, not bytes: with 1 MB build
	// commits the entries after it can be gigabytes.
	txn := c.Txn()
	gc.op(0, txn, 1)
	last, err := txn.Commit(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(last.Index-snapshotIndex(b, nd.dataDir)), "replay-entries")
	peakBefore := peak()
	nd.kill()
	t0 := time.Now()
	// At info level the log says when Raft led again: before it, the
	// process opened the stores and NewRaft read the log; after it, Raft
	// applied the log again and the daemon began to serve.
	nd.rerun(b, append(flags, "--log-level", "info"))
	c2 := firstCommit(b, nd, gc.op)
	b.ReportMetric(time.Since(t0).Seconds(), "restart-s")
	if led, ok := logTime(nd.logs.String(), "raft: entering leader state"); ok {
		b.ReportMetric(led.Sub(t0).Seconds(), "restart-leader-s")
		b.Logf("restart at %s; the restarted process's log until it led:\n%s", t0.UTC().Format(time.RFC3339Nano), logUntil(nd.logs.String(), "raft: entering leader state"))
	} else {
		b.Logf("the restarted process's log has no \"entering leader state\":\n%s", nd.logs)
	}
	gc.check(ctx, b, c2)
	_, rss, err := nd.memory()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(rss, "restart-VmRSS-MB")
	b.ReportMetric(rssAnon(b, nd), "restart-RssAnon-MB")
	peak = rssAnonPeak(nd)
	defer func() { b.ReportMetric(max(peakBefore, peak()), "peak-RssAnon-MB") }()
	// The daemon inherits this process's environment, GOMEMLIMIT with it,
	// which this process's runtime has parsed as the daemon's does.
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		b.ReportMetric(float64(l)/(1<<20), "go-memory-limit-MB")
	}

	// What a checkpoint every second costs the commits: the batch row
	// twice more, side by side, without checkpoints and then with one
	// triggered every second as --checkpoint-interval 1s takes them, for
	// twice the commit rows' time (at least 3 s) each (long enough for
	// several checkpoints, whatever the commit rows' time).
	//
	// Each row starts from the same place: compactions settled, and a
	// checkpoint taken of what they wrote, as a node that checkpoints
	// every second always has one a second old. Without it the first
	// checkpoint of the second row uploaded what the first row's writes
	// and compactions had rewritten, most of the state at 1 GB (990 MB,
	// 5.7 s), and the row measured that catch-up instead.
	rowTime := max(2*opts.commitTime, 3*time.Second)
	cp2 := checkpointsClient(b, nd)
	settleAndCheckpoint(b, cp2, nd, opts.quiet)
	daemonCPUPerMutation(b, nd, "nockpt", func() int {
		return growthCommits(context.Background(), b, "nockpt", rowTime, 8, 100, gc.op, c2)
	})
	settleAndCheckpoint(b, cp2, nd, opts.quiet)
	growthCommitsCheckpointing(b, "ckpt1s", rowTime, time.Second, 8, 100, gc.op, c2, nd)
}

// settleAndCheckpoint waits for the state's compactions to settle, then
// takes a checkpoint, untimed, and waits for the count of its keys (or an
// earlier checkpoint's) to end: afterwards the bucket holds every table
// of the state, and no count reads the state beside the next row.
func settleAndCheckpoint(b *testing.B, cp statedv1.CheckpointsClient, nd *node, quiet time.Duration) {
	waitStateQuiet(b, nd.dataDir, quiet)
	ctx, cancel := context.WithTimeout(context.Background(), triggerTimeout)
	defer cancel()
	if _, err := cp.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true}); err != nil {
		b.Fatalf("checkpoint before a row: %v", err)
	}
	for {
		st, err := cp.Status(ctx, &statedv1.CheckpointStatusRequest{})
		if err != nil {
			b.Fatalf("checkpoint status before a row: %v", err)
		}
		if st.GetCountingEpoch() == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// growthCommitsCheckpointing runs growthCommits while it triggers a
// checkpoint every interval, as the coordinator's ticker does: the next
// starts when its tick has come and the one before completed. It reports
// the checkpoints it started, their mean time and the mean of the bytes
// each uploaded (PREFIX-checkpoints, PREFIX-ckpt-s, PREFIX-uploaded-MB);
// the last may complete after the commits stopped.
func growthCommitsCheckpointing(b *testing.B, prefix string, d, every time.Duration, clients, n int, op func(int, *stated.Txn, int), c *stated.Client, nd *node) {
	cp := checkpointsClient(b, nd)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	stop := make(chan struct{})
	// A stuck checkpoint ends the commits too: the node is dumped and dead.
	cctx, cstop := context.WithCancel(ctx)
	defer cstop()
	var done int
	var took time.Duration
	var uploaded uint64
	// How the checkpoints' keys were counted: each count that ended (a
	// new epoch in the status's last_count), whole (reading the state) or
	// from the base (what changed), and the checkpoints that completed
	// with their keys not counted (the count was late, or did not start).
	var counted, whole, notCounted int
	var counting time.Duration
	// A count that ended before the row (the settling checkpoint's) is
	// not the row's.
	var lastCount uint64
	{
		sctx, scancel := context.WithTimeout(ctx, triggerTimeout)
		st, err := cp.Status(sctx, &statedv1.CheckpointStatusRequest{})
		scancel()
		if err != nil {
			b.Fatalf("%s: checkpoint status: %v", prefix, err)
		}
		lastCount = st.GetLastCount().GetEpoch()
	}
	var failed error
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			start := time.Now()
			tctx, tcancel := context.WithTimeout(ctx, triggerTimeout)
			resp, err := cp.Trigger(tctx, &statedv1.TriggerCheckpointRequest{Wait: true})
			tcancel()
			if err != nil {
				if status.Code(err) == codes.DeadlineExceeded {
					err = fmt.Errorf("%w; the node's goroutines:\n%s", err, nd.dump())
				}
				// testing.Benchmark keeps b.Fatalf's message to itself; a
				// test running this row shows stderr.
				fmt.Fprintf(os.Stderr, "%s: a checkpoint failed: %v\n", prefix, err)
				failed = err
				cstop()
				return
			}
			done++
			took += time.Since(start)
			sctx, scancel := context.WithTimeout(ctx, triggerTimeout)
			st, err := cp.Status(sctx, &statedv1.CheckpointStatusRequest{})
			scancel()
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: checkpoint status: %v\n", prefix, err)
				failed = err
				cstop()
				return
			}
			uploaded += st.GetLastBytesUploaded()
			keys := "keys counted"
			if why := resp.GetSummary().GetKeysNotCounted(); why != "" {
				notCounted++
				keys = "keys not counted: " + why
			}
			b.Logf("%s: checkpoint %d (epoch %d) in %v, %d bytes uploaded; %s", prefix, done, resp.GetSummary().GetEpoch(), time.Since(start).Round(time.Millisecond),
				st.GetLastBytesUploaded(), keys)
			if n := st.GetLastCount(); n != nil && n.GetEpoch() != lastCount {
				lastCount = n.GetEpoch()
				counted++
				counting += time.Duration(n.GetDurationMillis()) * time.Millisecond
				how := fmt.Sprintf("from epoch %d (%d changed tables, %d bytes, %d keys compared)", n.GetBaseEpoch(), n.GetTablesRead(), n.GetTableBytesRead(), n.GetKeysCompared())
				if n.GetWholeReason() != "" {
					whole++
					how = "whole (" + n.GetWholeReason() + ")"
				}
				b.Logf("%s: the count of epoch %d took %d ms, %s", prefix, n.GetEpoch(), n.GetDurationMillis(), how)
			}
		}
	})
	daemonCPUPerMutation(b, nd, prefix, func() int { return growthCommits(cctx, b, prefix, d, clients, n, op, c) })
	// The checkpoint in flight, if any, completes and counts: on a busy
	// machine the row may end before the first one does.
	close(stop)
	wg.Wait()
	if failed != nil {
		b.Fatalf("%s: a checkpoint failed: %v", prefix, failed)
	}
	if done == 0 {
		b.Fatalf("%s: no checkpoint completed in %v", prefix, d)
	}
	b.ReportMetric(float64(done), prefix+"-checkpoints")
	b.ReportMetric(took.Seconds()/float64(done), prefix+"-ckpt-s")
	b.ReportMetric(float64(uploaded)/float64(done)/(1<<20), prefix+"-uploaded-MB")
	b.ReportMetric(float64(notCounted), prefix+"-not-counted")
	if counted > 0 {
		b.ReportMetric(float64(counted), prefix+"-counts")
		b.ReportMetric(float64(whole), prefix+"-whole-counts")
		b.ReportMetric(counting.Seconds()/float64(counted), prefix+"-count-s")
	}
}

// logUntil is logs up to the first line holding msg, that line included.
func logUntil(logs, msg string) string {
	if i := strings.Index(logs, msg); i >= 0 {
		if j := strings.IndexByte(logs[i:], '\n'); j >= 0 {
			return logs[:i+j]
		}
	}
	return logs
}

// snapshotIndex is the Raft index of the newest Raft snapshot in the
// data dir (hashicorp/raft names them TERM-INDEX-MILLIS), 0 if none.
func snapshotIndex(tb testing.TB, dataDir string) uint64 {
	entries, err := os.ReadDir(filepath.Join(dataDir, "raft", "snapshots"))
	if err != nil && !os.IsNotExist(err) {
		tb.Fatal(err)
	}
	var newest uint64
	for _, e := range entries {
		var term, index, ms uint64
		if _, err := fmt.Sscanf(e.Name(), "%d-%d-%d", &term, &index, &ms); err == nil && !strings.HasSuffix(e.Name(), ".tmp") {
			newest = max(newest, index)
		}
	}
	return newest
}

// logTime is the time= of the first line of a text-format log holding
// msg.
func logTime(logs, msg string) (time.Time, bool) {
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, msg) {
			continue
		}
		ts, ok := strings.CutPrefix(strings.Fields(line)[0], "time=")
		if !ok {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, ts)
		return t, err == nil
	}
	return time.Time{}, false
}

// rssAnon is the process's anonymous resident memory (RssAnon: the Go
// heap, Pebble's block cache and memtables), in MB. VmRSS adds file pages
// mapped into the process, such as bbolt's Raft log, which the kernel
// reclaims under pressure.
func rssAnon(tb testing.TB, nd *node) float64 {
	mb, err := readRSSAnon(nd.cmd.Process.Pid)
	if err != nil {
		tb.Fatal(err)
	}
	return mb
}

// readRSSAnon reads process pid's RssAnon in MB.
func readRSSAnon(pid int) (float64, error) {
	v, err := procStatusMB(pid, "RssAnon")
	if err != nil {
		return 0, err
	}
	return v[0], nil
}

// rssAnonPeak samples the RssAnon of nd's process every 100 ms until the
// returned function is called, which returns the highest sample in MB.
// The kernel keeps the peak of the whole RSS (VmHWM), mapped files
// included, but not of its anonymous part: what the process allocated.
func rssAnonPeak(nd *node) func() float64 {
	pid := nd.cmd.Process.Pid
	stop, done := make(chan struct{}), make(chan float64)
	go func() {
		var peak float64
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if mb, err := readRSSAnon(pid); err == nil {
				peak = max(peak, mb)
			}
			select {
			case <-stop:
				done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return func() float64 {
		close(stop)
		return <-done
	}
}

// checkDisk fails the run if TMPDIR's filesystem has less than need free.
func checkDisk(b *testing.B, need int64) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(os.TempDir(), &st); err != nil {
		b.Fatal(err)
	}
	if free := int64(st.Bavail) * st.Bsize; free < need {
		b.Fatalf("%s has %d MB free; this size needs about %d MB (state, Raft log and snapshot, bucket, restored copy): choose a smaller size or point BENCH_DIR elsewhere",
			os.TempDir(), free>>20, need>>20)
	}
}

// startClusterWith is startCluster with flags added to every node (after
// which BENCH_STATED_FLAGS still come).
func startClusterWith(b *testing.B, n int, flags []string) []*node {
	old, had := os.LookupEnv("BENCH_STATED_FLAGS")
	b.Setenv("BENCH_STATED_FLAGS", strings.Join(append(append([]string{}, flags...), strings.Fields(old)...), " "))
	nodes := startCluster(b, n)
	if had {
		os.Setenv("BENCH_STATED_FLAGS", old)
	} else {
		os.Unsetenv("BENCH_STATED_FLAGS")
	}
	return nodes
}

// triggerTimeout bounds one checkpoint of the checkpoint-every-second
// row: one that takes longer is stuck, and the row fails with the node's
// goroutines.
const triggerTimeout = 3 * time.Minute

// dump makes the node's process print its goroutines and exit (SIGQUIT),
// and returns its output.
func (nd *node) dump() string {
	if err := nd.cmd.Process.Signal(syscall.SIGQUIT); err != nil {
		return fmt.Sprintf("(SIGQUIT: %v)\n%s", err, nd.logs)
	}
	select {
	case <-nd.done:
	case <-time.After(30 * time.Second):
	}
	return nd.logs.String()
}

// rerun starts the node's process again on its data dir, socket and
// ports, as a supervisor restarting it would, without waiting for it.
func (nd *node) rerun(tb testing.TB, flags []string) {
	tb.Helper()
	args := append([]string{"run", "--node-id", nd.id, "--data-dir", nd.dataDir, "--socket", nd.socket,
		"--grpc-addr", nd.grpcAddr, "--raft-addr", nd.raftAddr, "--log-level", "warn"}, flags...)
	args = append(args, strings.Fields(os.Getenv("BENCH_STATED_FLAGS"))...)
	nd.logs = &safeBuffer{}
	nd.cmd = daemontest.DieWithParent(exec.Command(statedBinary(tb), args...))
	nd.cmd.Stdout, nd.cmd.Stderr = nd.logs, nd.logs
	if err := nd.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	nd.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(nd.cmd, nd.done)
}

// firstCommit polls the restarted node until a commit of one operation
// succeeds through a new SDK Client, and returns that Client.
func firstCommit(tb testing.TB, nd *node, op func(int, *stated.Txn, int)) *stated.Client {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		select {
		case <-nd.done:
			tb.Fatalf("%s exited after the restart:\n%s", nd.id, nd.logs)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := stated.Dial(ctx, nd.socket, stated.WithBlock())
		if err == nil {
			txn := c.Txn()
			op(0, txn, 1)
			if _, err = txn.Commit(ctx); err == nil {
				cancel()
				tb.Cleanup(func() { c.Close() })
				return c
			}
			c.Close()
		}
		cancel()
		if time.Now().After(deadline) {
			tb.Fatalf("%s: no commit succeeded within 10 minutes of the restart: %v\n%s", nd.id, err, nd.logs)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
}

// growthCommits has clients goroutines commit Txns of n operations for d
// and reports PREFIX-ops/s and the commit latency quantiles.
// Commits stop when ctx ends.
func growthCommits(ctx context.Context, b *testing.B, prefix string, d time.Duration, clients, n int, op func(int, *stated.Txn, int), c *stated.Client) int {
	var lat latencies
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for w := range clients {
		wg.Go(func() {
			var mine []time.Duration
			defer func() { lat.add(mine) }()
			for time.Now().Before(end) && failed.Load() == nil {
				txn := c.Txn()
				op(w, txn, n)
				t := time.Now()
				if _, err := txn.Commit(ctx); err != nil {
					failed.Store(&err)
					return
				}
				mine = append(mine, time.Since(t))
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatalf("%s commits: %v", prefix, *err)
	}
	b.ReportMetric(float64(len(lat.d)*n)/time.Since(start).Seconds(), prefix+"-ops/s")
	b.ReportMetric(lat.quantile(0.50), prefix+"-p50-µs")
	b.ReportMetric(lat.quantile(0.99), prefix+"-p99-µs")
	return len(lat.d) * n
}

// daemonCPUPerMutation runs row, which returns the mutations it
// committed, and reports the CPU time (user and system) the daemon nd
// used meanwhile per mutation, as prefix-cpu-µs/mut. On a shared machine
// it varies less than the row's throughput: two rows' ratio says what
// the second one's extra work cost the daemon, whatever else ran.
func daemonCPUPerMutation(b *testing.B, nd *node, prefix string, row func() int) {
	before, ok := processCPU(nd.cmd.Process.Pid)
	n := row()
	after, ok2 := processCPU(nd.cmd.Process.Pid)
	if ok && ok2 && n > 0 {
		b.ReportMetric(float64((after-before).Microseconds())/float64(n), prefix+"-cpu-µs/mut")
	}
}

// reportMemory reports the process's peak RSS over its life so far
// (VmHWM, which covers the build) and its RSS now.
func reportMemory(b *testing.B, nd *node) {
	hwm, rss, err := nd.memory()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(hwm, "VmHWM-MB")
	b.ReportMetric(rss, "VmRSS-MB")
	b.ReportMetric(rssAnon(b, nd), "RssAnon-MB")
}

func checkpointsClient(b *testing.B, nd *node) statedv1.CheckpointsClient {
	return statedv1.NewCheckpointsClient(nd.conn(b))
}

// checkpoint triggers a checkpoint, waits until its manifest is written,
// and reports how long the trigger took (PREFIX-ckpt-s) and what the
// coordinator says it uploaded (PREFIX-uploaded-MB).
func checkpoint(ctx context.Context, b *testing.B, cp statedv1.CheckpointsClient, prefix string) {
	start := time.Now()
	resp, err := cp.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
	if err != nil {
		b.Fatalf("%s checkpoint: %v", prefix, err)
	}
	d := time.Since(start)
	st, err := cp.Status(ctx, &statedv1.CheckpointStatusRequest{})
	if err != nil {
		b.Fatal(err)
	}
	if got := st.GetLastCompleted().GetEpoch(); got != resp.GetEpoch() {
		b.Fatalf("%s checkpoint: epoch %d triggered, the last completed is %d", prefix, resp.GetEpoch(), got)
	}
	b.Logf("%s checkpoint: epoch %d in %v (coordinator: %d ms), %d files and %d bytes uploaded",
		prefix, resp.GetEpoch(), d.Round(time.Millisecond), st.GetLastDurationMillis(), st.GetLastFilesUploaded(), st.GetLastBytesUploaded())
	b.ReportMetric(d.Seconds(), prefix+"-ckpt-s")
	b.ReportMetric(float64(st.GetLastBytesUploaded())/(1<<20), prefix+"-uploaded-MB")
}

// restoreCheckpoint times `stated restore` of the bucket's latest
// checkpoint into a new data dir, which it then removes.
func restoreCheckpoint(b *testing.B, bucket string) {
	dir := filepath.Join(b.TempDir(), "restored")
	start := time.Now()
	out, err := exec.Command(statedBinary(b), "restore", "--from", bucket, "--data-dir", dir).CombinedOutput()
	d := time.Since(start)
	if err != nil {
		b.Fatalf("stated restore: %v\n%s", err, out)
	}
	size := dirSize(b, filepath.Join(dir, "state"))
	if size == 0 {
		b.Fatalf("stated restore left no state in %s:\n%s", dir, out)
	}
	b.ReportMetric(d.Seconds(), "restore-s")
	b.ReportMetric(float64(size)/(1<<20)/d.Seconds(), "restore-MB/s")
	if err := os.RemoveAll(dir); err != nil {
		b.Fatal(err)
	}
}

// dirSize is the bytes of the regular files under dir.
func dirSize(tb testing.TB, dir string) int64 {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	if err != nil && !os.IsNotExist(err) {
		tb.Fatal(err)
	}
	return n
}

// waitStateQuiet waits until the names and sizes of the files of the
// node's Pebble directory stayed the same for quiet: its compactions are
// done. It gives up after 15 minutes, saying so in the log.
func waitStateQuiet(tb testing.TB, dataDir string, quiet time.Duration) {
	dir := filepath.Join(dataDir, "state")
	listing := func() string {
		var sb strings.Builder
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil {
					fmt.Fprintf(&sb, "%s %d\n", p, fi.Size())
				}
			}
			return nil
		})
		return sb.String()
	}
	last, since := listing(), time.Now()
	for deadline := time.Now().Add(15 * time.Minute); time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond) // polling with a deadline
		if l := listing(); l != last {
			last, since = l, time.Now()
		} else if time.Since(since) >= quiet {
			return
		}
	}
	tb.Logf("%s still changing after 15 minutes", dir)
}

// --- keyed state -----------------------------------------------------

const (
	growthNamespace = "growth"
	growthValueSize = 1 << 10
	growthBuildTxn  = 1000 // puts per build commit: 1 MB
	growthBuilders  = 4    // concurrent build commits
)

func growthKey(k uint64) []byte { return binary.BigEndian.AppendUint64([]byte("key/"), k) }

// keyedGrowth is size bytes of 1 KiB random values under distinct keys
// in one namespace. The build commits 1000 puts per Txn from 4 goroutines
// (the SDK coalesces their commits into CommitBatch calls), in key order;
// the measured commits put new 1 KiB random values under random existing
// keys;
// a change overwrites 1% of the keys, picked at random, with new 1 KiB
// values.
func keyedGrowth(size int64) growthCase {
	keys := uint64(size / growthValueSize)
	var seed atomic.Uint64
	newRand := func() *rand.Rand { s := seed.Add(1); return rand.New(rand.NewPCG(s, s*7919)) }
	// Each commit worker's keys, values and value buffer: a Txn holds
	// its values until Commit returns, and a worker commits one at a
	// time.
	type worker struct {
		pick *rand.Rand
		fill *rand.ChaCha8
		buf  []byte
	}
	var mu sync.Mutex
	workers := map[int]*worker{}
	workerOf := func(w int) *worker {
		mu.Lock()
		defer mu.Unlock()
		if workers[w] == nil {
			r := newRand()
			workers[w] = &worker{pick: r, fill: newChaCha8(r)}
		}
		return workers[w]
	}
	// puts commits the keys key(0..n-1) in Txns of up to 1000 puts of
	// fresh random 1 KiB values, from growthBuilders goroutines.
	puts := func(ctx context.Context, tb testing.TB, c *stated.Client, n uint64, key func(*rand.Rand, uint64) uint64) {
		var next atomic.Uint64
		var failed atomic.Pointer[error]
		var wg sync.WaitGroup
		for range growthBuilders {
			wg.Go(func() {
				r := newRand()
				fill := newChaCha8(r)
				values := make([]byte, growthBuildTxn*growthValueSize)
				for failed.Load() == nil {
					first := next.Add(growthBuildTxn) - growthBuildTxn
					if first >= n {
						return
					}
					m := min(growthBuildTxn, n-first)
					fill.Read(values[:m*growthValueSize])
					txn := c.Txn()
					for j := range m {
						txn.Put(growthNamespace, growthKey(key(r, first+j)), values[j*growthValueSize:(j+1)*growthValueSize])
					}
					if _, err := txn.Commit(ctx); err != nil {
						failed.Store(&err)
					}
				}
			})
		}
		wg.Wait()
		if err := failed.Load(); err != nil {
			tb.Fatalf("building the state: %v", *err)
		}
	}
	return growthCase{
		diskNeed: 5*size + 1<<30,
		build: func(ctx context.Context, tb testing.TB, c *stated.Client) {
			puts(ctx, tb, c, keys, func(_ *rand.Rand, k uint64) uint64 { return k })
			// Not NodeStatus's counts: they scan the whole state (at 5 GB,
			// minutes on the loaded 2-core VM, holding the state
			// machine's read lock).
			for _, k := range []uint64{0, keys / 2, keys - 1} {
				if _, found, err := c.Get(ctx, growthNamespace, growthKey(k), stated.WithConsistency(stated.ConsistencySession)); err != nil || !found {
					tb.Fatalf("after the build, key %d of %d: found %v, %v", k, keys, found, err)
				}
			}
		},
		change: func(ctx context.Context, tb testing.TB, c *stated.Client) int64 {
			n := keys / 100
			puts(ctx, tb, c, n, func(r *rand.Rand, _ uint64) uint64 { return r.Uint64N(keys) })
			return int64(n) * int64(growthValueSize+len(growthKey(0)))
		},
		// Updates of existing keys with values like theirs, so that the
		// commit rows leave the state its size and shape (100-byte zero
		// values, the first version, shrank a 100 MB state to 3 MB).
		op: func(w int, txn *stated.Txn, n int) {
			wk := workerOf(w)
			if need := n * growthValueSize; cap(wk.buf) < need {
				wk.buf = make([]byte, need)
			}
			wk.fill.Read(wk.buf[:n*growthValueSize])
			for j := range n {
				txn.Put(growthNamespace, growthKey(wk.pick.Uint64N(keys)), wk.buf[j*growthValueSize:(j+1)*growthValueSize])
			}
		},
		check: func(ctx context.Context, tb testing.TB, c *stated.Client) {
			for _, k := range []uint64{0, keys - 1} {
				if _, found, err := c.Get(ctx, growthNamespace, growthKey(k), stated.WithConsistency(stated.ConsistencySession)); err != nil || !found {
					tb.Fatalf("after the restart, key %d of %d: found %v, %v", k, keys, found, err)
				}
			}
		},
	}
}

// newChaCha8 is a source of incompressible value bytes seeded from r.
func newChaCha8(r *rand.Rand) *rand.ChaCha8 {
	var seed [32]byte
	for i := range 4 {
		binary.LittleEndian.PutUint64(seed[8*i:], r.Uint64())
	}
	return rand.NewChaCha8(seed)
}

// --- window state ----------------------------------------------------

// growthWindowBase is where the windows' event times start: a whole hour.
const growthWindowBase = int64(1_700_000_000_000) / 3_600_000 * 3_600_000

// windowGrowth is n open windows: tumbling hour windows summing ints, one
// for each of n keys, the watermark held 100 hours behind the records so
// that none closes (as test/'s BenchmarkWindowAdd). The build adds 1000
// records per Txn from 4 goroutines; the measured commits and a change
// (1% of the windows) add to existing windows of random keys.
func windowGrowth(n int) growthCase {
	key := func(k int) []byte { return fmt.Appendf(nil, "user-%08d", k) }
	var mu sync.Mutex
	pickers := map[int]*rand.Rand{}
	picker := func(w int) *rand.Rand {
		mu.Lock()
		defer mu.Unlock()
		if pickers[w] == nil {
			pickers[w] = rand.New(rand.NewPCG(uint64(w)+1, 42))
		}
		return pickers[w]
	}
	add := func(txn *stated.Txn, k int, r *rand.Rand) {
		txn.AddWindow(growthNamespace, key(k), time.UnixMilli(growthWindowBase+r.Int64N(3_600_000)), stated.Int(1), stated.FromSource("t/0"))
	}
	adds := func(ctx context.Context, tb testing.TB, c *stated.Client, count int, which func(r *rand.Rand, i int) int) {
		var next atomic.Int64
		var failed atomic.Pointer[error]
		var wg sync.WaitGroup
		for w := range growthBuilders {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(w), 7))
				for failed.Load() == nil {
					first := int(next.Add(growthBuildTxn) - growthBuildTxn)
					if first >= count {
						return
					}
					txn := c.Txn()
					for i := first; i < min(first+growthBuildTxn, count); i++ {
						add(txn, which(r, i), r)
					}
					if _, err := txn.Commit(ctx); err != nil {
						failed.Store(&err)
					}
				}
			})
		}
		wg.Wait()
		if err := failed.Load(); err != nil {
			tb.Fatalf("adding to windows: %v", *err)
		}
	}
	open := func(ctx context.Context, tb testing.TB, c *stated.Client) int64 {
		sts, err := c.WindowStatus(ctx, stated.WithConsistency(stated.ConsistencySession))
		if err != nil || len(sts) != 1 {
			tb.Fatalf("window status: %+v, %v", sts, err)
		}
		if sts[0].Pending != 0 || sts[0].LateDropped != 0 {
			tb.Fatalf("windows closed or records were late: %+v", sts[0])
		}
		return sts[0].OpenWindows
	}
	return growthCase{
		// Window state is a few hundred bytes a window, kept 5 times over.
		diskNeed: int64(n)*2<<10 + 1<<30,
		build: func(ctx context.Context, tb testing.TB, c *stated.Client) {
			spec := stated.WindowSpec{Namespace: growthNamespace, Shape: stated.Tumbling, Size: time.Hour,
				MaxOutOfOrder: 100 * time.Hour, Aggregate: stated.SumInt, Emit: stated.EmitFinal, Late: stated.LateDrop}
			if err := c.DefineWindows(ctx, spec); err != nil {
				tb.Fatal(err)
			}
			adds(ctx, tb, c, n, func(_ *rand.Rand, i int) int { return i })
			if got := open(ctx, tb, c); got != int64(n) {
				tb.Fatalf("%d windows open after the build, want %d", got, n)
			}
		},
		// The bytes a window add rewrites are not known from outside:
		// the table compares the upload with the full checkpoint instead.
		change: func(ctx context.Context, tb testing.TB, c *stated.Client) int64 {
			adds(ctx, tb, c, max(n/100, 1), func(r *rand.Rand, _ int) int { return r.IntN(n) })
			return 0
		},
		op: func(w int, txn *stated.Txn, count int) {
			r := picker(w)
			for range count {
				add(txn, r.IntN(n), r)
			}
		},
		check: func(ctx context.Context, tb testing.TB, c *stated.Client) {
			if got := open(ctx, tb, c); got != int64(n) {
				tb.Fatalf("after the restart %d windows are open, want %d", got, n)
			}
		},
	}
}
