package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/raftstore/fsm"
	"github.com/statedhq/stated/uploader"
)

// Changelog checkpoints (Config.CheckpointMaterializeInterval). A table
// checkpoint uploads the tables the state changed since the checkpoint
// before; under random writes Pebble's compactions rewrite far more than
// the writes themselves, so a short interval uploads hundreds of MB each
// time. The Raft log already holds every change in order: a changelog
// checkpoint cuts the state with a barrier that makes no local checkpoint,
// writes the log's entries since the last checkpoint into a segment file,
// and uploads only that. Its manifest lists the tables of the last table
// checkpoint (its base) and every segment since, and a restore replays
// the segments onto the base's tables (fsm.ReplayChangelog). Flink's
// changelog state backend works the same way, with the periodic
// materialisation of the tables.

// changelogUploadDirName is where, in the data dir, a changelog
// checkpoint's segment is written before its upload.
const changelogUploadDirName = "changelog-upload"

// changelogChain is what the coordinator knows of the checkpoints a
// changelog checkpoint can follow. It is the run loop's alone.
type changelogChain struct {
	// last is the newest completed checkpoint this node uploaded: the
	// base (a table checkpoint) or a changelog checkpoint on it; nil
	// until this node completed a table checkpoint.
	last *uploader.Manifest
	// baseAt is when the base's epoch started, and baseBytes what its
	// tables hold; bytes are the segment bytes uploaded since.
	baseAt    time.Time
	baseBytes int64
	bytes     int64
	// logBytes is the state machine's count of applied command bytes
	// (raftstore.Store.AppliedLogBytes) at last's barrier: the count now
	// less it is about what the next segment holds.
	logBytes uint64
	// term is the Raft term in which this node led when it took the
	// base. A leader's term changes only when it stops leading: a later
	// one means it took over again since, and starts over from its
	// tables.
	term uint64
}

// startChain makes m, a table checkpoint started at start whose barrier
// cp counted cp.LogBytes, the base of the changelog checkpoints that
// follow, when they are on.
func (c *coordinator) startChain(m *uploader.Manifest, start time.Time, cp fsm.CheckpointResult) {
	if c.materializeEvery <= 0 {
		return
	}
	c.chain = changelogChain{last: m, baseAt: start, baseBytes: m.Bytes(), logBytes: cp.LogBytes, term: cp.Term}
	c.mu.Lock()
	c.st.ChangelogBaseEpoch, c.st.ChangelogBytes = m.Epoch, 0
	c.mu.Unlock()
}

// dropChain forgets the changelog chain of a node that stopped leading:
// it would take its tables first when it leads again (a later term, see
// changelogDue), and the new leader's checkpoints are the newest, so its
// base and bytes (stated_checkpoint_changelog_bytes) no longer say what a
// restore of the newest checkpoint replays. The figures go even when the
// chain itself went before (a table checkpoint that changelogDue chose,
// or a failure, forgets it at once, and keeps the figures of the chain
// still newest in the bucket while this node leads).
func (c *coordinator) dropChain() {
	c.chain = changelogChain{}
	c.mu.Lock()
	c.st.ChangelogBaseEpoch, c.st.ChangelogBytes = 0, 0
	c.mu.Unlock()
}

