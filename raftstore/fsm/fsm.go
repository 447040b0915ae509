package fsm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// FSM applies Raft log entries to Pebble. It implements raft.FSM.
//
// Apply, Snapshot and Restore are called by Raft from one goroutine; reads
// may run concurrently with them.
type FSM struct {
	dir    string // the Pebble directory
	logger *slog.Logger

	// mu guards db against Restore swapping it; readers and Apply take it
	// shared, Restore and Close exclusively.
	mu     sync.RWMutex
	db     *pebble.DB
	closed bool

	// cache is the block cache of db, and of every database that replaces
	// it on Restore; the FSM holds one reference from Open to Close.
	cache        *pebble.Cache
	releaseCache sync.Once
	tune         func(*pebble.Options) // see openOptions

	applied atomic.Uint64
	// logNow is the newest leader time (Command.Now) applied; see ReadTime.
	logNow atomic.Int64

	checkpointDir string          // local checkpoints, one directory per epoch
	ckptWG        sync.WaitGroup  // the local checkpoint being made, if any
	snaps         liveSnapshots   // snapshots Raft has not persisted or released yet
	logBytes      logBytes        // the log's size since the newest snapshot; see LogBytes
	storage       storageCounters // see StorageStats
	staging       staging         // a state built from a stream as it was received (stage.go)

	// lastCkpt is the newest local checkpoint started (a changelog
	// barrier makes none); only the apply loop reads and writes it.
	lastCkpt *CheckpointResult
	// replay is set while ReplayChangelog applies a changelog: barriers
	// then only commit, and completions remove no local checkpoint.
	replay bool
	// records are db's session and lane records, for the apply loop
	// (records.go); reset whenever db is replaced.
	records *recordCache
	// outboxLows tell Emissions where each outbox's pending emissions
	// may start (windows.go); reset whenever db is replaced.
	outboxLows outboxLows
	// removals are the removals of uploaded local checkpoints, made in the
	// background one after the other (see removeUploaded).
	removals removalQueue
	// capture, when not nil, is the apply loop's capture of the command
	// entries it applies for the next changelog segment (capture.go).
	capture *capture

	waitMu sync.Mutex
	waitCh chan struct{} // closed and replaced whenever applied moves

	// bg are Pebble's background errors, logged rate-limited; a Flush
	// fails at one (diskfull.go).
	bg *backgroundErrors
}

// DefaultCacheSize is the size of the block cache of the state's Pebble
// unless WithCacheSize says otherwise. Pebble reserves each memtable's
// size (64 MiB here) in the block cache, so its own 8 MB default held no
// blocks at all once a memtable existed, and every read of an entry or a
// window's aggregate decompressed a block again. 256 MiB is what the
// memtables could already take (MemTableStopWritesThreshold × 64 MiB):
// the cache and the memtables share it, so the peak stays where it was.
// Pebble keeps a flushed memtable to reuse its memory, and its
// reservation with it, so once the memtables have grown to 64 MiB (from
// 256 KiB), 128 MiB hold decoded blocks
// (TestAFlushedMemtableKeepsItsShareOfTheCache).
const DefaultCacheSize = 256 << 20

// MinCacheSize is the smallest block cache Open accepts.
const MinCacheSize = 1 << 20

// Option configures Open.
type Option func(*openOptions)

type openOptions struct {
	cacheSize int64
	// windowCacheSize bounds the window aggregates' cache (aggCache).
	windowCacheSize int64
	// tune changes the Pebble options, in tests that want an LSM of many
	// small tables.
	tune func(*pebble.Options)
}

// WithCacheSize sets the size in bytes of the block cache of the state's
// Pebble (DefaultCacheSize if not given); at least MinCacheSize.
func WithCacheSize(bytes int64) Option {
	return func(o *openOptions) { o.cacheSize = bytes }
}

// WithWindowCacheSize bounds the memory of the cache of window
// aggregates the apply loop keeps (DefaultWindowCacheSize if not given;
// 0 turns it off). It holds about one window per 110 bytes, and takes
// memory only as windows are added.
func WithWindowCacheSize(bytes int64) Option {
	return func(o *openOptions) { o.windowCacheSize = bytes }
}

// Open opens (or creates) the state in dir.
func Open(dir string, logger *slog.Logger, opts ...Option) (*FSM, error) {
	return OpenContext(context.Background(), dir, logger, opts...)
}

