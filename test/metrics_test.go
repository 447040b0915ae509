package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// scrape GETs addr's /metrics and parses it.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape: %s: %s", resp.Status, b)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse the scrape: %v", err)
	}
	return fams
}

// sample finds the metric of family name whose labels include labels
// (name=value pairs); nil if there is none.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		return m
	}
	return nil
}

// value is a counter's or gauge's value; it fails the test if the sample
// is missing.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	m := sample(fams, name, labels...)
	switch {
	case m == nil:
		t.Fatalf("no sample %s%v", name, labels)
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Fatalf("%s%v is neither a counter nor a gauge", name, labels)
	return 0
}

// observations is a histogram's sample count; 0 if the series is absent.
func observations(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) uint64 {
	t.Helper()
	m := sample(fams, name, labels...)
	if m == nil {
		return 0
	}
	if m.Histogram == nil {
		t.Fatalf("%s%v is not a histogram", name, labels)
	}
	return m.Histogram.GetSampleCount()
}

func TestMetricsCountAKnownWorkloadExactly(t *testing.T) {
	t.Parallel()
	const (
		commits   = 7 // keyed-state commits
		mutations = 3 // per commit
		reads     = 4 // Gets at each consistency level
	)
	d := daemontest.Start(t, func(c *daemon.Config) {
		c.MetricsAddr = "127.0.0.1:0"
		c.CheckpointInterval = 0 // checkpoints on request only: the workload's one
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+d.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	defer conn.Close()
	st, win, ck := statedv1.NewStateClient(conn), statedv1.NewWindowsClient(conn), statedv1.NewCheckpointsClient(conn)
	start := time.Now()

	var commitBytes int
	var last uint64
	for i := range commits {
		req := &statedv1.CommitRequest{}
		for j := range mutations {
			req.Mutations = append(req.Mutations, &statedv1.Mutation{Kind: statedv1.MutationKind_MUTATION_KIND_PUT,
				Namespace: "m", Key: fmt.Appendf(nil, "k-%d-%d", i, j), Value: []byte("value")})
		}
		resp, err := st.Commit(ctx, req)
		must(t, err)
		commitBytes += proto.Size(req)
		last = resp.GetIndex()
	}
	// A CommitBatch call (what the SDK sends for concurrent small commits)
	// counts each commit its result answers OK, and not the refused one.
	batch := &statedv1.CommitBatchRequest{Commits: []*statedv1.CommitRequest{
		{Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "m", Key: []byte("b-0"), Value: []byte("v")}}},
		{Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Key: []byte("no namespace")}}},
		{Mutations: []*statedv1.Mutation{
			{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "m", Key: []byte("b-1"), Value: []byte("v")},
			{Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, Namespace: "m", Key: []byte("b-2"), Delta: 1},
		}},
	}}
	br, err := st.CommitBatch(ctx, batch)
	must(t, err)
	if res := br.GetResults(); len(res) != 3 || res[0].GetError() != nil || res[1].GetError() == nil || res[2].GetError() != nil {
		t.Fatalf("commit batch results %v; want the second refused and the others applied", res)
	}
	commitBytes += proto.Size(batch.Commits[0]) + proto.Size(batch.Commits[2])
	// A request on a CommitStream (how the SDK sends them) counts as a
	// CommitBatch call's commits do, and as a request of its own method;
	// the stream itself is not a request.
	cs, err := st.CommitStream(ctx)
	must(t, err)
	streamed := &statedv1.CommitStreamRequest{Id: 1, Batch: &statedv1.CommitBatchRequest{Commits: []*statedv1.CommitRequest{
		{Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "m", Key: []byte("s-0"), Value: []byte("v")}}},
		{Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Key: []byte("no namespace")}}},
	}}}
	must(t, cs.Send(streamed))
	sr, err := cs.Recv()
	must(t, err)
	if res := sr.GetBatch().GetResults(); len(res) != 2 || res[0].GetError() != nil || res[1].GetError() == nil {
		t.Fatalf("commit stream results %v; want the second refused and the first applied", sr)
	}
	must(t, cs.CloseSend())
	if _, err := cs.Recv(); err != io.EOF {
		t.Fatalf("the commit stream after CloseSend: %v, want its end", err)
	}
	commitBytes += proto.Size(streamed.Batch.Commits[0])
	const batchedCommits, batchedMutations = 2 + 1, 3 + 1
	// A refused commit counts as a request with its code and in the
	// commit latency, not as a commit.
	_, err = st.Commit(ctx, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Key: []byte("k")}}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("commit without a namespace: %v, want InvalidArgument", err)
	}
	// A window namespace whose watermark is a minute behind the clock.
	spec := &statedv1.WindowSpec{
		Namespace: "clicks", Shape: statedv1.WindowShape_WINDOW_SHAPE_TUMBLING, SizeMs: 60_000,
		GraceMs: proto.Int64(0), MaxOutOfOrderMs: proto.Int64(0),
		Aggregate: statedv1.WindowAggregate_WINDOW_AGGREGATE_COUNT,
		Emit:      statedv1.WindowEmit_WINDOW_EMIT_FINAL, Late: statedv1.LatePolicy_LATE_POLICY_DROP,
	}
	_, err = win.Define(ctx, &statedv1.DefineWindowsRequest{Spec: spec})
	must(t, err)
	wm := time.Now().Add(-time.Minute).UnixMilli()
	windowCommit := &statedv1.CommitRequest{
		WindowAdds:     []*statedv1.WindowAdd{{Namespace: "clicks", Key: []byte("u"), EventTimeMs: wm}},
		WatermarkHints: []*statedv1.WatermarkHint{{Namespace: "clicks", TimeMs: wm}},
	}
	_, err = st.Commit(ctx, windowCommit)
	must(t, err)
	commitBytes += proto.Size(windowCommit)
	_, err = st.OpenSession(ctx, &statedv1.OpenSessionRequest{ClientId: "metrics-test"})
	must(t, err)

	levels := map[string]*statedv1.ReadOptions{
		"unspecified":  nil, // reads like local
		"local":        {Consistency: statedv1.Consistency_CONSISTENCY_LOCAL},
		"session":      {Consistency: statedv1.Consistency_CONSISTENCY_SESSION, MinIndex: last},
		"linearizable": {Consistency: statedv1.Consistency_CONSISTENCY_LINEARIZABLE},
	}
	for _, o := range levels {
		for range reads {
			_, err := st.Get(ctx, &statedv1.GetRequest{Namespace: "m", Key: []byte("k-0-0"), Kind: statedv1.Kind_KIND_VALUE, Read: o})
			must(t, err)
		}
	}
	scan, err := st.Scan(ctx, &statedv1.ScanRequest{Namespace: "m", Read: levels["linearizable"]})
	must(t, err)
	for {
		if _, err := scan.Recv(); err == io.EOF {
			break
		} else {
			must(t, err)
		}
	}
	tr, err := ck.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
	must(t, err)

	fams := scrape(t, d.MetricsAddr())
	eq := func(what string, got, want float64) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	const commitM = "stated.v1.State/Commit"
	eq("stated_commits_total", value(t, fams, "stated_commits_total"), commits+1+batchedCommits)
	eq("stated_commit_mutations_total", value(t, fams, "stated_commit_mutations_total"), commits*mutations+batchedMutations)
	eq("stated_commit_bytes_total", value(t, fams, "stated_commit_bytes_total"), float64(commitBytes))
	// Every commit answered: the Commit calls (one refused), the three
	// of the CommitBatch call (one refused) and the two of the streamed
	// request (one refused).
	eq("commit latency observations", float64(observations(t, fams, "stated_commit_duration_seconds")), commits+2+3+2)
	const streamM = "stated.v1.State/CommitStream"
	eq("streamed requests", value(t, fams, "stated_grpc_requests_total", "method", streamM, "code", "OK"), 1)
	eq("streamed request latency observations", float64(observations(t, fams, "stated_grpc_request_duration_seconds", "method", streamM)), 1)
	eq("OK commits", value(t, fams, "stated_grpc_requests_total", "method", commitM, "code", "OK"), commits+1)
	eq("refused commits", value(t, fams, "stated_grpc_requests_total", "method", commitM, "code", "InvalidArgument"), 1)
	eq("commit RPC latency observations", float64(observations(t, fams, "stated_grpc_request_duration_seconds", "method", commitM)), commits+2)
	eq("Trigger requests", value(t, fams, "stated_grpc_requests_total", "method", "stated.v1.Checkpoints/Trigger", "code", "OK"), 1)
	for level, want := range map[string]uint64{"local": 2 * reads, "session": reads, "linearizable": reads} {
		eq("Get reads at "+level, float64(observations(t, fams, "stated_read_duration_seconds", "method", "stated.v1.State/Get", "consistency", level)), float64(want))
	}
	eq("Scan reads", float64(observations(t, fams, "stated_read_duration_seconds", "method", "stated.v1.State/Scan", "consistency", "linearizable")), 1)
	eq("Get RPCs", value(t, fams, "stated_grpc_requests_total", "method", "stated.v1.State/Get", "code", "OK"), 4*reads)

	eq("checkpoint duration observations", float64(observations(t, fams, "stated_checkpoint_duration_seconds")), 1)
	eq("stated_checkpoints_completed_total", value(t, fams, "stated_checkpoints_completed_total"), 1)
	eq("stated_checkpoint_failures_total", value(t, fams, "stated_checkpoint_failures_total"), 0)
	// The first checkpoint's count has no earlier one to start from.
	eq("checkpoint count observations", float64(observations(t, fams, "stated_checkpoint_count_duration_seconds")), 1)
	eq("stated_checkpoint_counts_whole_total", value(t, fams, "stated_checkpoint_counts_whole_total"), 1)
	eq("stated_checkpoint_epoch", value(t, fams, "stated_checkpoint_epoch"), float64(tr.GetEpoch()))
	if b := value(t, fams, "stated_checkpoint_uploaded_bytes_total"); b <= 0 {
		t.Errorf("stated_checkpoint_uploaded_bytes_total = %v, want the first checkpoint's files", b)
	}
	if at := value(t, fams, "stated_checkpoint_last_completed_timestamp_seconds"); at < float64(start.Unix()) || at > float64(time.Now().Unix()+1) {
		t.Errorf("stated_checkpoint_last_completed_timestamp_seconds = %v, want within the test (%d..now)", at, start.Unix())
	}

	eq("stated_raft_role{leader}", value(t, fams, "stated_raft_role", "role", "leader"), 1)
	eq("stated_raft_role{follower}", value(t, fams, "stated_raft_role", "role", "follower"), 0)
	eq("stated_raft_has_leader", value(t, fams, "stated_raft_has_leader"), 1)
	eq("stated_raft_leader_changes_total", value(t, fams, "stated_raft_leader_changes_total"), 0)
	if term := value(t, fams, "stated_raft_term"); term < 1 {
		t.Errorf("stated_raft_term = %v, want at least 1", term)
	}
	if ai, ci := value(t, fams, "stated_raft_applied_index"), value(t, fams, "stated_raft_commit_index"); ai < float64(last) || ci < float64(last) {
		t.Errorf("applied index %v, commit index %v: want at least the last commit's %d", ai, ci, last)
	}
	eq("stated_state_keys", value(t, fams, "stated_state_keys"), commits*mutations+batchedMutations) // the batch's writes are to keys of their own
	eq("stated_sessions", value(t, fams, "stated_sessions"), 1)
	eq("stated_ended_sessions", value(t, fams, "stated_ended_sessions"), 0) // none ended yet
	eq("stated_ttl_backlog_entries", value(t, fams, "stated_ttl_backlog_entries"), 0)
	eq("stated_window_namespaces", value(t, fams, "stated_window_namespaces"), 1)
	eq("stated_window_open_windows{clicks}", value(t, fams, "stated_window_open_windows", "namespace", "clicks"), 1)
	if lag := value(t, fams, "stated_window_watermark_lag_seconds", "namespace", "clicks"); lag < 60 || lag > 60+time.Since(start).Seconds()+1 {
		t.Errorf("stated_window_watermark_lag_seconds{clicks} = %v, want a minute and the test's duration at most", lag)
	}
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"} {
		if fams[name] == nil {
			t.Errorf("no %s: the Go or process collector is missing", name)
		}
	}
}

