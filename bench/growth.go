package bench

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// The growth study (bench/run.sh --growth, issue 15's "cost as state
// grows"): BenchmarkGrowth/state=SIZE builds SIZE of keyed state in a
// `stated run` process and BenchmarkGrowth/windows=N holds N open
// windows; each reports the units below, and GrowthTable puts the sizes of
// one kind side by side with the ratio of the largest to the smallest and
// the target for the rows that have one.

const (
	growthState   = "Growth/state="
	growthWindows = "Growth/windows="
)

// The targets of issue 15 for growth from the smallest size to the
// largest: commit throughput within 20%, RSS bounded by configuration
// (here: the peak grows by at most 20% while the state grows), and an
// incremental checkpoint uploading at most twice the bytes the change
// wrote, at every size.
const (
	growthCommitFloor = 0.8
	// growthIntervalFloor: commits with a checkpoint every second keep
	// at least this share of their rate without (the 5%).
	growthIntervalFloor = 0.95
	growthRSSCeiling    = 1.2
	growthIncrCeiling   = 2.0
)

// ParseSize reads a state size such as "20MB", "1GB" or "10GB" (binary
// units: 1GB is 1<<30 bytes).
func ParseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		shift  uint
	}{{"GB", 30}, {"MB", 20}, {"KB", 10}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseInt(num, 10, 64)
			if err != nil || n <= 0 || n > 1<<20 {
				break
			}
			return n << u.shift, nil
		}
	}
	return 0, fmt.Errorf("bench: state size %q: want a positive whole number of KB, MB or GB, e.g. 100MB or 10GB", s)
}

// ParseWindowCount reads a number of open windows: digits, or 10^k.
func ParseWindowCount(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if exp, ok := strings.CutPrefix(s, "10^"); ok {
		var k int
		if k, err = strconv.Atoi(exp); err == nil && k >= 0 && k <= 8 {
			n = 1
			for range k {
				n *= 10
			}
		}
	}
	if err != nil || n <= 0 || n > 100_000_000 {
		return 0, fmt.Errorf("bench: window count %q: want a positive whole number up to 10^8, e.g. 100000 or 10^6", s)
	}
	return n, nil
}

// growthColumns returns the sizes of one kind found in res, smallest
// first, with the benchmark name of each.
func (r Results) growthColumns(prefix string, size func(string) (int64, error)) (labels, benches []string) {
	type col struct {
		label string
		n     int64
	}
	var cols []col
	for _, s := range r.subNames(prefix) {
		n, err := size(s)
		if err != nil {
			continue
		}
		cols = append(cols, col{s, n})
	}
	slices.SortFunc(cols, func(a, b col) int { return int(min(max(a.n-b.n, -1), 1)) })
	for _, c := range cols {
		labels = append(labels, c.label)
		benches = append(benches, "Benchmark"+prefix+c.label)
	}
	return labels, benches
}

// HasGrowth says whether res holds any growth study results.
func (r Results) HasGrowth() bool {
	return len(r.subNames(growthState)) > 0 || len(r.subNames(growthWindows)) > 0
}

// GrowthTable writes one markdown table per kind of growth run found in
// res (keyed state, open windows): a column per size, smallest first, the
// ratio of the largest size's figure to the smallest's, and the verdict
// of the target where there is one.
func GrowthTable(w io.Writer, res Results) error {
	bw := bufio.NewWriter(w)
	first := true
	for _, kind := range []struct {
		prefix, title, op string
		size              func(string) (int64, error)
	}{
		{growthState, "keyed state", "mutation", ParseSize},
		{growthWindows, "open windows", "add", func(s string) (int64, error) { n, err := ParseWindowCount(s); return int64(n), err }},
	} {
		labels, benches := res.growthColumns(kind.prefix, kind.size)
		if len(labels) == 0 {
			continue
		}
		if !first {
			fmt.Fprintln(bw)
		}
		first = false
		g := growthRows{res: res, benches: benches}
		head := "| growth: " + kind.title + " | " + strings.Join(g.headers(labels, kind.prefix == growthWindows), " | ")
		ratio := "—"
		if len(labels) > 1 {
			ratio = labels[len(labels)-1] + " / " + labels[0]
		}
		fmt.Fprintf(bw, "%s | %s | target |\n", head, ratio)
		fmt.Fprintf(bw, "| --- |%s ---: | --- |\n", strings.Repeat(" ---: |", len(labels)))
		for _, rw := range g.rows(kind.op) {
			fmt.Fprintf(bw, "| %s | %s | %s | %s |\n", rw.what, strings.Join(rw.cells, " | "), rw.ratio, rw.verdict)
		}
	}
	return bw.Flush()
}

