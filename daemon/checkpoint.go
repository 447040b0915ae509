package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/secrets"

	"github.com/statedhq/stated/internal/redact"
	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/fsm"
	"github.com/statedhq/stated/uploader"
)

// ErrCheckpointsDisabled is returned by checkpoint calls when the daemon
// runs without a checkpoint bucket.
var ErrCheckpointsDisabled = errors.New("daemon: checkpoints are disabled")

// CheckpointStatus is what the coordinator reports of its checkpoints.
type CheckpointStatus struct {
	Enabled            bool
	Bucket             string // URL without credentials
	Interval           time.Duration
	Retain             int
	SharesDiskWithData bool
	// Encryption is the scheme of the keeper checkpoint files are
	// encrypted with (never the key); "" when they are not.
	Encryption string

	LastCompleted     *uploader.Manifest
	LastDuration      time.Duration
	LastBytesUploaded int64
	LastFilesUploaded int
	// LastBytesHashed and LastFilesHashed count the local files the last
	// completed checkpoint read to compute their checksums: those whose
	// checksums were not cached (see BackgroundBytesHashed).
	LastBytesHashed int64
	LastFilesHashed int
	// BytesHashedTotal sums LastBytesHashed over the completed
	// checkpoints since the daemon started.
	BytesHashedTotal int64
	// BackgroundHashPasses and BackgroundBytesHashed count the passes in
	// which this node, while a follower, hashed the tables of its state
	// ahead of time, and the bytes they read: so that when it becomes
	// the leader its first checkpoint reads only what changed.
	BackgroundHashPasses  uint64
	BackgroundBytesHashed int64
	Completed             uint64
	Failures              uint64
	LastError             string
	LastErrorAt           time.Time
	KafkaError            string
	// KafkaMemberGroups are the last checkpoint's groups that Kafka left
	// to their live members to commit.
	KafkaMemberGroups []string
	// BytesUploadedTotal sums LastBytesUploaded over the completed
	// checkpoints; KafkaCommits, KafkaCommitErrors and
	// KafkaMemberCommits count consumer groups committed, failed and
	// left to their members. All count since the daemon started.
	BytesUploadedTotal                                  int64
	KafkaCommits, KafkaCommitErrors, KafkaMemberCommits uint64

	// LastCount is how the last count of a table checkpoint's state that
	// ended was made: from the checkpoint counted before it
	// (LastCount.Whole empty), reading only the tables that changed, or
	// whole; LastCountDuration is how long that took, and LastCountEpoch
	// is the checkpoint counted (0: no count ended yet). A count that
	// outlived its checkpoint's wait ends after that checkpoint
	// completed, with its keys not counted in its manifest.
	LastCount         fsm.CheckpointCount
	LastCountDuration time.Duration
	LastCountEpoch    uint64
	// CountingEpoch is the checkpoint whose count is under way, 0 when
	// none.
	CountingEpoch uint64

	// MaterializeInterval is Config.CheckpointMaterializeInterval: above
	// zero, checkpoints between table checkpoints are changelog
	// checkpoints. ChangelogBaseEpoch is the table checkpoint the
	// changelog checkpoints since build on (0: none yet, or this node
	// stopped leading since: see dropChain), ChangelogBytes
	// the segment bytes uploaded on it, and ChangelogCheckpoints counts
	// the changelog checkpoints completed since the daemon started.
	// ChangelogSegmentsFromLog counts the segments written from the Raft
	// log's entries read back, rather than from the entries the state
	// machine captured as it applied them (Config.CheckpointChangelogMemory).
	MaterializeInterval      time.Duration
	ChangelogBaseEpoch       uint64
	ChangelogBytes           int64
	ChangelogCheckpoints     uint64
	ChangelogSegmentsFromLog uint64

	InProgressEpoch      uint64
	InProgressBytesDone  int64
	InProgressBytesTotal int64
}