// changelogDue returns the checkpoint that the next one, starting at now,
// follows as a changelog checkpoint, or nil when it must upload its
// tables: changelog checkpoints are off; this node has completed no table
// checkpoint while leading (after a start, a failure, or since it stopped
// leading and took over again: a later Raft term); the base is as
// old as the materialize interval; the segments since the base, with the
// one this checkpoint would add, would hold as many bytes as its tables,
// so that a restore would replay more than it downloads; or the Raft log
// no longer holds the entries since the last checkpoint.
//
// The next segment's size is what the state machine applied since the
// last checkpoint's barrier: the entries' bytes, without the segment's
// few bytes of framing per entry, up to the barrier this checkpoint has
// yet to propose.
func (c *coordinator) changelogDue(now time.Time) *uploader.Manifest {
	ch := c.chain
	var why string
	switch {
	case c.materializeEvery <= 0 || ch.last == nil:
		return nil
	case c.store.Term() != ch.term:
		why = "this node took over leadership again since the base"
	case now.Sub(ch.baseAt) >= c.materializeEvery:
		why = "the materialize interval has passed"
	case ch.bytes+int64(c.pendingLogBytes()) >= ch.baseBytes:
		why = "the changelog would hold as many bytes as the tables"
	case !c.store.LogHolds(ch.last.RaftIndex + 1):
		why = "the Raft log no longer holds the entries since the last checkpoint"
	default:
		return ch.last
	}
	c.logger.Debug("daemon: this checkpoint uploads the state's tables", "reason", why, "base_epoch", ch.last.NextChangelog().BaseEpoch)
	c.chain = changelogChain{}
	return nil
}

// pendingLogBytes is what the state machine applied since the last
// checkpoint's barrier, in command bytes.
func (c *coordinator) pendingLogBytes() uint64 {
	now := c.store.AppliedLogBytes()
	return now - min(c.chain.logBytes, now)
}

// DefaultCheckpointChangelogMemory is DefaultConfig's
// CheckpointChangelogMemory: what the leader's state machine holds of the
// entries it applied since the last checkpoint barrier, to write the next
// changelog segment from (fsm.CapturedChangelog) rather than read the
// entries back from the Raft log. The growth study's 1 s row at 1 GB
// makes segments of 40-45 MB.
const DefaultCheckpointChangelogMemory = 64 << 20

// capture turns the state machine's capture of applied entries on or off,
// if it is not so already. With no memory for it, it stays off.
func (c *coordinator) capture(on bool) {
	on = on && c.captureLimit > 0
	if c.capturing.Swap(on) == on {
		return
	}
	if on {
		c.store.CaptureChangelog(c.captureLimit)
	} else {
		c.store.CaptureChangelog(0)
	}
}