type growthRow struct {
	what           string
	cells          []string
	ratio, verdict string
}

type growthRows struct {
	res     Results
	benches []string
}

func (g growthRows) headers(labels []string, windows bool) []string {
	out := make([]string, len(labels))
	for i, l := range labels {
		out[i] = l
		if windows {
			n, _ := ParseWindowCount(l)
			out[i] = thousands(float64(n)) + " windows"
		}
	}
	return out
}

// val is the median of unit in the i-th column.
func (g growthRows) val(i int, unit string) (float64, bool) { return g.res.Median(g.benches[i], unit) }

// cells renders each column with show, "not measured" where the main unit
// is missing.
func (g growthRows) cells(unit string, show func(i int, v float64) string) []string {
	out := make([]string, len(g.benches))
	for i := range g.benches {
		v, ok := g.val(i, unit)
		if !ok {
			out[i] = notMeasured
			continue
		}
		out[i] = show(i, v)
	}
	return out
}

// opt renders a unit of column i when it was measured, with a leading
// ", ".
func (g growthRows) opt(i int, unit string) string {
	if v, ok := g.val(i, unit); ok {
		return ", " + formatMetric(unit, v)
	}
	return ""
}

// ratio is the largest size's value of unit over the smallest's.
func (g growthRows) ratio(unit string) (float64, bool) {
	if len(g.benches) < 2 {
		return 0, false
	}
	a, ok1 := g.val(0, unit)
	z, ok2 := g.val(len(g.benches)-1, unit)
	if !ok1 || !ok2 || a == 0 {
		return 0, false
	}
	return z / a, true
}

func (g growthRows) ratioCell(unit string) string {
	if r, ok := g.ratio(unit); ok {
		return sig(r) + "×"
	}
	return "—"
}