// coordinator runs checkpoint epochs on the leader: a barrier entry, the
// upload of the leader's local checkpoint, the completion entry, the
// offsets to Kafka, then retention.
type coordinator struct {
	store   *raftstore.Store
	bucket  *blob.Bucket
	keeper  *secrets.Keeper // nil: checkpoints are not encrypted
	up      *uploader.Uploader
	kafka   *kafkaCommitter // nil without brokers
	logger  *slog.Logger
	retain  int
	every   time.Duration
	pollFor time.Duration // how often leadership is checked during a checkpoint
	// stateDir is this node's Pebble directory, whose tables a follower
	// hashes ahead of time (prehash).
	stateDir string
	// restoreFrom is the bucket's URL as a failure's hint to restore
	// from it prints it: the status's redacted URL, marked when the
	// redaction masked credentials the restore needs.
	restoreFrom string
	// counter counts each local checkpoint's state from the last one
	// counted, kept in the data dir (fsm.CountBaseDir), one count at a
	// time, in the background (see startCount). counting is the count
	// under way (nil: none), and no count starts before countFree, set
	// after a count that took countTook; all under countMu. countCtx and
	// countWG are run's context and wait group, which a count runs in.
	counter   *fsm.CheckpointCounter
	countMu   sync.Mutex
	counting  *countRun
	countFree time.Time
	countTook time.Duration
	countCtx  context.Context
	countWG   *sync.WaitGroup
	// materializeEvery is Config.CheckpointMaterializeInterval: above
	// zero, checkpoints between table checkpoints are changelog
	// checkpoints (changelog.go), whose segments, when read back from
	// the Raft log, are written under segmentDir before their upload;
	// chain is the run loop's.
	materializeEvery time.Duration
	// capturing is whether this node's state machine captures the
	// entries it applies for changelog segments, holding at most
	// captureLimit bytes (Config.CheckpointChangelogMemory; 0 captures
	// nothing); set by the run loop alone.
	capturing    atomic.Bool
	captureLimit int64
	segmentDir   string
	chain        changelogChain
	// collectPending is set when this node's last full retention
	// (uploader.Retain, which collects unreferenced blobs) failed, so
	// that the next checkpoint runs one even if it is a changelog
	// checkpoint; the run loop's alone.
	collectPending bool

	triggers chan *trigger
	// cutHook, for tests, may replace the local checkpoint directory of
	// an epoch before it is read.
	cutHook func(epoch uint64, dir string) string
	// uploadHook, for tests, runs as a table checkpoint's upload is about
	// to start, with the checkpoint's context.
	uploadHook func(ctx context.Context, epoch uint64)
	// countHook, for tests, runs as the count of a table checkpoint's
	// state starts, with the count's context, and is timed with it.
	countHook func(ctx context.Context, epoch uint64)
	// completed, if set before run, is called with each completed
	// checkpoint's duration (for metrics); counted with how long each
	// count of a table checkpoint's state that ended took, and whether it
	// read the whole state.
	completed func(time.Duration)
	counted   func(took time.Duration, whole bool)

	mu sync.Mutex
	st CheckpointStatus
}

// trigger is a request for a checkpoint now: started receives the epoch
// (or an error) once the barrier applied, done the outcome.
type trigger struct {
	started chan triggerResult
	done    chan triggerResult
}

type triggerResult struct {
	epoch    uint64
	manifest *uploader.Manifest
	err      error
}

// openCoordinator opens what checkpoints need beside the store: the
// bucket (a bad URL, or a bucket that does not exist or cannot be
// reached, fails here), the key and the Kafka client. Start calls it
// before it opens the store, so that a checkpoint config that cannot be
// used stops the node before it bootstraps or joins a cluster; attach
// then gives the coordinator the store. On an error nothing stays open.
func openCoordinator(ctx context.Context, cfg Config, logger *slog.Logger) (*coordinator, error) {
	b, err := uploader.OpenBucket(ctx, cfg.CheckpointURL)
	if err != nil {
		return nil, fmt.Errorf("daemon: checkpoint bucket: %w", err)
	}
	// Opening a bucket only parses its URL; list it once, so that a
	// bucket that does not exist or cannot be reached fails the start.
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	ok, err := b.IsAccessible(pctx)
	cancel()
	if err != nil || !ok {
		b.Close()
		if err == nil {
			err = errors.New("it does not exist")
		}
		return nil, fmt.Errorf("daemon: checkpoint bucket %s cannot be used: %w", redactURL(cfg.CheckpointURL), err)
	}
	ucfg := uploader.Config{Bucket: b, Workers: cfg.CheckpointWorkers, GCGrace: cfg.CheckpointGCGrace, Logger: logger,
		HashCacheFile: filepath.Join(cfg.DataDir, hashCacheFileName)}
	if cfg.CheckpointKeyURL != "" {
		if ucfg.Keeper, ucfg.KeeperScheme, err = uploader.OpenKeeper(ctx, cfg.CheckpointKeyURL); err != nil {
			b.Close()
			return nil, fmt.Errorf("daemon: checkpoint key: %w", err)
		}
	}
	up, err := uploader.New(ucfg)
	if err != nil {
		b.Close()
		closeKeeper(ucfg.Keeper)
		return nil, fmt.Errorf("daemon: checkpoint uploader: %w", err)
	}
	c := &coordinator{
		bucket: b, up: up, logger: logger, keeper: ucfg.Keeper,
		retain: cfg.CheckpointRetain, every: cfg.CheckpointInterval, pollFor: 50 * time.Millisecond,
		triggers: make(chan *trigger), stateDir: filepath.Join(cfg.DataDir, stateDirName),
		counter:          fsm.NewCheckpointCounter(filepath.Join(cfg.DataDir, fsm.CountBaseDir)),
		materializeEvery: cfg.CheckpointMaterializeInterval, captureLimit: cfg.CheckpointChangelogMemory, segmentDir: filepath.Join(cfg.DataDir, changelogUploadDirName),
	}
	c.st = CheckpointStatus{
		Enabled: true, Bucket: redactURL(cfg.CheckpointURL), Interval: cfg.CheckpointInterval, Retain: cfg.CheckpointRetain,
		SharesDiskWithData: sharesDisk(cfg.CheckpointURL, cfg.DataDir), Encryption: ucfg.KeeperScheme,
		MaterializeInterval: cfg.CheckpointMaterializeInterval,
	}
	c.restoreFrom = c.st.Bucket
	if c.st.Bucket != cfg.CheckpointURL {
		c.restoreFrom += " (this URL with the credentials masked here)"
	}
	if len(cfg.KafkaBrokers) > 0 {
		if c.kafka, err = newKafkaCommitter(cfg.KafkaBrokers, logger); err != nil {
			b.Close()
			closeKeeper(c.keeper)
			return nil, err
		}
	}
	return c, nil
}

