// Package recovery reports the extent of a recovery from a checkpoint:
// which checkpoint, what it holds (keys, bytes, and each window
// namespace's watermark, pending emissions and open windows), whether
// every file of it is intact, and per partition what Kafka will replay and
// what retention has already deleted (lost for good).
package recovery

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/statedhq/stated/raftstore/fsm"
	"github.com/statedhq/stated/uploader"
)

// Selector picks a checkpoint: an epoch, a savepoint name, or (the zero
// Selector) the latest.
type Selector struct {
	Epoch     uint64
	Savepoint string
}

func (s Selector) String() string {
	switch {
	case s.Epoch != 0:
		return fmt.Sprintf("checkpoint %d", s.Epoch)
	case s.Savepoint != "":
		return fmt.Sprintf("savepoint %q", s.Savepoint)
	}
	return "the latest checkpoint"
}

// Select reads the manifest s picks.
func Select(ctx context.Context, up *uploader.Uploader, s Selector) (*uploader.Manifest, error) {
	switch {
	case s.Epoch != 0:
		return up.Get(ctx, s.Epoch)
	case s.Savepoint != "":
		return up.GetSavepoint(ctx, s.Savepoint)
	}
	return up.Latest(ctx)
}

// Partition is the recovery of one partition of a consumer group.
type Partition struct {
	Group     string `json:"group"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// CheckpointOffset is the next offset to consume as of the checkpoint;
	// NoOffset for a partition of one of the group's checkpointed topics
	// that the checkpoint holds no offset for (it had no records yet),
	// which a restored consumer reads from its start.
	CheckpointOffset int64 `json:"checkpoint_offset"`
	// LogStart and LogEnd are Kafka's first available and next offsets;
	// -1 when Kafka was not asked or did not answer.
	LogStart int64 `json:"log_start"`
	LogEnd   int64 `json:"log_end"`
	// Replay counts the records Kafka still holds that a restored
	// consumer processes again: from the checkpoint offset (or the log
	// start, if retention passed it) to the end.
	Replay int64 `json:"replay"`
	// Lost counts the records between the checkpoint offset and the log
	// start: processed into state after the checkpoint or not at all, and
	// deleted by Kafka's retention since, they cannot be replayed.
	Lost int64 `json:"lost"`
	// Error says why the partition's replay and loss are not counted
	// (Replay and Lost are then zero, and not in the report's totals):
	// Kafka did not answer for it, or its log ends before the
	// checkpoint's offset.
	Error string `json:"error,omitempty"`
}

// NoOffset is the CheckpointOffset of a partition the checkpoint holds no
// offset for. Only Kafka names such partitions: they are reported when
// Kafka is asked.
const NoOffset int64 = -1

// Report is the extent of a recovery from one checkpoint.
type Report struct {
	Epoch     uint64        `json:"epoch"`
	Savepoint string        `json:"savepoint,omitempty"`
	CreatedAt time.Time     `json:"created_at"`
	Age       time.Duration `json:"age_ns"`
	RaftIndex uint64        `json:"raft_index"`
	RaftTerm  uint64        `json:"raft_term"`
	ClusterID string        `json:"cluster_id"`
	Keys      uint64        `json:"keys"`
	Bytes     uint64        `json:"state_bytes"`
	// KeysNotCounted, set for a table checkpoint whose Keys and Bytes
	// were not counted (zero), says why (uploader.Stats.KeysNotCounted).
	KeysNotCounted string `json:"keys_not_counted,omitempty"`
	Files          int    `json:"files"`
	FileBytes      int64  `json:"file_bytes"`
	// Verified is set when every file was read and checked; Problems
	// lists the files that are missing or corrupt.
	Verified bool                   `json:"verified"`
	Intact   bool                   `json:"intact"`
	Problems []uploader.FileProblem `json:"problems,omitempty"`
	// KafkaChecked is set when Kafka answered for the partitions.
	KafkaChecked bool        `json:"kafka_checked"`
	KafkaError   string      `json:"kafka_error,omitempty"`
	Partitions   []Partition `json:"partitions"`
	Replay       int64       `json:"replay"`
	Lost         int64       `json:"lost"`
	// Windows are the checkpoint's window namespaces: each one's
	// watermark, the emissions a restore delivers again (pending) and its
	// open windows. Nil (JSON null) when the manifest does not record them.
	Windows []uploader.WindowStats `json:"windows"`
	// Encrypted is set when the checkpoint's files are encrypted: a restore
	// needs the key (--checkpoint-key-url); verifying does not. Keeper is
	// the secrets URL scheme the manifest records (base64key, awskms,
	// gcpkms, azurekeyvault), never the key.
	Encrypted bool   `json:"encrypted"`
	Keeper    string `json:"encryption_keeper,omitempty"`
	// Changelog is set for a changelog checkpoint: a restore downloads
	// the tables of checkpoint ChangelogBaseEpoch and replays its
	// ChangelogSegments segments of Raft log entries onto them. Keys and
	// Bytes are then not counted (zero).
	Changelog          bool   `json:"changelog"`
	ChangelogBaseEpoch uint64 `json:"changelog_base_epoch,omitempty"`
	ChangelogSegments  int    `json:"changelog_segments,omitempty"`
}

// Options say how much the report checks.
type Options struct {
	// Verify reads every file of the checkpoint and checks its checksum.
	Verify bool
	// Kafka, when set, is asked for each partition's log start and end.
	Kafka *kadm.Client
	// Now is the time the age is computed against; zero means now.
	Now time.Time
}

// Build reports the extent of recovering from m.
func Build(ctx context.Context, up *uploader.Uploader, m *uploader.Manifest, opts Options) (*Report, error) {
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	r := &Report{
		Epoch: m.Epoch, Savepoint: m.Savepoint, CreatedAt: m.CreatedAt, Age: now.Sub(m.CreatedAt),
		RaftIndex: m.RaftIndex, RaftTerm: m.RaftTerm, ClusterID: m.ClusterID,
		Keys: m.Stats.Keys, Bytes: m.Stats.Bytes, KeysNotCounted: m.Stats.KeysNotCounted, Files: len(m.Files), FileBytes: m.Bytes(),
		Partitions: []Partition{}, Windows: m.Stats.Windows,
	}
	if cl := m.Changelog; cl != nil {
		r.Changelog, r.ChangelogBaseEpoch, r.ChangelogSegments = true, cl.BaseEpoch, len(cl.Segments)
	}
	if m.Encryption != nil {
		r.Encrypted, r.Keeper = true, m.Encryption.Keeper
	}
	if opts.Verify {
		probs, err := up.Verify(ctx, m)
		if err != nil {
			return nil, err
		}
		// Verifying takes as long as reading every file: retention on a
		// running cluster may have removed the checkpoint, and GC its
		// files, meanwhile. That is no damage.
		if len(probs) > 0 {
			if _, err := up.Get(ctx, m.Epoch); errors.Is(err, uploader.ErrNotFound) {
				return nil, fmt.Errorf("%w: checkpoint %d was removed (by retention, or deleted) while it was being verified, and %d of its files with it; report a newer one", uploader.ErrNotFound, m.Epoch, len(probs))
			}
		}
		r.Verified, r.Problems, r.Intact = true, probs, len(probs) == 0
	}
	for _, o := range m.Offsets {
		r.Partitions = append(r.Partitions, Partition{Group: o.Group, Topic: o.Topic, Partition: o.Partition,
			CheckpointOffset: o.Offset, LogStart: -1, LogEnd: -1})
	}
	r.sortPartitions()
	if opts.Kafka != nil && len(r.Partitions) > 0 {
		if err := r.addKafka(ctx, opts.Kafka); err != nil {
			r.KafkaError = err.Error()
		} else {
			r.KafkaChecked = true
		}
	}
	return r, nil
}

// Offsets counts the partitions the checkpoint holds an offset for.
func (r *Report) Offsets() int {
	n := 0
	for _, p := range r.Partitions {
		if p.CheckpointOffset != NoOffset {
			n++
		}
	}
	return n
}

func (r *Report) sortPartitions() {
	sort.Slice(r.Partitions, func(i, j int) bool {
		a, b := r.Partitions[i], r.Partitions[j]
		if a.Group != b.Group {
			return a.Group < b.Group
		}
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		return a.Partition < b.Partition
	})
}

// addKafka fills in each partition's log start and end, and what will be
// replayed and what is lost. The partitions of a group's checkpointed
// topics that the checkpoint holds no offset for are added: a restored
// consumer reads them from their start.
func (r *Report) addKafka(ctx context.Context, adm *kadm.Client) error {
	type groupTopic struct{ group, topic string }
	seen := map[string]bool{}
	var topics []string
	has := map[groupTopic]map[int32]bool{}
	for _, p := range r.Partitions {
		if !seen[p.Topic] {
			seen[p.Topic] = true
			topics = append(topics, p.Topic)
		}
		gt := groupTopic{p.Group, p.Topic}
		if has[gt] == nil {
			has[gt] = map[int32]bool{}
		}
		has[gt][p.Partition] = true
	}
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return fmt.Errorf("list log start offsets: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return fmt.Errorf("list log end offsets: %w", err)
	}
	for gt, parts := range has {
		for _, e := range ends[gt.topic] {
			if e.Partition >= 0 && !parts[e.Partition] { // -1: the topic's error
				r.Partitions = append(r.Partitions, Partition{Group: gt.group, Topic: gt.topic, Partition: e.Partition,
					CheckpointOffset: NoOffset, LogStart: -1, LogEnd: -1})
			}
		}
	}
	r.sortPartitions()
	for i := range r.Partitions {
		p := &r.Partitions[i]
		s, ok1 := starts.Lookup(p.Topic, p.Partition)
		e, ok2 := ends.Lookup(p.Topic, p.Partition)
		switch {
		case !ok1 || !ok2:
			p.Error = "Kafka does not know this partition"
			continue
		case s.Err != nil:
			p.Error = s.Err.Error()
			continue
		case e.Err != nil:
			p.Error = e.Err.Error()
			continue
		}
		p.LogStart, p.LogEnd = s.Offset, e.Offset
		if p.CheckpointOffset > p.LogEnd {
			// Not the log the checkpoint read: what followed its offset
			// there, and where a restored consumer resets to, are unknown.
			p.Error = fmt.Sprintf("the checkpoint's offset is past Kafka's log end %d: the topic was deleted and created again, or its log truncated; replay and loss unknown", p.LogEnd)
			continue
		}
		next := max(p.CheckpointOffset, 0) // NoOffset: from the start
		from := max(next, p.LogStart)
		p.Replay = max(0, p.LogEnd-from)
		p.Lost = max(0, min(p.LogStart, p.LogEnd)-next)
		r.Replay += p.Replay
		r.Lost += p.Lost
	}
	return nil
}

// ErrNoCheckpoint is returned when the bucket holds no checkpoint at all.
var ErrNoCheckpoint = errors.New("recovery: the bucket holds no checkpoint")

// WindowStats puts window namespaces as the state machine reports them in
// the form a manifest records them in.
func WindowStats(sts []fsm.WindowStatus) []uploader.WindowStats {
	out := make([]uploader.WindowStats, 0, len(sts))
	for _, s := range sts {
		out = append(out, uploader.WindowStats{Namespace: s.Spec.Namespace, Watermark: s.Watermark,
			MaxEventTime: s.MaxEventTime, Pending: s.Pending, OpenWindows: s.OpenWindows})
	}
	return out
}
