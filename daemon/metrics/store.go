package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/raftstore/fsm"
)

// Store is what the store collector reads; *raftstore.Store satisfies it.
type Store interface {
	// Status is the node's Raft state; cheap.
	Status() raftstore.Status
	// Counts scans the state (see fsm.Counts): the collector calls it at
	// most once per CountsEvery, in the background.
	Counts(ctx context.Context) (fsm.Counts, error)
	// WindowStatuses lists the window namespaces and their progress.
	WindowStatuses() ([]fsm.WindowStatus, error)
	// SnapshotCounts are the Raft snapshots taken and installed; cheap.
	SnapshotCounts() fsm.SnapshotCounts
	// SnapshotBytesStatus is the log's size since the newest snapshot and
	// the size that triggers the next one; cheap.
	SnapshotBytesStatus() raftstore.SnapshotBytesStatus
	// RestoredFrom is the checkpoint the cluster's state was restored
	// from, if it was, with how long that restore took; one point read.
	RestoredFrom() (fsm.RestoredFrom, bool, error)
}

// roles are the values of stated_raft_role's role label.
var roles = []string{"leader", "follower", "candidate", "shutdown"}

// StoreCollector reports the store's Raft state, its bookkeeping counts
// and its window namespaces, read at scrape time.
type StoreCollector struct {
	store       Store
	countsEvery time.Duration
	now         func() time.Time

	role, term, commitIndex, appliedIndex, lastIndex             *prometheus.Desc
	hasLeader, leaderChanges                                     *prometheus.Desc
	snapshotsTaken, snapshotsInstalled                           *prometheus.Desc
	logBytes, snapshotThreshold                                  *prometheus.Desc
	restoreDuration, restoreTime, restoredEpoch                  *prometheus.Desc
	sessions, endedSessions, ttlBacklog, keys, bytes, namespaces *prometheus.Desc
	wmLag, openWindows, pending, lateDropped                     *prometheus.Desc

	mu         sync.Mutex
	lastLeader string
	seenLeader bool
	changes    uint64
	counts     fsm.Counts
	countsOK   bool
	countsAt   time.Time
	// refreshing is closed when the running scan of the counts ends; nil
	// while none runs.
	refreshing chan struct{}
}

// countsWait is how long a scrape waits for a scan of the counts it
// started before it reports the counts it had: a scan of a large state
// takes longer than a scrape may (Prometheus's default scrape timeout is
// 10 s), and it goes on in the background for the next scrape.
var countsWait = 2 * time.Second

// NewStoreCollector returns a collector over s. Counts, which scans the
// state, runs at most once per countsEvery (zero: on every scrape), in the
// background; a scrape waits up to countsWait for a scan it started, and
// otherwise, or between scans, reports the last counts again.
func NewStoreCollector(s Store, countsEvery time.Duration) *StoreCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &StoreCollector{
		store: s, countsEvery: countsEvery, now: time.Now,
		role:          d("stated_raft_role", "1 for this node's current Raft role, 0 for the others.", "role"),
		term:          d("stated_raft_term", "This node's current Raft term."),
		commitIndex:   d("stated_raft_commit_index", "The highest Raft log index this node knows to be committed."),
		appliedIndex:  d("stated_raft_applied_index", "The highest Raft log index applied to this node's state."),
		lastIndex:     d("stated_raft_last_log_index", "The last index in this node's Raft log."),
		hasLeader:     d("stated_raft_has_leader", "1 when this node knows a Raft leader, else 0."),
		leaderChanges: d("stated_raft_leader_changes_total", "Changes of the leader this node knows of (a loss of leader counts as one), as seen by scrapes: two changes between two scrapes count as at most one."),
		snapshotsTaken: d("stated_raft_snapshots_taken_total",
			"Raft snapshots this node took and persisted (each compacts its Raft log) since it started."),
		snapshotsInstalled: d("stated_raft_snapshots_installed_total",
			"Raft snapshots that replaced this node's state since it started: sent by the leader (InstallSnapshot, a follower too far behind for the log), or its own newest one when it started behind it."),
		logBytes: d("stated_raft_log_bytes_since_snapshot",
			"Bytes of command entries in this node's Raft log after its newest snapshot: what a restart re-reads, and what the size trigger counts."),
		snapshotThreshold: d("stated_raft_snapshot_bytes_threshold",
			"The log size after which this node takes its next Raft snapshot: --raft-snapshot-bytes; 0 when the size trigger is off."),
		restoreDuration: d("stated_restore_duration_seconds",
			"How long the restore this cluster's state came from took (stated restore: selecting, downloading and verifying the checkpoint, and preparing the state); absent when the state was never restored or the restore predates the record."),
		restoreTime: d("stated_restore_timestamp_seconds",
			"When the restore this cluster's state came from prepared it, in Unix seconds; absent as stated_restore_duration_seconds is."),
		restoredEpoch: d("stated_restored_checkpoint_epoch",
			"The checkpoint epoch this cluster's state was restored from; absent when it was never restored."),
		sessions: d("stated_sessions", "Open client sessions, expired ones not yet deleted included."),
		endedSessions: d("stated_ended_sessions",
			"Records of ended client sessions (expired, replaced by a newer open, or dropped by a restore), kept so that a late open of one is refused; expiry deletes each after its retention."),
		ttlBacklog:  d("stated_ttl_backlog_entries", "Entries in the expiry index: entries with a TTL not yet deleted by expiry."),
		keys:        d("stated_state_keys", "Entries of keyed state."),
		bytes:       d("stated_state_bytes", "Bytes of keyed state (keys plus values, as stored)."),
		namespaces:  d("stated_window_namespaces", "Defined window namespaces."),
		wmLag:       d("stated_window_watermark_lag_seconds", "How far a window namespace's watermark trails this node's clock; absent until the namespace has a watermark.", "namespace"),
		openWindows: d("stated_window_open_windows", "Open windows of a window namespace.", "namespace"),
		pending:     d("stated_window_pending_emissions", "Emissions of a window namespace not yet acknowledged.", "namespace"),
		lateDropped: d("stated_window_late_dropped_total", "Records a window namespace dropped as too late.", "namespace"),
	}
}