// attach gives c the store it checkpoints, once Start opened it, and
// removes a changelog checkpoint's segment that a crash left behind. It
// comes before run and before any other use of c.
func (c *coordinator) attach(store *raftstore.Store) {
	c.store = store
	if err := os.RemoveAll(c.segmentDir); err != nil {
		c.logger.Warn("daemon: removing a changelog segment left from before", "dir", c.segmentDir, "error", err)
	}
}

func (c *coordinator) close() {
	if c.kafka != nil {
		c.kafka.close()
	}
	c.bucket.Close()
	closeKeeper(c.keeper)
}

func closeKeeper(k *secrets.Keeper) {
	if k != nil {
		k.Close()
	}
}

// The checksum cache file in the data dir (uploader.Config.HashCacheFile),
// and raftstore's Pebble directory in it.
const (
	hashCacheFileName = "checkpoint-hashes.json"
	stateDirName      = "state"
)

// run takes a checkpoint every interval and on request, while this node
// leads, until ctx ends. While it follows, it hashes its tables ahead of
// time (prehashLoop).
func (c *coordinator) run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	var bg sync.WaitGroup
	defer bg.Wait()
	c.countCtx, c.countWG = ctx, &bg
	// Before the wait: a panic in a checkpoint stops the prehash loop and
	// then goes on to crash the process, where waiting for the loop first
	// would leave every later checkpoint trigger waiting forever.
	defer cancel()
	bg.Go(func() { c.prehashLoop(ctx) })
	var tick <-chan time.Time
	if c.every > 0 {
		t := time.NewTicker(c.every)
		defer t.Stop()
		tick = t.C
	}
	// A node that stops leading stops capturing applied entries for
	// changelog segments (changelog.go), and drops its changelog chain,
	// within a second.
	leadPoll := time.NewTicker(time.Second)
	defer leadPoll.Stop()
	for {
		var tr *trigger
		select {
		case <-ctx.Done():
			return
		case <-leadPoll.C:
			if !c.store.IsLeader() {
				if c.capturing.Load() {
					c.capture(false)
				}
				c.dropChain()
			}
			continue
		case <-tick:
			if !c.store.IsLeader() {
				continue
			}
		case tr = <-c.triggers:
		}
		c.checkpoint(ctx, tr)
	}
}

// Trigger asks for a checkpoint now and returns its epoch once its barrier
// applied; with wait, once it completed, with its manifest.
func (c *coordinator) Trigger(ctx context.Context, wait bool) (uint64, *uploader.Manifest, error) {
	if !c.store.IsLeader() {
		return 0, nil, raftstore.ErrNotLeader
	}
	tr := &trigger{started: make(chan triggerResult, 1), done: make(chan triggerResult, 1)}
	select {
	case c.triggers <- tr:
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	}
	var r triggerResult
	select {
	case r = <-tr.started:
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	}
	if r.err != nil || !wait {
		return r.epoch, nil, r.err
	}
	select {
	case r = <-tr.done:
		return r.epoch, r.manifest, r.err
	case <-ctx.Done():
		return r.epoch, nil, ctx.Err()
	}
}

// checkpoint runs one epoch: a changelog checkpoint when one is due
// (changelog.go), otherwise a table checkpoint. Leadership is watched
// throughout: when this node stops leading, the upload is abandoned
// before its manifest, and the next leader starts a new epoch.
func (c *coordinator) checkpoint(ctx context.Context, tr *trigger) {
	ctx, cancelCause := context.WithCancelCause(ctx)
	defer cancelCause(nil)
	go c.watchLeadership(ctx, cancelCause)

	start := time.Now()
	c.capture(c.materializeEvery > 0)
	if prev := c.changelogDue(start); prev != nil {
		c.changelogCheckpoint(ctx, tr, start, prev)
		return
	}
	c.tableCheckpoint(ctx, tr, start)
}