func TestMetricsAddressInUseFailsStartNamingIt(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t, func(c *daemon.Config) { c.MetricsAddr = "127.0.0.1:0" })
	cfg := daemontest.Config(t, "node2")
	cfg.MetricsAddr = d.MetricsAddr()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d2, err := daemon.Start(ctx, cfg)
	if err == nil {
		d2.Close()
		t.Fatalf("a second daemon started on metrics address %s", cfg.MetricsAddr)
	}
	if !strings.Contains(err.Error(), cfg.MetricsAddr) || !strings.Contains(err.Error(), "--metrics-addr") {
		t.Fatalf("error %q does not name the metrics address %s and its flag", err, cfg.MetricsAddr)
	}
	// The first daemon still serves its metrics.
	if fams := scrape(t, d.MetricsAddr()); fams["stated_raft_term"] == nil {
		t.Fatal("the first daemon's scrape lost stated_raft_term")
	}

	cfg = daemontest.Config(t, "node3")
	cfg.MetricsAddr = "9420"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "MetricsAddr") {
		t.Fatalf("MetricsAddr without a host: Validate() = %v, want an error naming MetricsAddr", err)
	}
}

// TestPprofIsServedOnTheMetricsAddressOnlyWhenEnabled: --enable-pprof
// serves the runtime's profiles beside /metrics, a heap profile among
// them; without it /debug/pprof/ is not found; and it needs a metrics
// address.
func TestPprofIsServedOnTheMetricsAddressOnlyWhenEnabled(t *testing.T) {
	t.Parallel()
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		must(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		must(t, err)
		return resp.StatusCode, string(body)
	}
	on := daemontest.Start(t, func(c *daemon.Config) { c.MetricsAddr, c.EnablePprof = "127.0.0.1:0", true })
	if code, body := get("http://" + on.MetricsAddr() + "/debug/pprof/heap?debug=1"); code != http.StatusOK || !strings.Contains(body, "heap profile:") {
		t.Fatalf("GET /debug/pprof/heap?debug=1 with EnablePprof: %d %.200q, want 200 and a heap profile", code, body)
	}
	if code, body := get("http://" + on.MetricsAddr() + "/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !strings.Contains(body, "goroutine profile:") {
		t.Fatalf("GET /debug/pprof/goroutine?debug=1 with EnablePprof: %d %.200q, want 200 and a goroutine profile", code, body)
	}
	if fams := scrape(t, on.MetricsAddr()); fams["stated_raft_term"] == nil {
		t.Fatal("with EnablePprof, /metrics lost stated_raft_term")
	}

	off := daemontest.Start(t, func(c *daemon.Config) { c.MetricsAddr = "127.0.0.1:0" })
	if code, _ := get("http://" + off.MetricsAddr() + "/debug/pprof/heap?debug=1"); code != http.StatusNotFound {
		t.Fatalf("GET /debug/pprof/heap without EnablePprof: %d, want 404", code)
	}

	cfg := daemontest.Config(t, "node3")
	cfg.EnablePprof = true
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--enable-pprof") || !strings.Contains(err.Error(), "--metrics-addr") {
		t.Fatalf("EnablePprof without MetricsAddr: Validate() = %v, want an error naming --enable-pprof and --metrics-addr", err)
	}
}