func (g growthRows) rows(op string) []growthRow {
	var out []growthRow
	add := func(what, unit string, show func(i int, v float64) string, verdict string) {
		out = append(out, growthRow{what, g.cells(unit, show), g.ratioCell(unit), verdict})
	}
	mb := func(v float64) string { return sig(v) + " MB" }
	secs := func(v float64) string { return sig(v) + " s" }

	add("state on disk (Pebble), and the setup that built it", "state-MB", func(i int, v float64) string {
		return mb(v) + g.opt(i, "build-s")
	}, "—")
	for _, c := range []struct{ prefix, what string }{
		{"single", fmt.Sprintf("commits of 1 %s, 1 client: %ss/s", op, op)},
		{"batch", fmt.Sprintf("commits of 100 %ss, 8 clients: %ss/s", op, op)},
	} {
		add(c.what, c.prefix+"-ops/s", func(i int, v float64) string {
			return thousands(v) + "/s" + g.opt(i, c.prefix+"-p50-µs") + g.opt(i, c.prefix+"-p99-µs")
		}, g.floorVerdict(c.prefix+"-ops/s", growthCommitFloor, "throughput within 20%"))
	}
	add("full checkpoint to file:// (first): time, bytes uploaded", "full-ckpt-s", func(i int, v float64) string {
		return secs(v) + g.opt(i, "full-uploaded-MB")
	}, "—")
	add("the next checkpoint once the compactions of the commit rows' writes settled: time, bytes uploaded", "settle-ckpt-s", func(i int, v float64) string {
		return secs(v) + g.opt(i, "settle-uploaded-MB")
	}, "—")
	for _, c := range []struct{ prefix, what string }{
		{"incr", "incremental checkpoint after changing 1% of " + map[string]string{"mutation": "keys", "add": "windows"}[op]},
		{"incr2", "the next one, after another 1% once the first change's compactions settled (they are in it)"},
	} {
		add(c.what+": time, bytes uploaded, and the change's bytes", c.prefix+"-ckpt-s", func(i int, v float64) string {
			s := secs(v) + g.opt(i, c.prefix+"-uploaded-MB")
			u, ok := g.val(i, c.prefix+"-uploaded-MB")
			if ch, ok2 := g.val(i, "changed-MB"); ok && ok2 && ch > 0 {
				s += fmt.Sprintf(" of %s changed (%s×)", mb(ch), sig(u/ch))
			} else if full, ok2 := g.val(i, "full-uploaded-MB"); ok && ok2 && full > 0 {
				s += fmt.Sprintf(" (%s%% of the full)", sig(100*u/full))
			}
			return s
		}, g.incrVerdict(c.prefix))
	}
	add("`stated restore` of the incremental checkpoint into a new data dir", "restore-s", func(i int, v float64) string {
		return secs(v) + g.opt(i, "restore-MB/s")
	}, "—")
	add("restart after SIGKILL until the first commit succeeds; what it replays: the entries after the last Raft snapshot, the Raft directory", "restart-s", func(i int, v float64) string {
		s := secs(v)
		if led, ok := g.val(i, "restart-leader-s"); ok {
			s += fmt.Sprintf(" (Raft leader after %s)", secs(led))
		}
		if n, ok := g.val(i, "replay-entries"); ok {
			s += fmt.Sprintf(", %s log entries after the last Raft snapshot", thousands(n))
		}
		return s + g.opt(i, "raft-dir-MB")
	}, "—")
	add("RSS after the checkpoints: peak over the process's life (VmHWM), now (VmRSS), its anonymous part (RssAnon: heap, Pebble's cache and memtables; the rest is mapped files such as bbolt's log)", "RssAnon-MB", func(i int, v float64) string {
		return strings.TrimPrefix(g.opt(i, "VmHWM-MB")+g.opt(i, "VmRSS-MB"), ", ") + ", " + formatMetric("RssAnon-MB", v)
	}, g.ceilingVerdict("RssAnon-MB", growthRSSCeiling, "bounded by configuration (RssAnon within 20%)"))
	add("RssAnon along the way: after the build, after the commit rows, after the full checkpoint", "built-RssAnon-MB", func(i int, v float64) string {
		s := "built " + mb(v)
		if c, ok := g.val(i, "commits-RssAnon-MB"); ok {
			s += ", commits " + mb(c)
		}
		if f, ok := g.val(i, "full-RssAnon-MB"); ok {
			s += ", full checkpoint " + mb(f)
		}
		return s
	}, "—")
	add(fmt.Sprintf("commits of 100 %ss, 8 clients, with a checkpoint every second, against none, side by side after the restart: %ss/s, the checkpoints taken, their mean time and mean upload, how many completed with their keys not counted, the counts that ended, how many of them read the state whole and their mean time, and the daemon's CPU time per %s in each row", op, op, op), "ckpt1s-ops/s", func(i int, v float64) string {
		s := thousands(v) + "/s"
		if q, ok := g.val(i, "nockpt-ops/s"); ok && q > 0 {
			s += fmt.Sprintf(" against %s/s (%s×)", thousands(q), sig(v/q))
		}
		if n, ok := g.val(i, "ckpt1s-checkpoints"); ok {
			s += fmt.Sprintf(", %s checkpoints", thousands(n))
		}
		s += g.opt(i, "ckpt1s-ckpt-s") + g.opt(i, "ckpt1s-uploaded-MB")
		if k, ok := g.val(i, "ckpt1s-not-counted"); ok {
			s += fmt.Sprintf(", %s not counted", thousands(k))
		}
		if n, ok := g.val(i, "ckpt1s-counts"); ok {
			s += fmt.Sprintf(", %s counts", thousands(n))
		}
		if w, ok := g.val(i, "ckpt1s-whole-counts"); ok {
			s += fmt.Sprintf(", %s counted whole", thousands(w))
			if d, ok := g.val(i, "ckpt1s-count-s"); ok {
				s += ", counts " + secs(d)
			}
		}
		c, ok1 := g.val(i, "ckpt1s-cpu-µs/mut")
		q, ok2 := g.val(i, "nockpt-cpu-µs/mut")
		if ok1 && ok2 && q > 0 {
			s += fmt.Sprintf("; the daemon's CPU per %s %s against %s µs (%s×)", op, sig(c), sig(q), sig(c/q))
		}
		return s
	}, g.intervalVerdict())
	add("RSS after the restart and its first commit: VmRSS, RssAnon", "restart-RssAnon-MB", func(i int, v float64) string {
		return strings.TrimPrefix(g.opt(i, "restart-VmRSS-MB"), ", ") + ", " + formatMetric("restart-RssAnon-MB", v)
	}, g.ceilingVerdict("restart-RssAnon-MB", growthRSSCeiling, "bounded by configuration (RssAnon within 20%)"))
	add("RssAnon at its highest over both processes' lives (sampled every 100 ms); the Go runtime's memory limit (GOMEMLIMIT) the daemon ran with", "peak-RssAnon-MB", func(i int, v float64) string {
		s := "peak " + mb(v)
		if l, ok := g.val(i, "go-memory-limit-MB"); ok {
			s += ", GOMEMLIMIT " + mb(l)
		} else {
			s += ", no GOMEMLIMIT"
		}
		return s
	}, g.ceilingVerdict("peak-RssAnon-MB", growthRSSCeiling, "bounded by configuration (RssAnon within 20%)"))
	return out
}