// tableCheckpoint runs one epoch of a table checkpoint: the barrier
// makes a local checkpoint on every replica, and the leader uploads its
// own.
func (c *coordinator) tableCheckpoint(ctx context.Context, tr *trigger, start time.Time) {
	// Flush first, so that the checkpoint's WAL, which is uploaded whole
	// every time, holds only the writes since; writers are not paused.
	// A flush that fails while the checkpoint goes on (Pebble reported a
	// failed flush or compaction: a full disk, say) fails the checkpoint,
	// which could not be written either; one given up on because this
	// node stops leading is left to the barrier to report.
	if err := c.store.FlushContext(ctx); err != nil {
		if ctx.Err() == nil && !errors.Is(err, raftstore.ErrClosed) {
			err = fmt.Errorf("flush before checkpoint: %w", err)
			// Recorded first: the trigger's caller, answered by
			// started, may read the status at once.
			c.failed(ctx, tr, 0, err)
			if tr != nil {
				tr.started <- triggerResult{err: err}
			}
			return
		}
		c.logger.Warn("daemon: flush before checkpoint", "error", err)
	}
	cp, ok := c.barrier(ctx, tr, c.store.Checkpoint)
	cp.Captured.Release() // what the next changelog segment needs starts after it
	if !ok {
		return
	}
	if c.cutHook != nil {
		cp.Dir = c.cutHook(cp.Epoch, cp.Dir)
	}
	if c.uploadHook != nil {
		c.uploadHook(ctx, cp.Epoch)
	}

	if cut, err := fsm.TrimCheckpointWAL(cp.Dir); err != nil {
		c.failed(ctx, tr, cp.Epoch, err)
		return
	} else if cut > 0 {
		c.logger.Debug("daemon: trimmed the recycled tail of the checkpoint's WAL", "epoch", cp.Epoch, "bytes", cut)
	}
	info, err := fsm.ReadCheckpointMeta(cp.Dir)
	if err != nil {
		c.failed(ctx, tr, cp.Epoch, err)
		return
	}
	meta, err := checkpointMeta(cp, info, start, c.store.TermAt)
	if err != nil {
		c.logger.Error("daemon: checkpoint refused before its upload", "epoch", cp.Epoch, "error", err)
		c.failed(ctx, tr, cp.Epoch, err)
		return
	}
	// Statistics only: a checkpoint whose windows cannot be read is still
	// uploaded, and its manifest says nothing of them.
	if meta.Stats.Windows, err = checkpointWindows(cp.Dir, info.AppliedIndex, c.store.WindowStatuses); err != nil {
		c.logger.Warn("daemon: reading the checkpoint's window namespaces for its manifest", "epoch", cp.Epoch, "error", err)
	}
	// The state's counts read what changed since the last checkpoint
	// counted, or the whole state, from a copy of their own: they are
	// made while the files are sent, and the manifest waits for them a
	// while (awaitCount).
	run, notCounted := c.startCount(cp.Epoch, cp.Dir)
	var count stateCount
	sending := time.Now()
	m, us, err := c.up.UploadFinishing(ctx, cp.Dir, meta, c.progress, func(m *uploader.Meta) error {
		var err error
		count, notCounted, err = c.awaitCount(ctx, run, notCounted, time.Since(sending))
		m.Stats.Keys, m.Stats.Bytes, m.Stats.KeysNotCounted = count.Keys, count.Bytes, notCounted
		return err
	})
	if err != nil {
		c.failed(ctx, tr, cp.Epoch, fmt.Errorf("upload: %w", err))
		return
	}
	c.completeEpoch(ctx, cp.Epoch, info.Offsets)
	dur := time.Since(start)
	how := count.how()
	if notCounted != "" {
		how = "not counted: " + notCounted
	}
	c.logger.Info("daemon: checkpoint completed", "epoch", cp.Epoch, "index", cp.Index, "duration", dur,
		"files", us.Files, "files_uploaded", us.FilesUploaded, "bytes", us.Bytes, "bytes_uploaded", us.BytesUploaded,
		"bytes_hashed", us.BytesHashed, "count", how)
	c.startChain(m, start, cp)
	c.conclude(ctx, tr, m, us, dur, func(st *CheckpointStatus) {
		st.LastBytesHashed, st.LastFilesHashed = us.BytesHashed, us.FilesHashed
		st.BytesHashedTotal += us.BytesHashed
	})
}