// changelogCheckpoint runs one epoch of a changelog checkpoint that
// follows prev: the barrier, the segment of the Raft log's entries from
// prev's index to the barrier, its upload with a manifest listing prev's
// files, then what follows every checkpoint (conclude).
func (c *coordinator) changelogCheckpoint(ctx context.Context, tr *trigger, start time.Time, prev *uploader.Manifest) {
	cp, ok := c.barrier(ctx, tr, c.store.ChangelogCheckpoint)
	defer cp.Captured.Release()
	if !ok {
		return
	}
	info := cp.Info
	if info == nil || info.Epoch != cp.Epoch || info.AppliedIndex != cp.Index {
		c.failed(ctx, tr, cp.Epoch, fmt.Errorf("%w: changelog barrier %d at index %d cut %+v", errNotTheCut, cp.Epoch, cp.Index, info))
		return
	}
	first, last := prev.RaftIndex+1, cp.Index
	segment := path.Join("changelog", fmt.Sprintf("%020d-%020d.log", first, last))
	cl := prev.NextChangelog()
	cl.Segments = append(cl.Segments, segment)
	meta := uploader.Meta{
		Epoch: cp.Epoch, RaftIndex: cp.Index, RaftTerm: cp.Term, ClusterID: info.ClusterID,
		CreatedAt: start.UTC(), Offsets: manifestOffsets(info.Offsets),
	}
	var (
		hashed uploader.Hashed
		m      *uploader.Manifest
		us     uploader.UploadStats
		err    error
	)
	if seg := capturedSegment(cp.Captured, first, last); seg != nil {
		// The entries the state machine captured: the segment is sent
		// from them, with no file written or read.
		h := c.up.NewHasher()
		seg.WriteTo(h)
		hashed = h.Sum()
		m, us, err = c.up.UploadChangelogSegments(ctx, prev, meta, cl,
			[]uploader.Segment{{Path: segment, Hashed: hashed, Open: seg.Reader}}, c.progress)
	} else {
		c.mu.Lock()
		c.st.ChangelogSegmentsFromLog++
		c.mu.Unlock()
		hashed, err = c.writeSegment(cp.Epoch, segment, first, last)
		defer os.RemoveAll(c.segmentDir)
		if err != nil {
			if errors.Is(err, raftstore.ErrLogCompacted) {
				c.chain = changelogChain{} // the next checkpoint uploads the tables
			}
			c.failed(ctx, tr, cp.Epoch, fmt.Errorf("changelog segment: %w", err))
			return
		}
		m, us, err = c.up.UploadChangelog(ctx, prev, filepath.Join(c.segmentDir, epochDirName(cp.Epoch)), meta, cl,
			map[string]uploader.Hashed{segment: hashed}, c.progress)
	}
	if err != nil {
		// A blob of the base that a collection took, or anything else:
		// the next checkpoint starts again from the tables.
		c.chain = changelogChain{}
		c.failed(ctx, tr, cp.Epoch, fmt.Errorf("upload: %w", err))
		return
	}
	c.completeEpoch(ctx, cp.Epoch, info.Offsets)
	dur := time.Since(start)
	c.logger.Info("daemon: changelog checkpoint completed", "epoch", cp.Epoch, "index", cp.Index, "duration", dur,
		"base_epoch", cl.BaseEpoch, "segment", segment, "segment_bytes", hashed.Size, "segments", len(cl.Segments),
		"bytes_uploaded", us.BytesUploaded)
	c.chain.last = m
	c.chain.bytes += hashed.Size
	c.chain.logBytes = cp.LogBytes
	chainBytes := c.chain.bytes
	c.conclude(ctx, tr, m, us, dur, func(st *CheckpointStatus) {
		st.ChangelogCheckpoints++
		st.ChangelogBytes = chainBytes
	})
}

// epochDirName names an epoch's directory under segmentDir.
func epochDirName(epoch uint64) string { return fmt.Sprintf("%020d", epoch) }

// capturedSegment returns the segment first..last made of the entries
// captured, or nil when they do not cover it (none captured, or not
// from the checkpoint before: see fsm.CapturedChangelog.Segment).
func capturedSegment(captured *fsm.CapturedChangelog, first, last uint64) *fsm.CapturedSegment {
	if captured == nil {
		return nil
	}
	seg, err := captured.Segment(first, last)
	if err != nil {
		return nil
	}
	return seg
}

// writeSegment writes the Raft log's entries first..last, read back from
// the log, into the segment file rel under segmentDir's directory of
// epoch, and returns what its bytes hash to, computed as they are
// written, so that the upload does not read the file to hash it.
func (c *coordinator) writeSegment(epoch uint64, rel string, first, last uint64) (uploader.Hashed, error) {
	dir := filepath.Join(c.segmentDir, epochDirName(epoch))
	if err := os.RemoveAll(c.segmentDir); err != nil {
		return uploader.Hashed{}, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "changelog"), 0o700); err != nil {
		return uploader.Hashed{}, err
	}
	h := c.up.NewHasher()
	w, err := fsm.CreateChangelogSegment(filepath.Join(dir, filepath.FromSlash(rel)), first, last, h)
	if err != nil {
		return uploader.Hashed{}, err
	}
	if err := c.store.ReadLog(first, last, w.Append); err != nil {
		w.Abort()
		return uploader.Hashed{}, err
	}
	if err := w.Close(); err != nil {
		w.Abort()
		return uploader.Hashed{}, err
	}
	sum := h.Sum()
	if sum.Size != w.Bytes() {
		return uploader.Hashed{}, fmt.Errorf("changelog segment %s: %d bytes written, %d hashed", rel, w.Bytes(), sum.Size)
	}
	return sum, nil
}