// OpenContext opens (or creates) the state in dir. It gives up, with an
// error that says so, when Pebble reports a full disk while it opens (a
// WAL replayed must be flushed, and Pebble would retry that flush
// forever), and when ctx ends: Pebble's database is then abandoned to
// the process's exit (see openWait).
func OpenContext(ctx context.Context, dir string, logger *slog.Logger, opts ...Option) (*FSM, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	o := openOptions{cacheSize: DefaultCacheSize, windowCacheSize: DefaultWindowCacheSize}
	for _, opt := range opts {
		opt(&o)
	}
	if o.cacheSize < MinCacheSize {
		return nil, fmt.Errorf("fsm: block cache size %d is below the %d-byte minimum", o.cacheSize, MinCacheSize)
	}
	if o.windowCacheSize < 0 {
		return nil, fmt.Errorf("fsm: window cache size %d is negative (0 turns the cache off)", o.windowCacheSize)
	}
	if err := recoverInterruptedRestore(dir); err != nil {
		return nil, err
	}
	f := &FSM{dir: dir, logger: logger, waitCh: make(chan struct{}),
		checkpointDir: filepath.Join(filepath.Dir(dir), "local-checkpoints"),
		cache:         pebble.NewCache(o.cacheSize), tune: o.tune, records: newRecordCacheSized(o.windowCacheSize),
		bg: newBackgroundErrors(logger)}
	db, err := f.openPebbleContext(ctx, dir)
	if err != nil {
		f.cache.Unref()
		return nil, err
	}
	f.db = db
	f.snaps.init()
	idx, err := readAppliedIndex(db)
	if err != nil {
		db.Close()
		f.cache.Unref()
		return nil, err
	}
	f.applied.Store(idx)
	return f, nil
}

// openPebble opens the database in dir with the FSM's block cache (the
// database takes its own reference to it, released by its Close).
func (f *FSM) openPebble(dir string) (*pebble.DB, error) {
	db, err := pebble.Open(dir, f.pebbleOptions(nil))
	if err != nil {
		return nil, fmt.Errorf("fsm: open pebble in %s: %w%s", dir, err, diskFullHint(err))
	}
	return db, nil
}

// pebbleOptions are the options of the FSM's databases; w, if not nil,
// is the Open waiting for this one.
func (f *FSM) pebbleOptions(w *openWait) *pebble.Options {
	opts := PebbleOptions()
	opts.Logger = pebbleLogger{f.logger}
	opts.Cache = f.cache
	opts.EventListener = f.storage.listener()
	opts.EventListener.FlushBegin = func(pebble.FlushInfo) { f.bg.flushBegun() }
	opts.EventListener.BackgroundError = func(err error) {
		f.bg.report(err)
		if w != nil {
			w.backgroundError(err)
		}
	}
	if f.tune != nil {
		f.tune(opts)
	}
	return opts
}

// CacheMaxSize is the size limit of the state's block cache in bytes.
func (f *FSM) CacheMaxSize() int64 { return f.cache.MaxSize() }

// WindowCacheMaxSize is the memory the cache of window aggregates may
// take (WithWindowCacheSize); 0 when it is off.
func (f *FSM) WindowCacheMaxSize() int64 { return f.records.aggs.size }