// barrier proposes a checkpoint's barrier with propose, tells a waiting
// trigger its epoch, and marks the epoch in progress; it reports false,
// having recorded the failure, when the barrier failed.
func (c *coordinator) barrier(ctx context.Context, tr *trigger, propose func(context.Context) (fsm.CheckpointResult, error)) (fsm.CheckpointResult, bool) {
	cp, err := propose(ctx)
	// The status first, then the trigger's answer: its caller may read
	// the status at once.
	if err != nil {
		c.failed(ctx, tr, cp.Epoch, fmt.Errorf("checkpoint barrier: %w", err))
		if tr != nil {
			tr.started <- triggerResult{epoch: cp.Epoch, err: err}
		}
		return cp, false
	}
	c.mu.Lock()
	c.st.InProgressEpoch, c.st.InProgressBytesDone, c.st.InProgressBytesTotal = cp.Epoch, 0, 0
	c.mu.Unlock()
	if tr != nil {
		tr.started <- triggerResult{epoch: cp.Epoch}
	}
	return cp, true
}

// completeEpoch proposes epoch's completion entry, with its offsets.
func (c *coordinator) completeEpoch(ctx context.Context, epoch uint64, offsets []command.Offset) {
	if err := c.store.CompleteCheckpoint(ctx, epoch, offsets); err != nil {
		// The manifest is written and the checkpoint restorable; only the
		// replicas' bookkeeping missed it, and the next epoch catches up.
		c.logger.Warn("daemon: checkpoint uploaded but its completion entry failed", "epoch", epoch, "error", err)
	}
}

// conclude does what follows a completed checkpoint m of either kind:
// its offsets to Kafka, the status (and what kind adds to it),
// retention, and the answer to a waiting trigger.
func (c *coordinator) conclude(ctx context.Context, tr *trigger, m *uploader.Manifest, us uploader.UploadStats, dur time.Duration, kind func(*CheckpointStatus)) {
	var kafkaErr string
	var memberGroups []string
	if c.kafka != nil {
		var err error
		memberGroups, err = c.kafka.commit(ctx, m)
		if err != nil {
			kafkaErr = err.Error()
			c.logger.Warn("daemon: committing checkpoint offsets to Kafka", "epoch", m.Epoch, "error", err)
		}
		if len(memberGroups) > 0 {
			c.logger.Debug("daemon: groups with live members commit their own checkpointed offsets", "epoch", m.Epoch, "groups", memberGroups)
		}
	}
	c.mu.Lock()
	c.st.LastCompleted, c.st.LastDuration = m, dur
	c.st.LastBytesUploaded, c.st.LastFilesUploaded = us.BytesUploaded, us.FilesUploaded
	c.st.BytesUploadedTotal += us.BytesUploaded
	kind(&c.st)
	c.st.Completed++
	c.st.InProgressEpoch = 0
	c.st.KafkaError, c.st.KafkaMemberGroups = kafkaErr, memberGroups
	c.mu.Unlock()
	if c.completed != nil {
		c.completed(dur)
	}
	// Retention runs before a waiting trigger is answered, so that what
	// the caller lists next is what retention kept. A changelog
	// checkpoint makes no garbage (its manifest lists every file of the
	// one it follows), so after one only the old manifests go, without
	// listing files/ or reading a manifest; the blobs no manifest
	// references any more wait for the Retain after the next table
	// checkpoint, which the materialize interval brings, unless the last
	// Retain failed: then the next checkpoint, of either kind, runs it.
	full := m.Changelog == nil || c.collectPending
	retain := c.up.Retain
	if !full {
		retain = c.up.RetainManifests
	}
	_, err := retain(ctx, c.retain)
	if full {
		c.collectPending = err != nil
	}
	if err != nil {
		c.logger.Warn("daemon: checkpoint retention", "error", err)
		c.mu.Lock()
		c.st.LastError, c.st.LastErrorAt = "retention: "+err.Error(), time.Now()
		c.mu.Unlock()
	}
	if tr != nil {
		tr.done <- triggerResult{epoch: m.Epoch, manifest: m}
	}
}

// stateCount is what the counter found.
type stateCount struct {
	fsm.CheckpointCount
	took time.Duration
	err  error
}

// how says how the state was counted, for the log.
func (r stateCount) how() string {
	if r.Whole != "" {
		return fmt.Sprintf("whole in %v (%s; %d keys from %d tables' properties, the rest read)",
			r.took.Round(time.Millisecond), r.Whole, r.KeysFromProperties, r.TablesFromProperties)
	}
	return fmt.Sprintf("from epoch %d in %v (%d changed tables, %d bytes, %d keys and %d ranges compared)",
		r.BaseEpoch, r.took.Round(time.Millisecond), r.TablesRead, r.TableBytesRead, r.KeysCompared, r.RangesCompared)
}

// How counts of the state's keys share the machine with the commits (see
// startCount and awaitCount).
const (
	// A count that took at least countSlow is followed by no other for
	// countRest times as long as it took: counts that read the whole
	// of a large state then take at most a quarter of one core.
	countSlow = time.Second
	countRest = 3
	// A checkpoint waits for its count, once its files are sent, as long
	// as they took to send, and at least countGrace.
	countGrace = time.Second
)

