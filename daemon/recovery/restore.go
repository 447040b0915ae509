package recovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/fsm"
	"github.com/statedhq/stated/uploader"
)

// RestoreOptions say what Restore restores, and where.
type RestoreOptions struct {
	Uploader *uploader.Uploader
	Select   Selector
	// DataDir is the new node's data dir. It must be empty or missing
	// unless Force is set, which replaces what it holds.
	DataDir string
	Force   bool
	// Fallback restores the newest intact checkpoint older than the
	// selected one when the selected one has a missing or corrupt file.
	Fallback bool
	// Kafka, when set, has each group's committed offsets reset to the
	// checkpoint's. The groups must have no live members.
	Kafka    *kadm.Client
	Progress uploader.Progress
	Logger   *slog.Logger
}

// RestoreResult says what Restore did.
type RestoreResult struct {
	Manifest *uploader.Manifest
	// Skipped lists the checkpoints passed over by Fallback, newest
	// first, each with why.
	Skipped  []string
	Download uploader.DownloadStats
	// Replay is what replaying a changelog checkpoint's segments onto its
	// base's tables took; zero for a table checkpoint.
	Replay fsm.ReplayStats
	// KafkaGroups are the groups whose committed offsets were reset.
	KafkaGroups []string
}

// kafkaProbeTimeout bounds the check that Kafka answers, made before
// anything is written.
const kafkaProbeTimeout = 15 * time.Second

// ErrDataDirNotEmpty is returned when the data dir holds something and
// Force is not set.
var ErrDataDirNotEmpty = errors.New("recovery: the data dir is not empty")