// PebbleOptions are the options the state machine opens Pebble with. A
// 64 MiB memtable (Pebble's default is 4 MiB) flushes less often, so that
// bursts of large commits leave fewer small L0 files to compact.
//
// Tables are written in 32 KiB blocks (Pebble's default is 4 KiB; 32 KiB
// is what CockroachDB gives Pebble). The reads that scan the state, the
// exact key count of a checkpoint and the count from the checkpoint
// before, a snapshot stream, then make a read system call and a checksum
// per 32 KiB instead of per 4 KiB: BenchmarkCountCheckpoint took half the
// CPU (142 against 280 ms for 256 MB), and under a checkpoint every second
// each checkpoint took 2.1–2.2 s instead of 3.4–6.5 s (BENCHMARKS.md). A
// point read that misses the block cache reads 32 KiB; Get and the
// commit rows measured the same either way. Tables written before keep
// their blocks until compactions rewrite them.
//
// The WAL is written back in the background every 1 MiB
// (WALBytesPerSync; Pebble's default is never). The state machine
// commits without a sync (the Raft log is what is durable), so until
// its memtable rotates Pebble's WAL holds up to a memtable's worth of
// writes only in the page cache, and the rotation's close of the old
// WAL syncs all of it while the state machine's next write waits: at a
// full memtable, and at the flush before each checkpoint. Written back
// as it goes, that close has about 1 MiB left to sync. Pebble writes
// back with sync_file_range on ext2/3/4 and with fdatasync elsewhere;
// both were measured. Three nodes' p99 under 100-mutation commits fell
// to 0.72× and 1000-mutation commits' to 0.75–0.77× (BENCHMARKS.md).
//
// Flushes and compactions end a table wherever the key's first byte (its
// prefix, keys.go) changes (tableAtEachPrefix). Every batch the state
// machine commits writes its applied index (0x00) and its sessions' and
// lanes' records (0x07, 0x08) beside the state (0x02), so a flushed
// table used to span the key space and overlap every table of the level
// below: each compaction out of L0 rewrote the state's tables there with
// it, although new state keys overlapped none of them. Split, the
// bookkeeping's small tables stack and compact among themselves, and a
// state table is rewritten only where new state overlaps it.
func PebbleOptions() *pebble.Options {
	opts := &pebble.Options{
		MemTableSize:                64 << 20,
		MemTableStopWritesThreshold: 4,
		L0CompactionThreshold:       4,
		L0StopWritesThreshold:       24,
		WALBytesPerSync:             1 << 20,
		Logger:                      pebbleLogger{slog.New(slog.DiscardHandler)},
		// No WAL recycling: a checkpoint's WAL copy then ends at its
		// last record (cleaner.go).
		Cleaner: deleteNoRecycle{},
	}
	for i := range opts.Levels {
		opts.Levels[i].BlockSize = 32 << 10
	}
	opts.Experimental.SpanPolicyFunc = tableAtEachPrefix
	opts.EnsureDefaults()
	return opts
}

// tableAtEachPrefix is a pebble.SpanPolicyFunc that changes no policy but
// ends a flush's or a compaction's output table before the next key
// prefix: the span it returns ends where the first byte of start does.
func tableAtEachPrefix(start []byte) (pebble.SpanPolicy, []byte, error) {
	switch {
	case len(start) == 0:
		return pebble.SpanPolicy{}, []byte{0}, nil
	case start[0] == 0xff:
		return pebble.SpanPolicy{}, nil, nil // to the end of the key space
	}
	return pebble.SpanPolicy{}, []byte{start[0] + 1}, nil
}