// countRun is a count under way: of checkpoint epoch, stopped by cancel,
// its result sent on done once.
type countRun struct {
	epoch  uint64
	cancel context.CancelFunc
	done   chan stateCount
}

// startCount starts counting the state of epoch's local checkpoint in
// dir, in the background, from a hard-linked copy of its own
// (fsm.CheckpointCounter.Copy), so that the count may outlive the
// checkpoint: from the last checkpoint counted when it can. Once
// counted, the checkpoint is kept as the next count's base, the status
// and the metrics get the count, and the result arrives on the run's
// done. One count runs at a time, and a count that took countSlow or
// more is followed by a rest (countRest); when either stops this one,
// or the copy fails, startCount returns why the checkpoint's keys are
// not counted instead.
func (c *coordinator) startCount(epoch uint64, dir string) (*countRun, string) {
	c.countMu.Lock()
	defer c.countMu.Unlock()
	if r := c.counting; r != nil {
		return nil, fmt.Sprintf("the count of checkpoint %d was still running", r.epoch)
	}
	if wait := time.Until(c.countFree); wait > 0 {
		return nil, fmt.Sprintf("the last count took %v, and the next may start %v after it ended (in %v)",
			c.countTook.Round(time.Millisecond), (countRest * c.countTook).Round(time.Millisecond), wait.Round(time.Millisecond))
	}
	cp, err := c.counter.Copy(dir)
	if err != nil {
		c.logger.Warn("daemon: copying the checkpoint to count its keys", "epoch", epoch, "error", err)
		return nil, err.Error()
	}
	ctx, cancel := context.WithCancel(c.countCtx)
	r := &countRun{epoch: epoch, cancel: cancel, done: make(chan stateCount, 1)}
	c.counting = r
	c.countWG.Go(func() {
		defer cancel()
		n := c.countCopy(ctx, epoch, cp)
		c.countMu.Lock()
		c.counting = nil
		if n.err == nil && n.took >= countSlow {
			c.countFree, c.countTook = time.Now().Add(countRest*n.took), n.took
		}
		c.countMu.Unlock()
		r.done <- n
	})
	return r, ""
}

// countCopy counts the copy cp of epoch's checkpoint, keeps it as the
// base of the next count, removes it, and records the count.
func (c *coordinator) countCopy(ctx context.Context, epoch uint64, cp string) stateCount {
	var r stateCount
	start := time.Now()
	if c.countHook != nil {
		c.countHook(ctx, epoch)
	}
	r.CheckpointCount, r.err = c.counter.Count(ctx, cp)
	r.took = time.Since(start)
	if r.err != nil {
		r.err = fmt.Errorf("count the checkpoint's state: %w", r.err)
	} else if err := c.counter.Keep(cp, epoch, r.CheckpointCount); err != nil {
		// The next count is whole; this one stands.
		c.logger.Warn("daemon: keeping the checkpoint to count the next one from", "epoch", epoch, "error", err)
	}
	if err := c.counter.RemoveCopy(); err != nil {
		c.logger.Warn("daemon: removing the copy of a counted checkpoint", "epoch", epoch, "error", err)
	}
	if r.err != nil {
		if ctx.Err() == nil {
			c.logger.Warn("daemon: counting a checkpoint's keys", "epoch", epoch, "error", r.err)
		}
		return r
	}
	c.mu.Lock()
	c.st.LastCount, c.st.LastCountDuration, c.st.LastCountEpoch = r.CheckpointCount, r.took, epoch
	c.mu.Unlock()
	if c.counted != nil {
		c.counted(r.took, r.Whole != "")
	}
	return r
}

// awaitCount waits for the count run, once the checkpoint's files took
// sent to send, as long again, and at least countGrace; it returns the
// count, or why the checkpoint's keys are not counted (notCounted when
// run is nil). A count still running then goes on, and ends as the base
// of the next; it only fails the checkpoint when ctx ends.
func (c *coordinator) awaitCount(ctx context.Context, run *countRun, notCounted string, sent time.Duration) (stateCount, string, error) {
	if run == nil {
		return stateCount{}, notCounted, nil
	}
	wait := max(sent, countGrace)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case n := <-run.done:
		if n.err != nil {
			return stateCount{}, n.err.Error(), nil
		}
		return n, "", nil
	case <-t.C:
		c.countWG.Go(func() {
			if n := <-run.done; n.err == nil {
				c.logger.Info("daemon: a checkpoint's count ended after the checkpoint completed", "epoch", run.epoch, "count", n.how())
			}
		})
		return stateCount{}, fmt.Sprintf("its count was not done %v after its files were sent (it went on, as the next count's base)", wait.Round(time.Millisecond)), nil
	case <-ctx.Done():
		return stateCount{}, "", context.Cause(ctx)
	}
}