// TestGrafanaDashboardQueriesMetricsTheDaemonServes parses the shipped
// dashboard and checks that every stated_ metric its queries name is one
// docs/METRICS.md documents, and that the metrics of a running daemon
// that the dashboard plots without windows or Kafka are served.
func TestGrafanaDashboardQueriesMetricsTheDaemonServes(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../deploy/grafana/stated.json")
	must(t, err)
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("deploy/grafana/stated.json: %v", err)
	}
	doc, err := os.ReadFile("../docs/METRICS.md")
	must(t, err)

	d := daemontest.Start(t, func(c *daemon.Config) { c.MetricsAddr = "127.0.0.1:0" })
	fams := scrape(t, d.MetricsAddr())
	served := func(name string) bool {
		for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && fams[base] != nil {
				return true
			}
		}
		return false
	}
	// Metrics that need a workload, windows or Kafka to appear.
	onlyWithUse := []string{"stated_grpc_", "stated_commit", "stated_read_", "stated_window_", "stated_kafka_", "stated_checkpoint_duration", "stated_checkpoint_last_completed"}

	metricName := regexp.MustCompile(`\b(stated|go|process)_[a-z0-9_]+\b`)
	exprs := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs++
			for _, name := range metricName.FindAllString(tg.Expr, -1) {
				base := name
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					base = strings.TrimSuffix(base, s)
				}
				if strings.HasPrefix(name, "stated_") && !strings.Contains(string(doc), "`"+base+"`") {
					t.Errorf("panel %q: %s is not documented in docs/METRICS.md", p.Title, base)
				}
				if !served(name) && !slices.ContainsFunc(onlyWithUse, func(p string) bool { return strings.HasPrefix(name, p) }) {
					t.Errorf("panel %q: %s is not served by a running daemon", p.Title, name)
				}
			}
		}
	}
	if exprs < 10 {
		t.Fatalf("the dashboard has %d queries; want its panels' queries", exprs)
	}
}

