package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CheckpointBuckets are the histogram buckets, in seconds, of a
// checkpoint's duration: from a small state on local disk to minutes of
// uploading.
var CheckpointBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// CheckpointStats is what the checkpoint collector reads of the
// coordinator: counters since the daemon started and the last completed
// checkpoint.
type CheckpointStats struct {
	Enabled            bool
	Completed          uint64
	Failures           uint64
	BytesUploaded      uint64 // summed over completed checkpoints
	LastEpoch          uint64 // 0 before the first completed checkpoint
	LastCompletedAt    time.Time
	KafkaCommits       uint64 // groups whose offsets were committed
	KafkaCommitErrors  uint64 // groups whose commit failed
	KafkaMemberCommits uint64 // groups left to their live members to commit
	// ChangelogCompleted counts the changelog checkpoints among
	// Completed; ChangelogBytes are the segment bytes uploaded on the
	// current base (what a restore of the newest checkpoint replays).
	ChangelogCompleted uint64
	ChangelogBytes     uint64
	// ChangelogSegmentsFromLog counts the changelog segments written
	// from entries read back from the Raft log, not from those the state
	// machine captured as it applied them.
	ChangelogSegmentsFromLog uint64
}

// Checkpoints reports the coordinator's checkpoints: counters and the
// last completed one read at scrape time through stats, and each
// completion's duration through Observe.
type Checkpoints struct {
	stats    func() CheckpointStats
	duration prometheus.Histogram
	// count and countsWhole are the counts of table checkpoints' keys
	// that ended, in time for their manifests or after.
	count       prometheus.Histogram
	countsWhole prometheus.Counter

	epoch, lastAt, completed, failures, bytes *prometheus.Desc
	kafkaCommits, kafkaErrors, kafkaMember    *prometheus.Desc
	changelogCompleted, changelogBytes        *prometheus.Desc
	changelogFromLog                          *prometheus.Desc
}

// NewCheckpoints makes the checkpoint instruments over stats and
// registers them on reg.
func NewCheckpoints(reg prometheus.Registerer, stats func() CheckpointStats) *Checkpoints {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	c := &Checkpoints{
		stats: stats,
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "stated_checkpoint_duration_seconds", Buckets: CheckpointBuckets,
			Help: "Time from a checkpoint's barrier to its completion (upload and manifest included), of the checkpoints this node completed as leader.",
		}),
		count: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "stated_checkpoint_count_duration_seconds", Buckets: CheckpointBuckets,
			Help: "Time each count of a table checkpoint's keys and bytes for its manifest took, of the counts this node made as leader, when it ended (also after its checkpoint completed: a checkpoint waits for its count as long again as its upload took, at least 1 s, and otherwise records its keys as not counted).",
		}),
		countsWhole: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stated_checkpoint_counts_whole_total",
			Help: "Counts of table checkpoints' keys this node made as leader that read the whole state rather than what changed since the last count: for example with no earlier count to start from, or when the tables changed since it held more than a twelfth of the state.",
		}),
		epoch:              d("stated_checkpoint_epoch", "Epoch of the newest completed checkpoint, as the cluster recorded it (every node reports it, whichever led); 0 before the first."),
		lastAt:             d("stated_checkpoint_last_completed_timestamp_seconds", "Unix time the newest completed checkpoint completed, as the cluster recorded it (every node reports it); absent before the first. Its age is time() minus it."),
		completed:          d("stated_checkpoints_completed_total", "Checkpoints this node completed as leader."),
		failures:           d("stated_checkpoint_failures_total", "Checkpoints this node started as leader that failed or were abandoned."),
		bytes:              d("stated_checkpoint_uploaded_bytes_total", "Bytes uploaded to the checkpoint bucket by completed checkpoints (files the bucket already held are not sent again)."),
		kafkaCommits:       d("stated_kafka_offset_commits_total", "Consumer groups whose checkpointed offsets this node committed to Kafka."),
		kafkaErrors:        d("stated_kafka_offset_commit_errors_total", "Consumer groups whose checkpointed offsets Kafka refused or could not take."),
		kafkaMember:        d("stated_kafka_offset_commits_left_to_members_total", "Consumer groups with live members, which commit their own checkpointed offsets; Kafka refuses the daemon's commit for them."),
		changelogCompleted: d("stated_checkpoint_changelog_completed_total", "Changelog checkpoints (--checkpoint-materialize-interval) among the checkpoints this node completed as leader."),
		changelogBytes:     d("stated_checkpoint_changelog_bytes", "Bytes of the changelog segments this node uploaded on the table checkpoint its newest checkpoints build on: what a restore of the newest one replays; 0 after a table checkpoint, and on a node that does not lead."),
		changelogFromLog:   d("stated_checkpoint_changelog_segments_from_log_total", "Changelog segments this node wrote from entries read back from the Raft log, because the entries it captured as it applied them did not cover the segment (after a failed checkpoint or a restored Raft snapshot, or more than 64 MiB of entries since the checkpoint before)."),
	}
	reg.MustRegister(c.duration, c.count, c.countsWhole, c)
	return c
}

// Observe records a completed checkpoint's duration.
func (c *Checkpoints) Observe(d time.Duration) { c.duration.Observe(d.Seconds()) }

// ObserveCount records how long a count of a table checkpoint's keys
// that ended took, and whether it read the whole state.
func (c *Checkpoints) ObserveCount(d time.Duration, whole bool) {
	c.count.Observe(d.Seconds())
	if whole {
		c.countsWhole.Inc()
	}
}

// Describe implements prometheus.Collector.
func (c *Checkpoints) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.epoch, c.lastAt, c.completed, c.failures, c.bytes, c.kafkaCommits, c.kafkaErrors, c.kafkaMember,
		c.changelogCompleted, c.changelogBytes, c.changelogFromLog} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Checkpoints) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	if !s.Enabled {
		return
	}
	m := func(d *prometheus.Desc, t prometheus.ValueType, v float64) {
		ch <- prometheus.MustNewConstMetric(d, t, v)
	}
	m(c.epoch, prometheus.GaugeValue, float64(s.LastEpoch))
	if !s.LastCompletedAt.IsZero() {
		m(c.lastAt, prometheus.GaugeValue, float64(s.LastCompletedAt.UnixNano())/1e9)
	}
	m(c.completed, prometheus.CounterValue, float64(s.Completed))
	m(c.failures, prometheus.CounterValue, float64(s.Failures))
	m(c.bytes, prometheus.CounterValue, float64(s.BytesUploaded))
	m(c.kafkaCommits, prometheus.CounterValue, float64(s.KafkaCommits))
	m(c.kafkaErrors, prometheus.CounterValue, float64(s.KafkaCommitErrors))
	m(c.kafkaMember, prometheus.CounterValue, float64(s.KafkaMemberCommits))
	m(c.changelogCompleted, prometheus.CounterValue, float64(s.ChangelogCompleted))
	m(c.changelogBytes, prometheus.GaugeValue, float64(s.ChangelogBytes))
	m(c.changelogFromLog, prometheus.CounterValue, float64(s.ChangelogSegmentsFromLog))
}