// stopCount stops the count under way, if any: it ends without a result.
func (c *coordinator) stopCount() {
	c.countMu.Lock()
	defer c.countMu.Unlock()
	if c.counting != nil {
		c.counting.cancel()
	}
}

// errNotTheCut is a local checkpoint that does not hold the state its
// barrier cut: uploading it would pair an epoch with other state.
var errNotTheCut = errors.New("daemon: the local checkpoint is not its barrier's cut")

// checkpointMeta checks that the local checkpoint read as info holds the
// state its barrier cp cut, and returns the manifest's metadata. The
// checkpoint is made off the apply loop, so it holds the state as of the
// barrier or of a later entry, but never an earlier one, and never a
// later barrier's epoch. Its Raft index is its own applied index, and its
// term that entry's, read from the log by termAt: the barrier's term
// describes another entry when the term changed in between.
func checkpointMeta(cp fsm.CheckpointResult, info fsm.CheckpointInfo, start time.Time, termAt func(uint64) (uint64, error)) (uploader.Meta, error) {
	if info.Epoch != cp.Epoch || info.AppliedIndex < cp.Index {
		return uploader.Meta{}, fmt.Errorf("%w: %s holds epoch %d at applied index %d, but barrier %d applied at index %d; it is not uploaded",
			errNotTheCut, cp.Dir, info.Epoch, info.AppliedIndex, cp.Epoch, cp.Index)
	}
	term := cp.Term
	if info.AppliedIndex != cp.Index {
		var err error
		if term, err = termAt(info.AppliedIndex); err != nil {
			return uploader.Meta{}, fmt.Errorf("checkpoint %d: the term of its applied index %d: %w", cp.Epoch, info.AppliedIndex, err)
		}
	}
	meta := uploader.Meta{
		Epoch: cp.Epoch, RaftIndex: info.AppliedIndex, RaftTerm: term, ClusterID: info.ClusterID,
		CreatedAt: start.UTC(), Stats: uploader.Stats{Keys: info.Keys, Bytes: info.Bytes}, Offsets: manifestOffsets(info.Offsets),
	}
	return meta, nil
}

// manifestOffsets are the state's offsets as a manifest records them.
func manifestOffsets(offsets []command.Offset) []uploader.Offset {
	var out []uploader.Offset
	for _, o := range offsets {
		out = append(out, uploader.Offset{Group: o.Group, Topic: o.Topic, Partition: o.Partition, Offset: o.Offset})
	}
	return out
}

// prehashLoop, every checkpoint interval (10 s when checkpoints are only
// taken on request), while this node follows, flushes its memtable, as
// the leader does before each checkpoint, and hashes the tables of its
// state that the uploader's cache does not know yet (uploader.Prehash),
// one at a time. Every replica holds the same state in its own tables, so
// a leader's checksums are no use to it: without this, a node that
// becomes the leader reads its whole state for its first checkpoint. The
// cache is kept in the data dir, so a restarted follower does not start
// over.
func (c *coordinator) prehashLoop(ctx context.Context) {
	every := c.every
	if every <= 0 {
		every = 10 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if c.store.IsLeader() {
			continue
		}
		// A follower counts nothing: its base would only hold tables its
		// store has compacted away.
		c.stopCount()
		if err := c.counter.Drop(); err != nil {
			c.logger.Warn("daemon: removing the base of checkpoint counts", "error", err)
		}
		c.prehash(ctx)
	}
}

// prehash runs one pass of prehashLoop.
func (c *coordinator) prehash(ctx context.Context) {
	if err := c.store.FlushContext(ctx); err != nil {
		c.logger.Debug("daemon: flush before hashing the state's tables", "error", err)
		return
	}
	st, err := c.up.Prehash(ctx, c.stateDir)
	if err != nil {
		if ctx.Err() == nil {
			c.logger.Warn("daemon: hashing the state's tables ahead of a checkpoint", "error", err)
		}
		return
	}
	if st.FilesHashed > 0 {
		c.logger.Debug("daemon: hashed new tables ahead of a checkpoint", "tables", st.Tables, "hashed", st.FilesHashed, "bytes", st.BytesHashed)
	}
	c.mu.Lock()
	c.st.BackgroundHashPasses++
	c.st.BackgroundBytesHashed += st.BytesHashed
	c.mu.Unlock()
}

// watchLeadership cancels the checkpoint as soon as this node stops
// leading, with errStoppedLeading as the cause.
func (c *coordinator) watchLeadership(ctx context.Context, cancel context.CancelCauseFunc) {
	t := time.NewTicker(c.pollFor)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !c.store.IsLeader() {
				cancel(errStoppedLeading)
				return
			}
		}
	}
}

func (c *coordinator) progress(done, total int64) {
	c.mu.Lock()
	c.st.InProgressBytesDone, c.st.InProgressBytesTotal = done, total
	c.mu.Unlock()
}