// Restore materialises a checkpoint as the state of a new single-node
// cluster in opts.DataDir: it downloads every file (keeping local files
// that already have the right checksum), verifies each, and prepares the
// state so that `stated run` on the data dir bootstraps a new cluster
// from it (a new cluster id, with the restored checkpoint recorded).
// Nothing is written to the data dir before the checkpoint is selected
// and, with Kafka, Kafka has answered; a failed download leaves the data
// dir as it was. The new state is staged whole beside the old one and
// swapped in crash-safely: a crash or kill at any point leaves the old
// data dir or the new one, and the next `stated run` (or restore)
// completes the swap.
func Restore(ctx context.Context, opts RestoreOptions) (_ *RestoreResult, rerr error) {
	start := time.Now()
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if !opts.Force {
		if empty, err := emptyDir(opts.DataDir); err != nil {
			return nil, err
		} else if !empty {
			return nil, fmt.Errorf("%w: %s holds files; --force replaces them", ErrDataDirNotEmpty, opts.DataDir)
		}
	}
	all, unreadable, err := opts.Uploader.Catalog(ctx)
	if err != nil {
		return nil, err
	}
	res := &RestoreResult{}
	var m *uploader.Manifest
	if opts.Select == (Selector{}) {
		m, err = uploader.Newest(all, unreadable) // Select's Latest, without listing the bucket again
	} else {
		m, err = Select(ctx, opts.Uploader, opts.Select)
	}
	if errors.Is(err, uploader.ErrNotFound) && opts.Select == (Selector{}) {
		return nil, ErrNoCheckpoint
	}
	if err != nil && opts.Fallback && opts.Select == (Selector{}) && notIntact(err) {
		// The newest manifest does not read: fall back as from a
		// checkpoint that is not intact.
		var newest uint64
		for _, un := range unreadable {
			if un.Epoch > newest {
				newest = un.Epoch
			}
		}
		res.Skipped = append(res.Skipped, fmt.Sprintf("checkpoint %d: %v", newest, err))
		logger.Warn("recovery: the newest manifest does not read; falling back to an older checkpoint", "epoch", newest, "error", err)
		if len(all) == 0 {
			return nil, fmt.Errorf("recovery: no intact checkpoint: %w", err)
		}
		m, err = all[len(all)-1], nil
	}
	if err != nil {
		return nil, err
	}
	// An encrypted checkpoint the key given (or none) cannot decrypt
	// fails here, before the data dir is touched.
	if err := opts.Uploader.CheckKey(ctx, m); keyProblem(err) {
		return nil, err
	}
	// The restored cluster's epochs start above every checkpoint in the
	// bucket, those that do not read too.
	var maxEpoch uint64
	for _, c := range all {
		maxEpoch = max(maxEpoch, c.Epoch)
	}
	for _, un := range unreadable {
		maxEpoch = max(maxEpoch, un.Epoch)
	}
	if err := raftstore.CheckNotInUse(opts.DataDir); err != nil {
		return nil, err
	}
	if opts.Kafka != nil {
		pctx, cancel := context.WithTimeout(ctx, kafkaProbeTimeout)
		_, err := opts.Kafka.ListBrokers(pctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("recovery: Kafka does not answer: %w", err)
		}
	}
	// The data dir is the restore's until it returns: a node started
	// meanwhile, or another restore, would remove what it stages.
	unlock, err := raftstore.LockDataDir(opts.DataDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		// A failed restore into an empty data dir leaves it empty, the
		// lock's file too.
		if empty, _ := emptyDir(opts.DataDir); empty && rerr != nil {
			os.Remove(filepath.Join(opts.DataDir, raftstore.DataDirLockName))
		}
		unlock()
	}()
	// Finish (or roll back) a swap that an earlier restore left
	// interrupted, so that the state linked from below is whole.
	if err := raftstore.RecoverDataDir(opts.DataDir); err != nil {
		return nil, err
	}
	staging := raftstore.RestoreStagingDir(opts.DataDir)
	installing := false
	defer func() {
		// Once the swap has begun, its recovery owns the staged state.
		if !installing {
			os.RemoveAll(staging)
		}
	}()
	for {
		res.Download, err = download(ctx, opts, m, staging)
		if err == nil && m.Changelog != nil {
			if res.Replay, err = Replay(ctx, staging, m, logger); err != nil {
				err = &replayError{err}
			}
		}
		if err == nil {
			break
		}
		// Fall back only from a checkpoint that is not intact.
		if !opts.Fallback || ctx.Err() != nil || !notIntact(err) {
			return nil, &CheckpointError{Epoch: m.Epoch, Skipped: res.Skipped, Err: err}
		}
		res.Skipped = append(res.Skipped, fmt.Sprintf("checkpoint %d: %v", m.Epoch, err))
		logger.Warn("recovery: checkpoint not intact; falling back to an older one", "epoch", m.Epoch, "error", err)
		older := slices.DeleteFunc(slices.Clone(all), func(c *uploader.Manifest) bool { return c.Epoch >= m.Epoch })
		if len(older) == 0 {
			return nil, fmt.Errorf("recovery: no intact checkpoint: %w", err)
		}
		m = older[len(older)-1]
	}
	res.Manifest = m
	// The state records how long its restore took, for the daemon's
	// stated_restore_duration_seconds.
	now := time.Now()
	from := fsm.RestoredFrom{Epoch: m.Epoch, RaftIndex: m.RaftIndex, ClusterID: m.ClusterID, At: now, Took: now.Sub(start)}
	if err := fsm.PrepareRestore(staging, from, maxEpoch); err != nil {
		return nil, err
	}
	// Replace what the data dir held: the old Raft log and state would
	// belong to the cluster the checkpoint came from. A crash in the swap
	// leaves the old data dir or the new one, whole (see
	// raftstore.InstallRestoredState).
	installing = true
	if err := raftstore.InstallRestoredState(opts.DataDir); err != nil {
		return nil, err
	}
	if opts.Kafka != nil {
		if res.KafkaGroups, err = resetKafka(ctx, opts.Kafka, m); err != nil {
			return res, err
		}
	}
	return res, nil
}

