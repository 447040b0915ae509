package daemon_test

import (
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// scrapeMetrics GETs addr's /metrics and parses it.
func scrapeMetrics(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse the scrape of %s: %v", addr, err)
	}
	return fams
}

// counterWith is the value of the counter name whose label has value;
// -1 when there is none.
func counterWith(fams map[string]*dto.MetricFamily, name, label, value string) float64 {
	for _, m := range fams[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == label && l.GetValue() == value {
				return m.GetCounter().GetValue()
			}
		}
	}
	return -1
}

// TestEveryNodeReportsTheLateRecordsOfTheCluster: a window namespace's
// late records are counted in the replicated state, so every node reports
// the cluster's count, not what it dropped itself (docs/METRICS.md): one
// record dropped reads 1 on each node, and a sum over nodes would count it
// once per node.
func TestEveryNodeReportsTheLateRecordsOfTheCluster(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 2, func(c *daemon.Config) { c.MetricsAddr = "127.0.0.1:0" })
	conn := dial(t, "unix://"+nodes[0].SocketPath())
	state, windows := statedv1.NewStateClient(conn), statedv1.NewWindowsClient(conn)
	ctx := testContext(t)
	zero := int64(0)
	if _, err := windows.Define(ctx, &statedv1.DefineWindowsRequest{Spec: &statedv1.WindowSpec{
		Namespace: "clicks", Shape: statedv1.WindowShape_WINDOW_SHAPE_TUMBLING, SizeMs: 60_000,
		GraceMs: &zero, MaxOutOfOrderMs: &zero,
		Aggregate: statedv1.WindowAggregate_WINDOW_AGGREGATE_COUNT,
		Emit:      statedv1.WindowEmit_WINDOW_EMIT_FINAL, Late: statedv1.LatePolicy_LATE_POLICY_DROP,
	}}); err != nil {
		t.Fatal(err)
	}
	// The watermark moves to 200 s, then a record of the window [0, 60 s),
	// closed since, arrives: it is dropped.
	if _, err := state.Commit(ctx, &statedv1.CommitRequest{
		WatermarkHints: []*statedv1.WatermarkHint{{Namespace: "clicks", TimeMs: 200_000}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := state.Commit(ctx, &statedv1.CommitRequest{
		WindowAdds: []*statedv1.WindowAdd{{Namespace: "clicks", Key: []byte("ann"), EventTimeMs: 1_000}},
	}); err != nil {
		t.Fatal(err)
	}
	for _, d := range nodes {
		var got float64
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			got = counterWith(scrapeMetrics(t, d.MetricsAddr()), "stated_window_late_dropped_total", "namespace", "clicks")
			if got == 1 || time.Now().After(deadline) {
				break
			}
		}
		if got != 1 {
			t.Errorf("%s: stated_window_late_dropped_total{namespace=\"clicks\"} = %v; want 1, the one record the cluster dropped", d.NodeID(), got)
		}
	}
}

// TestTheDashboardDoesNotSumWhatEveryNodeReports: metrics whose every
// node reports the same event (a record the cluster dropped, a leader
// change every node sees) are read with max over the nodes in the shipped
// Grafana dashboard; a sum counts each event once per node.
func TestTheDashboardDoesNotSumWhatEveryNodeReports(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../deploy/grafana/stated.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	shared := regexp.MustCompile(`stated_window_late_dropped_total|stated_raft_leader_changes_total`)
	summed := regexp.MustCompile(`\bsum\b`)
	found := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			if !shared.MatchString(tg.Expr) {
				continue
			}
			found++
			if summed.MatchString(tg.Expr) {
				t.Errorf("panel %q sums over the nodes what each of them reports for the cluster: %s", p.Title, tg.Expr)
			}
		}
	}
	if found != 2 {
		t.Fatalf("%d of the dashboard's queries read the late records or the leader changes; want 2", found)
	}
}

// gaugeOf is the value of the unlabelled gauge name; -1 when it is absent.
func gaugeOf(fams map[string]*dto.MetricFamily, name string) float64 {
	if ms := fams[name].GetMetric(); len(ms) == 1 {
		return ms[0].GetGauge().GetValue()
	}
	return -1
}