// Describe implements prometheus.Collector.
func (c *StoreCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.role, c.term, c.commitIndex, c.appliedIndex, c.lastIndex, c.hasLeader, c.leaderChanges,
		c.snapshotsTaken, c.snapshotsInstalled, c.logBytes, c.snapshotThreshold, c.restoreDuration, c.restoreTime, c.restoredEpoch,
		c.sessions, c.endedSessions, c.ttlBacklog, c.keys, c.bytes, c.namespaces, c.wmLag, c.openWindows, c.pending, c.lateDropped} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *StoreCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.store.Status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, r := range roles {
		gauge(c.role, boolFloat(st.Role == r), r)
	}
	gauge(c.term, float64(st.Term))
	gauge(c.commitIndex, float64(st.CommitIndex))
	gauge(c.appliedIndex, float64(st.AppliedIndex))
	gauge(c.lastIndex, float64(st.LastLogIndex))
	gauge(c.hasLeader, boolFloat(st.LeaderID != ""))
	snaps := c.store.SnapshotCounts()
	ch <- prometheus.MustNewConstMetric(c.snapshotsTaken, prometheus.CounterValue, float64(snaps.Persisted))
	ch <- prometheus.MustNewConstMetric(c.snapshotsInstalled, prometheus.CounterValue, float64(snaps.Restored))
	sb := c.store.SnapshotBytesStatus()
	gauge(c.logBytes, float64(sb.SinceSnapshot))
	gauge(c.snapshotThreshold, float64(sb.Threshold))
	if from, ok, err := c.store.RestoredFrom(); err == nil && ok {
		gauge(c.restoredEpoch, float64(from.Epoch))
		if from.Took > 0 {
			gauge(c.restoreDuration, from.Took.Seconds())
			gauge(c.restoreTime, float64(from.At.UnixNano())/1e9)
		}
	}

	c.mu.Lock()
	if c.seenLeader && st.LeaderID != c.lastLeader {
		c.changes++
	}
	c.lastLeader, c.seenLeader = st.LeaderID, true
	ch <- prometheus.MustNewConstMetric(c.leaderChanges, prometheus.CounterValue, float64(c.changes))
	now := c.now()
	var scan chan struct{}
	if !c.countsOK || now.Sub(c.countsAt) >= c.countsEvery {
		if c.refreshing == nil {
			c.refreshing = make(chan struct{})
			go c.refreshCounts(c.refreshing)
		}
		scan = c.refreshing
	}
	c.mu.Unlock()
	if scan != nil {
		t := time.NewTimer(countsWait)
		select {
		case <-scan:
		case <-t.C:
		}
		t.Stop()
	}
	c.mu.Lock()
	n, ok := c.counts, c.countsOK
	c.mu.Unlock()
	if ok {
		gauge(c.sessions, float64(n.Sessions))
		gauge(c.endedSessions, float64(n.EndedSessions))
		gauge(c.ttlBacklog, float64(n.TTLPending))
		gauge(c.keys, float64(n.StateKeys))
		gauge(c.bytes, float64(n.StateBytes))
	}

	ws, err := c.store.WindowStatuses()
	if err != nil {
		return
	}
	gauge(c.namespaces, float64(len(ws)))
	for _, w := range ws {
		ns := w.Spec.Namespace
		gauge(c.openWindows, float64(w.OpenWindows), ns)
		gauge(c.pending, float64(w.Pending), ns)
		ch <- prometheus.MustNewConstMetric(c.lateDropped, prometheus.CounterValue, float64(w.LateDropped), ns)
		if w.Watermark > fsm.MinWatermark {
			gauge(c.wmLag, now.Sub(time.UnixMilli(w.Watermark)).Seconds(), ns)
		}
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// refreshCounts scans the counts and keeps them, then closes done.
func (c *StoreCollector) refreshCounts(done chan struct{}) {
	n, err := c.store.Counts(context.Background())
	c.mu.Lock()
	if err == nil {
		c.counts, c.countsOK, c.countsAt = n, true, c.now()
	}
	c.refreshing = nil
	c.mu.Unlock()
	close(done)
}