// download fetches m into staging, which starts as hard links of the data
// dir's current state, so that unchanged files are not fetched again.
func download(ctx context.Context, opts RestoreOptions, m *uploader.Manifest, staging string) (uploader.DownloadStats, error) {
	if err := os.RemoveAll(staging); err != nil {
		return uploader.DownloadStats{}, err
	}
	if err := os.MkdirAll(staging, 0o700); err != nil {
		return uploader.DownloadStats{}, err
	}
	want := map[string]bool{}
	for _, f := range m.Files {
		want[filepath.FromSlash(f.Path)] = true
	}
	old := filepath.Join(opts.DataDir, "state")
	_ = filepath.WalkDir(old, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(old, p)
		if err != nil || !want[rel] {
			return nil
		}
		dst := filepath.Join(staging, rel)
		if os.MkdirAll(filepath.Dir(dst), 0o700) == nil {
			_ = os.Link(p, dst) // a copy would defeat the purpose; skip on failure
		}
		return nil
	})
	return opts.Uploader.Download(ctx, m, staging, opts.Progress)
}

// Replay brings the base tables of the changelog checkpoint m, downloaded
// into staging (Uploader.Download), to m's state by replaying its
// segments, checks that the result is m's cut (fsm.ReplayChangelog), then
// removes the segments. It stops when ctx ends. Restore calls it; so may a test that downloads a
// checkpoint itself.
func Replay(ctx context.Context, staging string, m *uploader.Manifest, logger *slog.Logger) (fsm.ReplayStats, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	segments := make([]string, len(m.Changelog.Segments))
	for i, s := range m.Changelog.Segments {
		segments[i] = filepath.Join(staging, filepath.FromSlash(s))
	}
	want := fsm.ChangelogTarget{
		BaseIndex: m.Changelog.BaseIndex, Index: m.RaftIndex, Term: m.RaftTerm, Epoch: m.Epoch, ClusterID: m.ClusterID,
	}
	for _, o := range m.Offsets {
		want.Offsets = append(want.Offsets, command.Offset{Group: o.Group, Topic: o.Topic, Partition: o.Partition, Offset: o.Offset})
	}
	st, err := fsm.ReplayChangelog(ctx, staging, segments, want, logger)
	if err != nil {
		return st, fmt.Errorf("recovery: checkpoint %d: replaying its changelog onto the tables of checkpoint %d: %w", m.Epoch, m.Changelog.BaseEpoch, err)
	}
	logger.Info("recovery: replayed the checkpoint's changelog", "epoch", m.Epoch, "base_epoch", m.Changelog.BaseEpoch,
		"segments", st.Segments, "entries", st.Entries, "bytes", st.Bytes, "took", st.Took)
	for _, s := range segments {
		if err := os.Remove(s); err != nil {
			return st, fmt.Errorf("recovery: %w", err)
		}
	}
	if err := os.Remove(filepath.Join(staging, "changelog")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return st, fmt.Errorf("recovery: %w", err)
	}
	return st, nil
}

// resetKafka commits m's offsets to each of its groups.
func resetKafka(ctx context.Context, adm *kadm.Client, m *uploader.Manifest) ([]string, error) {
	groups := map[string]kadm.Offsets{}
	for _, o := range m.Offsets {
		offs := groups[o.Group]
		if offs == nil {
			offs = kadm.Offsets{}
			groups[o.Group] = offs
		}
		offs.Add(kadm.Offset{Topic: o.Topic, Partition: o.Partition, At: o.Offset, LeaderEpoch: -1})
	}
	var done []string
	var errs []error
	for g, offs := range groups {
		resp, err := adm.CommitOffsets(ctx, g, offs)
		if err == nil {
			err = resp.Error()
		}
		if err == nil {
			err = deleteOffsetsAhead(ctx, adm, g, offs)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("group %q: %w (stop the group's consumers before a restore)", g, err))
			continue
		}
		done = append(done, g)
	}
	slices.Sort(done)
	if len(errs) > 0 {
		return done, fmt.Errorf("recovery: resetting Kafka offsets: %w", errors.Join(errs...))
	}
	return done, nil
}

