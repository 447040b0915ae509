package test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// timelineEnv names the directory a benchmark writes its timeline to.
const timelineEnv = "STATED_BENCH_TIMELINE"

// timeline records a benchmark run over time, to tell a tail that
// clusters in time (a flush, a compaction, a snapshot, an election) from
// one spread evenly. Each run writes two CSV files to the directory
// STATED_BENCH_TIMELINE names, named after the benchmark and its b.N:
//
//   - NAME.commits.csv: start_ms,latency_ms,lane,index for each commit,
//     start_ms counted from the timeline's start;
//   - NAME.nodes.csv: every 10 ms, t_ms and for each node its role, last
//     Raft log index, commit index, applied index, and the count and MB of
//     the .sst files in its Pebble dir (a flush adds files, a compaction
//     replaces them).
//
// A nil *timeline records nothing.
type timeline struct {
	t0      time.Time
	mu      sync.Mutex
	commits *bufio.Writer
	files   []*os.File
	done    chan struct{}
	sampled chan struct{}
	err     error
}

// startTimeline starts recording bn's run if STATED_BENCH_TIMELINE is
// set, and returns nil if it is not.
func startTimeline(b *testing.B, bn *benchNodes) *timeline {
	dir := os.Getenv(timelineEnv)
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatalf("%s: %v", timelineEnv, err)
	}
	name := fmt.Sprintf("%s-N%d", strings.NewReplacer("/", "_", "=", "").Replace(b.Name()), b.N)
	tl := &timeline{t0: time.Now(), done: make(chan struct{}), sampled: make(chan struct{})}
	commits, err := os.Create(filepath.Join(dir, name+".commits.csv"))
	if err != nil {
		b.Fatalf("%s: %v", timelineEnv, err)
	}
	nodes, err := os.Create(filepath.Join(dir, name+".nodes.csv"))
	if err != nil {
		commits.Close()
		b.Fatalf("%s: %v", timelineEnv, err)
	}
	tl.files = []*os.File{commits, nodes}
	tl.commits = bufio.NewWriter(commits)
	fmt.Fprintln(tl.commits, "start_ms,latency_ms,lane,index")
	go tl.sample(bufio.NewWriter(nodes), bn)
	b.Logf("timeline: %s.{commits,nodes}.csv in %s", name, dir)
	return tl
}

func (tl *timeline) ms(t time.Time) float64 { return float64(t.Sub(tl.t0).Microseconds()) / 1e3 }

// commit records one commit.
func (tl *timeline) commit(start time.Time, took time.Duration, lane int, index uint64) {
	if tl == nil {
		return
	}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	fmt.Fprintf(tl.commits, "%.2f,%.2f,%d,%d\n", tl.ms(start), float64(took.Microseconds())/1e3, lane, index)
}

// sample writes the nodes' progress every 10 ms until stop.
func (tl *timeline) sample(w *bufio.Writer, bn *benchNodes) {
	defer close(tl.sampled)
	header := "t_ms"
	for i := range bn.nodes {
		header += strings.ReplaceAll(",nI_role,nI_last,nI_commit,nI_applied,nI_sst_files,nI_sst_mb", "I", fmt.Sprint(i+1))
	}
	fmt.Fprintln(w, header)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tl.done:
			if err := w.Flush(); err != nil {
				tl.err = err
			}
			return
		case now := <-tick.C:
			fmt.Fprintf(w, "%.2f", tl.ms(now))
			for i, d := range bn.nodes {
				st := d.Store().Status()
				files, mb := sstFiles(filepath.Join(bn.dataDirs[i], "state"))
				fmt.Fprintf(w, ",%s,%d,%d,%d,%d,%.1f", st.Role, st.LastLogIndex, st.CommitIndex, st.AppliedIndex, files, mb)
			}
			fmt.Fprintln(w)
		}
	}
}

// sstFiles counts the .sst files in dir and their size in MB; a file a
// compaction removes while it is listed is not counted.
func sstFiles(dir string) (n int, mb float64) {
	names, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	for _, name := range names {
		if fi, err := os.Stat(name); err == nil {
			n++
			mb += float64(fi.Size()) / (1 << 20)
		}
	}
	return n, mb
}

// stop ends the recording and closes the files.
func (tl *timeline) stop(b *testing.B) {
	if tl == nil {
		return
	}
	close(tl.done)
	<-tl.sampled
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if err := tl.commits.Flush(); err != nil && tl.err == nil {
		tl.err = err
	}
	for _, f := range tl.files {
		if err := f.Close(); err != nil && tl.err == nil {
			tl.err = err
		}
	}
	if tl.err != nil {
		b.Errorf("%s: %v", timelineEnv, tl.err)
	}
}