// TestAFormerLeaderReportsNoChangelogBytes: stated_checkpoint_changelog_bytes
// is what a restore of the newest checkpoint replays, the leader's
// changelog on its tables. A node that stops leading can never build on
// that chain again (it takes its tables first when it leads again), and
// the next leader's checkpoints are the newer ones: it reports 0, so that
// the nodes' max is the leader's, as `stated status` shows it, and not a
// former leader's bytes kept for ever.
func TestAFormerLeaderReportsNoChangelogBytes(t *testing.T) {
	t.Parallel()
	bucket := fileBucket(t)
	nodes := daemontest.StartCluster(t, 2, func(c *daemon.Config) {
		c.MetricsAddr = "127.0.0.1:0"
		c.CheckpointURL, c.CheckpointInterval, c.CheckpointRetain = bucket, 0, 10
		c.CheckpointMaterializeInterval = time.Hour
	})
	n1, n2 := nodes[0], nodes[1]
	ctx := testContext(t)
	conn := dial(t, "unix://"+n1.SocketPath())
	state, cps := statedv1.NewStateClient(conn), statedv1.NewCheckpointsClient(conn)
	pad(ctx, t, state, 200)
	trigger := kindTriggerAcrossTerms(ctx, t, state, cps, nodes)
	trigger(false, "the first checkpoint")
	pad(ctx, t, state, 1)
	trigger(true, "right after a table checkpoint")
	// node1 must be the leader that took it (an election under load may
	// have chosen node2): node2 hands leadership back, and the pair is
	// taken again.
	for !n1.Store().IsLeader() {
		if n2.Store().IsLeader() {
			if _, err := n2.Store().TransferLeadership(ctx); err != nil {
				t.Logf("node2 hands leadership back: %v", err)
			}
			trigger(false, "node1's first checkpoint after it took over")
			pad(ctx, t, state, 1)
			trigger(true, "right after node1's table checkpoint")
		}
		if ctx.Err() != nil {
			t.Fatal("node1 does not lead")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := gaugeOf(scrapeMetrics(t, n1.MetricsAddr()), "stated_checkpoint_changelog_bytes"); got <= 0 {
		t.Fatalf("the leader's stated_checkpoint_changelog_bytes = %v after a changelog checkpoint; want its segment's bytes", got)
	}

	// node2 stops: node1 loses its quorum and steps down.
	if err := n2.Close(); err != nil {
		t.Fatal(err)
	}
	var got float64
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got = gaugeOf(scrapeMetrics(t, n1.MetricsAddr()), "stated_checkpoint_changelog_bytes")
		if (got == 0 && !n1.Store().IsLeader()) || time.Now().After(deadline) {
			break
		}
	}
	if got != 0 || n1.Store().IsLeader() {
		t.Fatalf("node1, leader %t: stated_checkpoint_changelog_bytes = %v 20 s after it lost its quorum; want 0 once it stopped leading",
			n1.Store().IsLeader(), got)
	}
}

// TestTheWindowCacheIsOnMetrics: three commits adding to one window read
// its aggregate three times: the first from Pebble (a miss: the window
// is new), the next two from the window cache. With the cache off, every
// read is a miss and nothing is held.
func TestTheWindowCacheIsOnMetrics(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                          string
		size                          int64
		hits, misses, entries, zeroed float64
	}{
		{"on", daemon.DefaultConfig().WindowCacheSize, 2, 1, 1, 0},
		{"off", 0, 0, 3, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t)
			cfg.MetricsAddr = "127.0.0.1:0"
			cfg.WindowCacheSize = tc.size
			d, err := daemon.Start(testContext(t), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			conn := dial(t, "unix://"+cfg.SocketPath)
			state, windows := statedv1.NewStateClient(conn), statedv1.NewWindowsClient(conn)
			ctx := testContext(t)
			zero, hour := int64(0), int64(3_600_000)
			if _, err := windows.Define(ctx, &statedv1.DefineWindowsRequest{Spec: &statedv1.WindowSpec{
				Namespace: "clicks", Shape: statedv1.WindowShape_WINDOW_SHAPE_TUMBLING, SizeMs: 60_000,
				GraceMs: &zero, MaxOutOfOrderMs: &hour,
				Aggregate: statedv1.WindowAggregate_WINDOW_AGGREGATE_COUNT,
				Emit:      statedv1.WindowEmit_WINDOW_EMIT_FINAL, Late: statedv1.LatePolicy_LATE_POLICY_DROP,
			}}); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				if _, err := state.Commit(ctx, &statedv1.CommitRequest{
					WindowAdds: []*statedv1.WindowAdd{{Namespace: "clicks", Key: []byte("ann"), EventTimeMs: 1_000 + int64(i)}},
				}); err != nil {
					t.Fatal(err)
				}
			}
			fams := scrapeMetrics(t, d.MetricsAddr())
			value := func(name string) float64 {
				ms := fams[name].GetMetric()
				if len(ms) != 1 {
					t.Fatalf("%s: %d series, want 1", name, len(ms))
				}
				if c := ms[0].GetCounter(); c != nil {
					return c.GetValue()
				}
				return ms[0].GetGauge().GetValue()
			}
			if got := value("stated_window_cache_hits_total"); got != tc.hits {
				t.Errorf("stated_window_cache_hits_total = %v, want %v", got, tc.hits)
			}
			if got := value("stated_window_cache_misses_total"); got != tc.misses {
				t.Errorf("stated_window_cache_misses_total = %v, want %v", got, tc.misses)
			}
			if got := value("stated_window_cache_entries"); got != tc.entries {
				t.Errorf("stated_window_cache_entries = %v, want %v", got, tc.entries)
			}
			if got := value("stated_window_cache_bytes"); (got == 0) != (tc.zeroed == 1) || got > float64(max(tc.size, 1)) {
				t.Errorf("stated_window_cache_bytes = %v with a cache of %d bytes", got, tc.size)
			}
		})
	}
}