// deleteOffsetsAhead deletes group's committed offsets of the partitions
// of the checkpoint's topics (those of offs) that the checkpoint holds no
// offset for: the restored state reads such a partition from its start,
// so an offset Kafka's group committed since (a later checkpoint's) would
// run ahead of it, and consumers and lag tools reading it would skip what
// stated replays. Topics the checkpoint holds no offset of are left alone.
func deleteOffsetsAhead(ctx context.Context, adm *kadm.Client, group string, offs kadm.Offsets) error {
	fetched, err := adm.FetchOffsets(ctx, group)
	if err == nil {
		err = fetched.Error()
	}
	if err != nil {
		return fmt.Errorf("fetching its committed offsets: %w", err)
	}
	ahead := kadm.TopicsSet{}
	fetched.Each(func(o kadm.OffsetResponse) {
		if _, ok := offs[o.Topic]; !ok || o.At < 0 {
			return
		}
		if _, ok := offs.Lookup(o.Topic, o.Partition); !ok {
			ahead.Add(o.Topic, o.Partition)
		}
	})
	if len(ahead) == 0 {
		return nil
	}
	resp, err := adm.DeleteOffsets(ctx, group, ahead)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return fmt.Errorf("deleting the offsets of partitions %v, which the checkpoint holds none for: %w", ahead.Sorted(), err)
	}
	return nil
}

// emptyDir reports whether dir is missing or holds nothing but the data
// dir's lock file (a restore that failed leaves it).
func emptyDir(dir string) (bool, error) {
	f, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("recovery: %w", err)
	}
	defer f.Close()
	for {
		names, err := f.Readdirnames(8)
		if errors.Is(err, io.EOF) {
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("recovery: %w", err)
		}
		for _, n := range names {
			if n != raftstore.DataDirLockName {
				return false, nil
			}
		}
	}
}

// keyProblem reports whether err says the key is missing or wrong: not
// a checkpoint to fall back from, and never corruption.
func keyProblem(err error) bool {
	return errors.Is(err, uploader.ErrKeyNeeded) || errors.Is(err, uploader.ErrWrongKey)
}

// notIntact reports whether err, a failed download or replay of a
// checkpoint, says that the checkpoint itself is not intact: a blob
// missing or not what the manifest says (uploader.ErrCorrupt), a manifest
// this version cannot read (uploader.ErrFormat), or a changelog that does
// not replay to the checkpoint's cut (fsm.ErrCorrupt). Only from such a
// checkpoint does a restore with Fallback go on to an older one. Any
// other failure would be the same with an older checkpoint, or passes
// with time: this machine's disk full or failing, the key, the bucket
// unreachable, throttling or refusing (S3's 503 SlowDown, 403
// AccessDenied); an older checkpoint would then only restore less than
// the bucket holds.
func notIntact(err error) bool {
	if keyProblem(err) || localProblem(err) {
		return false
	}
	var re *replayError
	if errors.As(err, &re) {
		return errors.Is(err, fsm.ErrCorrupt)
	}
	return errors.Is(err, uploader.ErrCorrupt) || errors.Is(err, uploader.ErrFormat)
}

// localProblem reports whether err is a failure of the local file system:
// a download's write into the staging directory (uploader.IsLocal), or
// any file system error of a changelog's replay, which reads and writes
// only local files (the segments were downloaded and verified first).
func localProblem(err error) bool {
	var re *replayError
	if errors.As(err, &re) {
		var pe *fs.PathError
		var errno syscall.Errno
		return errors.As(err, &pe) || errors.As(err, &errno)
	}
	return uploader.IsLocal(err)
}

// CheckpointError is Restore's error for a checkpoint it could not
// download or replay. Epoch names that checkpoint, which with Fallback
// need not be the one selected (a key that does not decrypt the older
// checkpoint it fell back to); Skipped lists the newer ones passed over.
type CheckpointError struct {
	Epoch   uint64
	Skipped []string
	Err     error
}

func (e *CheckpointError) Error() string { return e.Err.Error() }
func (e *CheckpointError) Unwrap() error { return e.Err }

// replayError is an error of Replay in Restore.
type replayError struct{ err error }

func (e *replayError) Error() string { return e.err.Error() }
func (e *replayError) Unwrap() error { return e.err }