func readAppliedIndex(r pebble.Reader) (uint64, error) {
	v, closer, err := r.Get(keyAppliedIndex)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("fsm: read applied index: %w", err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: applied index of %d bytes", ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// Close closes Pebble. Reads after Close return ErrClosed.
func (f *FSM) Close() error {
	f.ckptWG.Wait()     // a local checkpoint reads the database
	f.removals.wait()   // and removals of uploaded ones must not outlive us
	f.snaps.detachAll() // so does a snapshot being persisted
	f.mu.Lock()
	defer f.mu.Unlock()
	// After the database (also one a failed Restore closed): its Close
	// drops its own reference, and the cache's memory is freed once no
	// reference is left.
	defer f.releaseCache.Do(f.cache.Unref)
	if f.closed {
		return nil
	}
	f.snaps.detachAll()
	f.closed = true
	f.notifyApplied()
	return f.db.Close()
}

// AppliedIndex is the Raft index of the last entry applied.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// WaitApplied blocks until the applied index reaches index or ctx ends.
func (f *FSM) WaitApplied(ctx context.Context, index uint64) error {
	for {
		f.waitMu.Lock()
		ch := f.waitCh
		f.waitMu.Unlock()
		if f.applied.Load() >= index {
			return nil
		}
		f.mu.RLock()
		closed := f.closed
		f.mu.RUnlock()
		if closed {
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ReadTime is the time a read judges expiry by, given the node's clock:
// the later of it and the newest leader time this state machine applied.
// A node whose clock runs behind the leader's then serves no entry that
// its log already says expired (expiry itself goes by the leader's time,
// which a later TypeExpire deletes it at).
func (f *FSM) ReadTime(clock int64) int64 { return max(clock, f.logNow.Load()) }

// noteLogTime records the leader time of an applied command; only the
// apply loop calls it.
func (f *FSM) noteLogTime(now int64) {
	if now > f.logNow.Load() {
		f.logNow.Store(now)
	}
}

func (f *FSM) setApplied(index uint64) {
	f.applied.Store(index)
	f.notifyApplied()
}

func (f *FSM) notifyApplied() {
	f.waitMu.Lock()
	close(f.waitCh)
	f.waitCh = make(chan struct{})
	f.waitMu.Unlock()
}

// Apply applies one Raft log entry and returns a *Result: a batch of one
// (see applyBatch).
func (f *FSM) Apply(l *raft.Log) interface{} {
	return f.applyBatch([]*raft.Log{l})[0]
}

// applyOut is what applying a command produced besides its writes.
type applyOut struct {
	claimed []ClaimedPartition
	// epoch is the checkpoint epoch of a TypeCheckpoint or
	// TypeCheckpointDone command.
	epoch   uint64
	session *SessionOpened
	// The window parts' outcome: each add's status, the emissions the
	// entry wrote, and whether a TypeDefineWindows created its namespace.
	adds           []command.AddStatus
	emissions      []command.Emission
	windowsCreated bool
}

// applyCommand writes cmd into b, reading the state through r (which
// sees b's earlier writes whenever cmd needs them), or reports that it is
// rejected or a retry of one applied before; the caller then discards what
// it wrote into b. It returns the index the caller should see: index, or
// the first application's.
func applyCommand(b *pebble.Batch, r pebble.Reader, rc *recordCache, index uint64, cmd *command.Command) (uint64, bool, applyOut, error) {
	var chk *sessionCheck
	if c := cmd.Commit; cmd.Type == command.TypeCommit && c != nil {
		switch {
		case legacyRetry(cmd):
			first, ok, err := duplicateOf(r, cmd)
			if err != nil {
				return index, false, applyOut{}, err
			}
			if ok {
				return first, true, applyOut{}, nil
			}
		case c.SessionID != 0:
			s, first, dup, err := checkSession(rc, r, c, cmd.Now)
			if err != nil {
				return index, false, applyOut{}, err
			}
			if dup {
				return first, true, applyOut{}, nil
			}
			chk = &s
		case c.Seq != 0:
			return index, false, applyOut{}, reject("session_id", "a commit with a sequence needs a session; open one with OpenSession")
		}
	}
	out, err := writeCommand(b, r, rc, index, cmd, chk)
	return index, false, out, err
}

// legacyRetry reports whether cmd is a commit of format version 2 or
// older with a (client id, sequence): such commits, from a log written
// before client sessions, keep their per-commit retry records.
func legacyRetry(cmd *command.Command) bool {
	c := cmd.Commit
	return cmd.Version != 0 && cmd.Version < 3 && c.ClientID != "" && c.Seq != 0
}

// duplicateOf reports whether cmd, a commit of format version 2, has a
// (client id, sequence) that was applied within the dedup window, and at
// which index.
func duplicateOf(r pebble.Reader, cmd *command.Command) (uint64, bool, error) {
	c := cmd.Commit
	v, closer, err := r.Get(dedupKey(c.ClientID, c.Seq))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer closer.Close()
	exp, payload, err := decodeEntry(v)
	if err != nil || len(payload) != 8 {
		return 0, false, fmt.Errorf("%w: dedup record", ErrCorrupt)
	}
	if expired(exp, cmd.Now) {
		return 0, false, nil
	}
	return binary.BigEndian.Uint64(payload), true, nil
}

// writeCommand writes cmd into b; r is what it reads the state through.
func writeCommand(b *pebble.Batch, r pebble.Reader, rc *recordCache, index uint64, cmd *command.Command, chk *sessionCheck) (applyOut, error) {
	a := applier{b: b, r: r, now: cmd.Now, rec: rc}
	var err error
	var out applyOut
	switch cmd.Type {
	case command.TypeCommit:
		err = a.commit(cmd.Commit)
		switch {
		case err != nil:
		case chk != nil:
			err = a.recordSession(cmd.Commit, chk, index)
		case legacyRetry(cmd):
			err = a.remember(cmd.Commit, index)
		}
	case command.TypeOpenSession:
		out.session, err = a.openSession(cmd.Session, index)
	case command.TypeExpireSessions:
		err = a.expireSessions(cmd.Expired)
	case command.TypeExpire:
		err = a.expire(cmd.ExpireLimit)
	case command.TypeSetClusterID:
		err = a.setClusterID(cmd.ClusterID)
	case command.TypeSetMember:
		err = a.setMember(cmd.Member)
	case command.TypeRemoveMember:
		err = a.removeMember(cmd.Member)
	case command.TypeClaim:
		out.claimed, err = a.claim(cmd.Claim)
	case command.TypeRelease:
		err = a.release(cmd.Claim)
	case command.TypeCheckpoint:
		out.epoch, err = a.checkpointBarrier()
	case command.TypeCheckpointDone:
		out.epoch = cmd.Epoch
		err = a.checkpointDone(cmd.Epoch, cmd.Offsets)
	case command.TypeDefineWindows:
		out.windowsCreated, err = a.defineWindows(cmd.Windows)
	case command.TypeWindowTick:
		err = a.tickWindows()
	default:
		err = reject("type", "unknown command type %d", cmd.Type)
	}
	if err != nil {
		return applyOut{}, err
	}
	if a.win != nil {
		out.adds, out.emissions = a.win.adds, a.win.emitted
	}
	return out, nil
}

// readsOwnWrites reports whether applying cmd reads keys it may have
// written itself earlier in the same command.
func readsOwnWrites(cmd *command.Command) bool {
	switch cmd.Type {
	case command.TypeCommit:
	case command.TypeSetMember, command.TypeRemoveMember, command.TypeOpenSession:
		return false
	default:
		return true
	}
	c := cmd.Commit
	return c != nil && (len(c.Offsets) > 1 || hasWindowParts(c) || readingMutations(c))
}

// commitReadsState reports whether applying cmd, a TypeCommit command,
// reads state that another commit may have written: a counter or list it
// adds to, the keys a delete covers, an offset it must not move back and
// its partition's claim, window state, a legacy retry's record. Every
// commit in a session also reads its session and lane records; the
// record cache answers those, with the writes of the batch being built.
func commitReadsState(cmd *command.Command) bool {
	c := cmd.Commit
	return c != nil && (legacyRetry(cmd) || len(c.Offsets) > 0 || hasWindowParts(c) || readingMutations(c))
}

// readingMutations reports whether c has a mutation that reads state: a
// counter add or a list append, which reads the entry it rewrites, or a
// delete or prefix delete, which looks for the keys it deletes
// (applier.clearRange).
func readingMutations(c *command.Commit) bool {
	for i := range c.Mutations {
		switch c.Mutations[i].Op {
		case command.OpCounterAdd, command.OpListAppend, command.OpDelete, command.OpDeletePrefix:
			return true
		}
	}
	return false
}

// The directories beside the state directory dir that Restore uses: the
// new state is built in restoreDir (its tables first in restoreDir +
// tablesSuffix, StageSnapshot the same), and the replaced one is moved to
// replacedDir until it is deleted.
func restoreDir(dir string) string  { return dir + ".restore" }
func replacedDir(dir string) string { return dir + ".old" }

// RestoreLeftovers are the directories beside the state directory dir
// that a restore of a Raft snapshot (or a state staged for one) may leave
// after a crash; the next Open removes them (recoverInterruptedRestore).
func RestoreLeftovers(dir string) []string {
	return []string{replacedDir(dir), restoreDir(dir), restoreDir(dir) + tablesSuffix}
}

// recoverInterruptedRestore puts the state directory back in order after a
// crash during Restore: a complete old state is kept if the new one was not
// yet in place, and leftovers are removed.
func recoverInterruptedRestore(dir string) error {
	old := replacedDir(dir)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(old); err == nil {
			if err := os.Rename(old, dir); err != nil {
				return fmt.Errorf("fsm: recover state after interrupted restore: %w", err)
			}
		}
	}
	for _, p := range RestoreLeftovers(dir) {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("fsm: remove %s: %w", p, err)
		}
	}
	return syncDir(filepath.Dir(dir))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	defer d.Close()
	return d.Sync()
}

// pebbleLogger sends Pebble's log lines to slog.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...interface{}) {
	p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}
func (p pebbleLogger) Errorf(format string, args ...interface{}) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}
func (p pebbleLogger) Fatalf(format string, args ...interface{}) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "component", "pebble")
	panic(msg)
}

var _ raft.FSM = (*FSM)(nil)
var _ raft.BatchingFSM = batchingFSM{}
var _ io.Closer = (*FSM)(nil)

// DiskSize is the bytes the state's files take on disk (Pebble's tables,
// WAL and manifests); 0 once closed.
func (f *FSM) DiskSize() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return 0
	}
	return f.db.Metrics().DiskSpaceUsage()
}