// TestRunServesMetricsOnMetricsAddr runs `stated run --metrics-addr` as a
// process and scrapes it.
func TestRunServesMetricsOnMetricsAddr(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	addr := freeAddr(t)
	n.args = []string{"--metrics-addr", addr}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n.start(ctx)
	fams := scrape(t, addr)
	if v := value(t, fams, "stated_raft_role", "role", "leader"); v != 1 {
		t.Errorf(`stated_raft_role{role="leader"} = %v, want 1`, v)
	}
	if fams["process_cpu_seconds_total"] == nil {
		t.Error("no process_cpu_seconds_total")
	}
	if !strings.Contains(n.logs.String(), "metrics:     http://"+addr+"/metrics") {
		t.Errorf("the serving banner does not show the metrics URL:\n%s", n.logs)
	}
}

// TestStorageMetricsDescribeTheStateStore scrapes a daemon after a commit
// of known size: the state's Pebble metrics are served, every level of the
// tree is labelled, and the WAL counter holds at least the bytes committed.
func TestStorageMetricsDescribeTheStateStore(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t, func(c *daemon.Config) { c.MetricsAddr = "127.0.0.1:0" })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+d.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	defer conn.Close()

	before := value(t, scrape(t, d.MetricsAddr()), "stated_pebble_wal_bytes_total")
	payload := []byte(strings.Repeat("v", 64<<10))
	req := &statedv1.CommitRequest{}
	for i := range 16 {
		req.Mutations = append(req.Mutations, &statedv1.Mutation{Kind: statedv1.MutationKind_MUTATION_KIND_PUT,
			Namespace: "pebble", Key: fmt.Appendf(nil, "k%d", i), Value: payload})
	}
	_, err = statedv1.NewStateClient(conn).Commit(ctx, req)
	must(t, err)

	fams := scrape(t, d.MetricsAddr())
	if got := value(t, fams, "stated_pebble_wal_bytes_total") - before; got < 16*64<<10 {
		t.Errorf("stated_pebble_wal_bytes_total grew by %.0f after a commit of %d value bytes", got, 16*64<<10)
	}
	if v := value(t, fams, "stated_pebble_disk_bytes"); v <= 0 {
		t.Errorf("stated_pebble_disk_bytes = %v", v)
	}
	if v := value(t, fams, "stated_pebble_memtable_bytes"); v <= 0 {
		t.Errorf("stated_pebble_memtable_bytes = %v", v)
	}
	for l := range 7 {
		value(t, fams, "stated_pebble_level_tables", "level", fmt.Sprint(l))
		value(t, fams, "stated_pebble_level_bytes", "level", fmt.Sprint(l))
	}
	for _, name := range []string{"stated_pebble_block_cache_bytes", "stated_pebble_block_cache_hits_total",
		"stated_pebble_block_cache_misses_total", "stated_pebble_l0_sublevels", "stated_pebble_read_amplification",
		"stated_pebble_compaction_debt_bytes", "stated_pebble_flushes_total", "stated_pebble_flushed_bytes_total",
		"stated_pebble_compactions_total", "stated_pebble_compacted_bytes_total", "stated_pebble_write_stalls_total",
		"stated_pebble_write_stall_seconds_total"} {
		if v := value(t, fams, name); v < 0 {
			t.Errorf("%s = %v", name, v)
		}
	}
}
