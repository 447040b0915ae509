package bench

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Results holds the metrics of `go test -bench` output: for each benchmark
// (its name without the -GOMAXPROCS suffix), every value of each unit,
// one per run (-count).
type Results map[string]map[string][]float64

var procsSuffix = regexp.MustCompile(`-\d+$`)

// Parse reads `go test -bench` output (any other lines are skipped) into
// Results.
func Parse(r io.Reader) (Results, error) {
	res := Results{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// BenchmarkName-2  N  v unit  v unit ...
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
			continue
		}
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			continue
		}
		name := procsSuffix.ReplaceAllString(f[0], "")
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("bench: parse %q: value %q of %s: %w", sc.Text(), f[i], f[i+1], err)
			}
			if res[name] == nil {
				res[name] = map[string][]float64{}
			}
			res[name][f[i+1]] = append(res[name][f[i+1]], v)
		}
	}
	return res, sc.Err()
}

// Median returns the median of the values of bench's unit, and whether
// there were any.
func (r Results) Median(bench, unit string) (float64, bool) {
	v := slices.Clone(r[bench][unit])
	if len(v) == 0 {
		return 0, false
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2], true
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2, true
}

func (r Results) val(mt metric) (float64, bool) { return r.Median("Benchmark"+mt.bench, mt.unit) }

// Runs is how many values bench's unit has (the -count that produced it).
func (r Results) Runs(bench, unit string) int { return len(r[bench][unit]) }

// metric is one unit of one benchmark, without the "Benchmark" prefix.
type metric struct{ bench, unit string }

func m(bench, unit string) metric { return metric{bench, unit} }

// reference is what a row is compared with: a label, the metrics shown,
// and the ratio num/den with a note saying what it means.
type reference struct {
	label    string
	show     []metric
	num, den metric
	// plus, when set, is added to den: a floor made of two parts.
	plus metric
	note string
}

// row is one line of the table: the figure's metrics (the first is the
// main one) and its references.
type row struct {
	group, workload string
	fig             []metric
	refs            []reference
}

// Table writes the markdown table of res: every row that has a figure,
// with each reference's value and the ratio from the same run (a
// reference that did not run says "not measured" and its ratio "—"),
// then a line naming the rows whose benchmarks did not run; then the
// growth study's tables (GrowthTable) if res has its results. Output of
// the growth study alone (run.sh --growth) gets only those.
func Table(w io.Writer, res Results) error {
	if res.HasGrowth() {
		if err := mainTable(w, res, true); err != nil {
			return err
		}
		return GrowthTable(w, res)
	}
	return mainTable(w, res, false)
}

// mainTable writes the table of rows(res); with growth, it writes
// nothing when none of its rows ran and ends with a blank line otherwise.
func mainTable(w io.Writer, res Results, growth bool) error {
	if growth && !slices.ContainsFunc(rows(res), func(rw row) bool { return res.show(rw.fig) != notMeasured }) {
		return nil
	}
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, "| group | workload | figure (median) | reference, same run | ratio |")
	fmt.Fprintln(bw, "| --- | --- | ---: | ---: | ---: |")
	var missing []string
	for _, rw := range rows(res) {
		fig := res.show(rw.fig)
		if fig == notMeasured {
			missing = append(missing, rw.group+": "+rw.workload)
			continue
		}
		var refs, ratios []string
		for _, ref := range rw.refs {
			refs = append(refs, strings.TrimSpace(ref.label+" "+res.show(ref.show)))
			ratios = append(ratios, res.ratio(ref))
		}
		fmt.Fprintf(bw, "| %s | %s | %s | %s | %s |\n", rw.group, rw.workload, fig,
			orDash(strings.Join(refs, "; ")), orDash(strings.Join(ratios, "; ")))
	}
	if len(missing) > 0 {
		fmt.Fprintf(bw, "\nNot measured in this run: %s.\n", strings.Join(missing, "; "))
	}
	if growth {
		fmt.Fprintln(bw)
	}
	return bw.Flush()
}

const notMeasured = "not measured"

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// show formats metrics of one cell, "12,345/s, p50 543 µs, p99 1.2 ms",
// or "not measured" if the first is missing.
func (r Results) show(ms []metric) string {
	var parts []string
	for i, mt := range ms {
		v, ok := r.val(mt)
		if !ok {
			if i == 0 {
				return notMeasured
			}
			continue
		}
		parts = append(parts, formatMetric(mt.unit, v))
	}
	return strings.Join(parts, ", ")
}

func (r Results) ratio(ref reference) string {
	if ref.num == (metric{}) {
		return ""
	}
	n, ok1 := r.val(ref.num)
	d, ok2 := r.val(ref.den)
	if ref.plus != (metric{}) {
		p, ok3 := r.val(ref.plus)
		d, ok2 = d+p, ok2 && ok3
	}
	if !ok1 || !ok2 || d == 0 {
		return "—"
	}
	return strings.TrimSpace(fmt.Sprintf("%s× %s", sig(n/d), ref.note))
}

// formatMetric renders a value by its unit: rates with thousands
// separators, latencies in µs or ms, sizes in MB, durations in s.
func formatMetric(unit string, v float64) string {
	switch {
	case strings.HasSuffix(unit, "-µs"):
		q := strings.TrimSuffix(unit, "-µs")
		if v >= 1000 {
			return fmt.Sprintf("%s %s ms", q, sig(v/1000))
		}
		return fmt.Sprintf("%s %s µs", q, sig(v))
	case unit == "MB/s" || strings.HasSuffix(unit, "-MB/s"):
		return fmt.Sprintf("%s MB/s", sig(v))
	case strings.HasSuffix(unit, "/s"):
		return thousands(v) + "/s"
	case strings.HasSuffix(unit, "-MB"):
		return fmt.Sprintf("%s %s MB", strings.TrimSuffix(unit, "-MB"), sig(v))
	case strings.HasSuffix(unit, "-s"):
		return fmt.Sprintf("%s %s s", strings.TrimSuffix(unit, "-s"), sig(v))
	case strings.HasSuffix(unit, "-%"):
		return fmt.Sprintf("%s %s%%", strings.TrimSuffix(unit, "-%"), sig(v))
	}
	return sig(v) + " " + unit
}

// sig renders v with about three significant digits.
func sig(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 100:
		return thousands(v)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case a == 0:
		return "0"
	}
	// two significant digits: 0.50, 0.044
	return strconv.FormatFloat(v, 'f', 1-int(math.Floor(math.Log10(a))), 64)
}

func thousands(v float64) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// subNames returns the sorted values of key= in the names of benchmarks
// that start with prefix ("CheckpointUpload/state=" → "100MB", "1GB").
func (r Results) subNames(prefix string) []string {
	seen := map[string]bool{}
	for name := range r {
		rest, ok := strings.CutPrefix(name, "Benchmark"+prefix)
		if !ok {
			continue
		}
		rest, _, _ = strings.Cut(rest, "/")
		seen[rest] = true
	}
	out := make([]string, 0, len(seen))
	for s := range seen {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}