// intervalVerdict: at every size, commits with a checkpoint every
// second run at least growthIntervalFloor of the rate without.
func (g growthRows) intervalVerdict() string {
	const target = "a 1 s checkpoint interval costs under 5% of commit throughput"
	worst, measured := 0.0, false
	for i := range g.benches {
		v, ok1 := g.val(i, "ckpt1s-ops/s")
		q, ok2 := g.val(i, "nockpt-ops/s")
		if !ok1 || !ok2 || q == 0 {
			continue
		}
		if r := v / q; !measured || r < worst {
			worst = r
		}
		measured = true
	}
	switch {
	case !measured:
		return target + ": not measured"
	case worst >= growthIntervalFloor:
		return target + ": met"
	}
	return fmt.Sprintf("%s: missed (%s× at worst)", target, sig(worst))
}

// floorVerdict: the ratio of unit must be at least floor.
func (g growthRows) floorVerdict(unit string, floor float64, target string) string {
	r, ok := g.ratio(unit)
	if !ok {
		return target + ": needs two sizes"
	}
	if r >= floor {
		return target + ": met"
	}
	return fmt.Sprintf("%s: missed (%s×, below %s×)", target, sig(r), sig(floor))
}

// ceilingVerdict: the ratio of unit must be at most ceiling.
func (g growthRows) ceilingVerdict(unit string, ceiling float64, target string) string {
	r, ok := g.ratio(unit)
	if !ok {
		return target + ": needs two sizes"
	}
	if r <= ceiling {
		return target + ": met"
	}
	return fmt.Sprintf("%s: missed (%s× the smallest size's)", target, sig(r))
}

// incrVerdict: at every size the incremental checkpoint uploads at most
// growthIncrCeiling times the bytes the change wrote. Where the change's
// bytes are not known (window adds), 1% of the full checkpoint stands for
// them.
func (g growthRows) incrVerdict(prefix string) string {
	const target = "proportional to the change (uploaded ≤ 2× changed at every size)"
	worst := 0.0
	estimated := false
	for i := range g.benches {
		u, ok1 := g.val(i, prefix+"-uploaded-MB")
		ch, ok2 := g.val(i, "changed-MB")
		if !ok2 {
			full, ok := g.val(i, "full-uploaded-MB")
			ch, ok2, estimated = full/100, ok, true
		}
		if !ok1 || !ok2 || ch == 0 {
			return target + ": not measured"
		}
		worst = max(worst, u/ch)
	}
	if estimated {
		return fmt.Sprintf("%s, the change taken as 1%% of the full checkpoint: %s (up to %s×)", target, map[bool]string{true: "met", false: "missed"}[worst <= growthIncrCeiling], sig(worst))
	}
	if worst <= growthIncrCeiling {
		return target + ": met"
	}
	return fmt.Sprintf("%s: missed (up to %s× the change)", target, sig(worst))
}