// stoppedLeading is a checkpoint abandoned because this node stopped
// leading: it is also raftstore.ErrNotLeader, which the API answers
// UNAVAILABLE (try the new leader), not the CANCELED of its cause.
type stoppedLeading struct{ err error }

func (e stoppedLeading) Error() string {
	return "abandoned: this node stopped leading: " + e.err.Error()
}
func (e stoppedLeading) Unwrap() []error { return []error{e.err, raftstore.ErrNotLeader} }

// errStoppedLeading is the cause with which watchLeadership cancels a
// checkpoint. It is context.Canceled, as the end of the context would be
// without a cause, to what reports context.Cause (the uploader does).
var errStoppedLeading = fmt.Errorf("%w: this node stopped leading", context.Canceled)

// failed records the failure of the checkpoint whose context is ctx. A
// cancellation is stoppedLeading when watchLeadership cancelled it, even
// if this node leads again by now (an election may hand leadership back
// before the upload has noticed), or when this node does not lead.
func (c *coordinator) failed(ctx context.Context, tr *trigger, epoch uint64, err error) {
	if errors.Is(err, context.Canceled) && (errors.Is(context.Cause(ctx), errStoppedLeading) || !c.store.IsLeader()) {
		err = stoppedLeading{err}
	}
	if ahead := (*uploader.BucketAheadError)(nil); errors.As(err, &ahead) {
		if ahead.ClusterID != "" && ahead.ClusterID == c.store.ClusterID() {
			// This cluster's own newer checkpoint: another leader took it
			// while this node still thought it led, or, if it repeats, the
			// data dirs are older than the bucket (copies of old disks).
			err = fmt.Errorf("abandoned: a newer leader of this cluster completed checkpoint %d: %w (if every checkpoint fails so, this cluster's data dirs are older than the bucket: restore it with stated restore --from %s)",
				ahead.Newest, err, c.restoreFrom)
		} else {
			whose := "This cluster's checkpoints did not start from the bucket's"
			if ahead.ClusterID == "" {
				// The newest manifest did not read (or predates cluster
				// ids): this cluster's own, or another's.
				whose = "The bucket's newest manifest does not say which cluster wrote it (it did not read); if not this cluster, its checkpoints did not start from the bucket's"
			}
			err = fmt.Errorf("%w. %s (a new cluster on a used bucket, or a data dir older than the bucket): "+
				"restore the cluster from the bucket (stated restore --from %s), or give --checkpoint-url a prefix no other cluster writes (prefix=NAME/ in its query)", err, whose, c.restoreFrom)
		}
	}
	c.logger.Warn("daemon: checkpoint failed", "epoch", epoch, "error", err)
	last := fmt.Sprintf("epoch %d: %v", epoch, err)
	if epoch == 0 { // failed before its barrier gave it an epoch
		last = err.Error()
	}
	c.mu.Lock()
	c.st.Failures++
	c.st.LastError, c.st.LastErrorAt = last, time.Now()
	c.st.InProgressEpoch = 0
	c.mu.Unlock()
	if tr != nil {
		tr.done <- triggerResult{epoch: epoch, err: err}
	}
}

// Status returns the coordinator's state.
func (c *coordinator) Status() CheckpointStatus {
	c.mu.Lock()
	st := c.st
	c.mu.Unlock()
	c.countMu.Lock()
	if c.counting != nil {
		st.CountingEpoch = c.counting.epoch
	}
	c.countMu.Unlock()
	if c.kafka != nil {
		st.KafkaCommits, st.KafkaCommitErrors, st.KafkaMemberCommits = c.kafka.committed.Load(), c.kafka.failed.Load(), c.kafka.members.Load()
	}
	return st
}

// redactURL masks the credentials of a bucket URL (see redact.URL).
func redactURL(raw string) string { return redact.URL(raw) }

// sharesDisk reports whether a file:// bucket lies on the file system of
// the data dir, so that losing that disk loses both.
func sharesDisk(bucketURL, dataDir string) bool {
	u, err := url.Parse(bucketURL)
	if err != nil || u.Scheme != "file" {
		return false
	}
	dev := func(p string) (uint64, bool) {
		for ; ; p = filepath.Dir(p) {
			var st syscall.Stat_t
			if err := syscall.Stat(p, &st); err == nil {
				return uint64(st.Dev), true
			}
			if p == filepath.Dir(p) {
				return 0, false
			}
		}
	}
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return false
	}
	a, ok1 := dev(abs)
	b, ok2 := dev(u.Path)
	return ok1 && ok2 && a == b
}

// defaultCheckpointURL is the file:// bucket under the data dir.
func defaultCheckpointURL(dataDir string) (string, error) {
	abs, err := filepath.Abs(filepath.Join(dataDir, "checkpoints"))
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", fmt.Errorf("daemon: create checkpoint dir: %w", err)
	}
	return (&url.URL{Scheme: "file", Path: abs}).String(), nil
}
