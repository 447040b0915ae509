package daemon

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/statedhq/stated/daemon/metrics"
)

// countsEvery rate-limits the state scan behind the sessions, TTL backlog
// and state size gauges (see fsm.Counts): scrapes in between report the
// last scan again.
const countsEvery = 10 * time.Second

// The sampling of the mutex and block profiles with --enable-pprof.
const (
	pprofMutexFraction = 100
	pprofBlockRate     = int(time.Millisecond)
)

// metricsServer serves the daemon's own Prometheus registry over HTTP.
type metricsServer struct {
	ln   net.Listener
	reg  *prometheus.Registry
	grpc *metrics.GRPC
	srv  *http.Server
	done chan struct{}
}

// listenMetrics takes MetricsAddr, with the other listeners, so that a
// busy address fails Start before the store opens.
func (d *Daemon) listenMetrics() error {
	if d.cfg.MetricsAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", d.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("daemon: metrics: listen on %s (--metrics-addr): %w", d.cfg.MetricsAddr, err)
	}
	d.metrics = &metricsServer{ln: ln, reg: prometheus.NewRegistry()}
	return nil
}

// registerMetrics registers the collectors once the store is open
// (nothing without MetricsAddr). It runs before the checkpoint
// coordinator starts, so that no completed checkpoint goes unobserved.
func (d *Daemon) registerMetrics() {
	m := d.metrics
	if m == nil {
		return
	}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.grpc = metrics.NewGRPC(m.reg)
	m.reg.MustRegister(metrics.NewStoreCollector(d.store, countsEvery), metrics.NewStorageCollector(d.store))
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "stated_data_dir_free_bytes",
			Help: "Free space of the data dir's disk, as an unprivileged process may use it (read at most every 100 ms; NaN when it cannot be read)."},
			func() float64 {
				free, err := d.disk.Free()
				if err != nil {
					return math.NaN()
				}
				return float64(free)
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "stated_min_free_disk_bytes",
			Help: "The node's --min-free-disk: below it, as leader, it refuses commits (0: never)."},
			func() float64 { return float64(d.disk.min) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "stated_commits_refused_disk_full_total",
			Help: "Commit calls (Commit, CommitBatch) this node refused as leader because its data dir's disk had less free space than --min-free-disk."},
			func() float64 { return float64(d.disk.Refused()) }),
	)
	ck := metrics.NewCheckpoints(m.reg, d.checkpointStats)
	d.ckpt.completed, d.ckpt.counted = ck.Observe, ck.ObserveCount
}

// metricsServerOptions returns the gRPC interceptors that count and time
// every RPC; none without MetricsAddr.
func (d *Daemon) metricsServerOptions() []grpc.ServerOption {
	m := d.metrics
	if m == nil {
		return nil
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(m.grpc.Unary),
		grpc.ChainStreamInterceptor(m.grpc.Stream),
	}
}

// checkpointStats is what the metrics read of checkpoints: this node's
// coordinator's counters, and the last completed checkpoint as the
// cluster recorded it (every node reports it, not only the leader).
func (d *Daemon) checkpointStats() metrics.CheckpointStats {
	st := d.ckpt.Status()
	s := metrics.CheckpointStats{
		Enabled: st.Enabled, Completed: st.Completed, Failures: st.Failures, BytesUploaded: uint64(st.BytesUploadedTotal),
		KafkaCommits: st.KafkaCommits, KafkaCommitErrors: st.KafkaCommitErrors, KafkaMemberCommits: st.KafkaMemberCommits,
		ChangelogCompleted: st.ChangelogCheckpoints, ChangelogBytes: uint64(st.ChangelogBytes),
		ChangelogSegmentsFromLog: st.ChangelogSegmentsFromLog,
	}
	if cs, err := d.store.CheckpointState(); err == nil && cs.Completed > 0 {
		s.LastEpoch = cs.Completed
		if cs.CompletedAt > 0 {
			s.LastCompletedAt = time.Unix(0, cs.CompletedAt)
		}
	}
	return s
}

// serveMetrics serves /metrics until closeMetrics. It starts as soon as
// the store is open, before the node has a leader or has replayed its
// log: a node that cannot find a majority is what stated_raft_has_leader
// 0 and the profiles are for.
func (d *Daemon) serveMetrics() {
	m := d.metrics
	if m == nil {
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		Registry:      m.reg,
		ErrorHandling: promhttp.ContinueOnError,
	}))
	if d.cfg.EnablePprof {
		// The mutex and block profiles record nothing unless sampling
		// is on: one contention event in 100, and a blocking event per
		// millisecond spent blocked on average.
		runtime.SetMutexProfileFraction(pprofMutexFraction)
		runtime.SetBlockProfileRate(pprofBlockRate)
		// What net/http/pprof registers on http.DefaultServeMux, which
		// the daemon does not serve.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	m.done = make(chan struct{})
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(m.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.logger.Error("daemon: metrics server stopped", "addr", m.ln.Addr().String(), "error", err)
		}
	}()
}

// closeMetrics stops the metrics server, letting a scrape in progress
// finish for a moment; it closes the listener if the server never ran.
func (d *Daemon) closeMetrics() {
	m := d.metrics
	if m == nil {
		return
	}
	if m.srv == nil {
		m.ln.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := m.srv.Shutdown(ctx); err != nil {
		m.srv.Close()
	}
	<-m.done
}

// MetricsAddr is the address /metrics is served on, with the port the
// system picked for ":0"; "" without Config.MetricsAddr.
func (d *Daemon) MetricsAddr() string {
	if d.metrics == nil {
		return ""
	}
	return d.metrics.ln.Addr().String()
}
