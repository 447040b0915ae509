package raftstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// The Raft log stores a Store can keep its log and stable store in
// (Config.LogStore).
const (
	// LogStoreBoltDB is raft-boltdb/v2: one bbolt file, raft/raft.db.
	// bbolt syncs twice per append (its pages, then its meta page).
	LogStoreBoltDB = "boltdb"
	// LogStoreWAL is hashicorp/raft-wal: append-only segment files and
	// a small bbolt file of metadata, in raft/wal/. An append is one
	// write and one fsync of the tail segment.
	LogStoreWAL = "wal"
)

// DefaultLogStore is the log store of a new data dir when Config.LogStore
// is empty. An existing data dir keeps the store it was created with, so
// a data dir created when boltdb was the default stays on boltdb. wal
// appends with one write and one fsync against bbolt's two, and a single
// commit costs about half as long (BENCHMARKS.md). Its restart failure
// after a tail truncation (raft-wal v0.4.0's issue 31) is fixed in
// v0.4.1, and CI runs the crash and chaos tests on both stores.
const DefaultLogStore = LogStoreWAL

// Where each log store lives in the raft dir.
const (
	boltFileName = "raft.db"
	walDirName   = "wal"
)

// ValidLogStore reports whether kind names a log store Config.LogStore
// accepts: "" (the data dir's own, or DefaultLogStore for a new one),
// LogStoreWAL or LogStoreBoltDB.
func ValidLogStore(kind string) bool {
	return kind == "" || kind == LogStoreWAL || kind == LogStoreBoltDB
}

// logStore is what a Store needs of its Raft log: the log, the stable
// store (term and vote) and a Close. Both kinds keep both in one place.
type logStore interface {
	raft.LogStore
	raft.StableStore
	Close() error
}

// logStorePath is where a log store of kind lives, relative to the data
// dir, for messages.
func logStorePath(kind string) string {
	if kind == LogStoreWAL {
		return filepath.Join(raftDirName, walDirName) + string(filepath.Separator)
	}
	return filepath.Join(raftDirName, boltFileName)
}

// detectLogStore returns the kind of log store raftDir holds, or "" when
// it holds none (a new data dir, or one a restore emptied).
func detectLogStore(raftDir string) (string, error) {
	var found []string
	for _, kind := range []string{LogStoreBoltDB, LogStoreWAL} {
		p := filepath.Join(raftDir, boltFileName)
		if kind == LogStoreWAL {
			p = filepath.Join(raftDir, walDirName)
		}
		_, err := os.Lstat(p)
		switch {
		case err == nil:
			found = append(found, kind)
		case !errors.Is(err, fs.ErrNotExist):
			return "", fmt.Errorf("raftstore: look for the Raft log: %w", err)
		}
	}
	switch len(found) {
	case 0:
		return "", nil
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("%w: %s holds both a boltdb log (%s) and a wal log (%s); "+
		"this version never creates both, so one was copied in by hand: move the one that is not this node's log away, "+
		"or move the node to a new data dir and let it rejoin (--join) or restore it (stated restore)",
		ErrLogStoreMismatch, raftDir, boltFileName, walDirName+string(filepath.Separator))
}

// resolveLogStore decides which log store to open in raftDir: the one
// the dir holds, which want must not contradict, or want (DefaultLogStore
// when empty) for a dir that holds none. Opening the other store would
// start an empty log beside the real one: every acknowledged commit
// would be lost, or the cluster forked. It changes nothing on disk.
func resolveLogStore(raftDir, want string) (string, error) {
	found, err := detectLogStore(raftDir)
	switch {
	case err != nil:
		return "", err
	case found == "" && want == "":
		return DefaultLogStore, nil
	case found == "":
		return want, nil
	case want == "" || want == found:
		return found, nil
	}
	return "", fmt.Errorf("%w: this data dir's Raft log is %s (%s); --raft-log-store %s cannot open it: "+
		"start with --raft-log-store %s, or without the flag (the data dir's store is used), "+
		"or move the node to a new data dir and let it rejoin (--join) or restore it (stated restore)",
		ErrLogStoreMismatch, found, logStorePath(found), want, found)
}

// openLogStore opens (creating if need be) the log store of kind in
// raftDir.
func openLogStore(raftDir, kind string, hlog hclog.Logger) (logStore, error) {
	if kind == LogStoreWAL {
		return openWAL(filepath.Join(raftDir, walDirName), hlog)
	}
	s, err := raftboltdb.NewBoltStore(filepath.Join(raftDir, boltFileName))
	if err != nil {
		return nil, fmt.Errorf("raftstore: open raft log %s: %w", boltFileName, err)
	}
	// bbolt syncs the file it creates, not the directory naming it: a
	// power loss could otherwise lose the whole log with what it
	// acknowledged. Once, at open.
	if err := syncDir(raftDir); err != nil {
		s.Close()
		return nil, fmt.Errorf("raftstore: open raft log %s: %w", boltFileName, err)
	}
	return s, nil
}

// walStore is raft-wal with GetLog limited to the log's range (below).
type walStore struct {
	*wal.WAL
	filer *releasingFiler
}

func openWAL(dir string, hlog hclog.Logger) (*walStore, error) {
	// raft-wal wants its own directory: it deletes segment files it does
	// not know.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("raftstore: open raft log: %w", err)
	}
	// raft-wal syncs the directory of the files it creates, not the
	// entry of that directory in its parent: without this, a power loss
	// could lose the whole log with what it acknowledged.
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return nil, fmt.Errorf("raftstore: open raft log: %w", err)
	}
	// The metadata store (wal-meta.db, a bbolt file) is ours to close when
	// wal.Open fails: raft-wal (v0.4.1 still) returns Open's errors after
	// loading it without closing it, and the file's lock would make the
	// next open in this process (a retry, recovery.Bootstrap then
	// daemon.Start) wait forever. Once Open succeeds, WAL.Close closes it
	// (since v0.4.1).
	meta := &metadb.BoltMetaDB{}
	if err := finishInterruptedRoll(dir, meta); err != nil {
		meta.Close()
		return nil, fmt.Errorf("raftstore: open raft log %s: %w", logStorePath(LogStoreWAL), err)
	}
	filer := newReleasingFiler(dir)
	filer.deletes.log = hlog.Named("wal")
	w, err := wal.Open(dir, wal.WithMetaStore(meta), wal.WithSegmentFiler(filer), wal.WithLogger(hlog.Named("wal")))
	if err != nil {
		filer.wait()
		meta.Close()
		return nil, fmt.Errorf("raftstore: open raft log %s: %w", logStorePath(LogStoreWAL), err)
	}
	return &walStore{WAL: w, filer: filer}, nil
}

// Close closes the log, then waits for the removal of the segments it
// dropped (segmentDeleter), so that nothing of it outlives the call.
func (s *walStore) Close() error {
	err := s.WAL.Close()
	s.filer.wait()
	return err
}

// GetLog hides the entries outside [FirstIndex, LastIndex]. raft-wal
// (v0.4.0 and v0.4.1) still reads an entry that a head truncation (Raft's log
// compaction after a snapshot) removed, for as long as the segment file
// holding it lives, which is until the segment is full. Raft relies on
// ErrLogNotFound to send a follower that lags past the compaction a
// snapshot: without this, a node joining a restored cluster would be
// sent the new log from index 1 instead of the snapshot of the restored
// state, and apply the entries since the restore to an empty state.
func (s *walStore) GetLog(index uint64, l *raft.Log) error {
	first, err := s.WAL.FirstIndex()
	if err != nil {
		return err
	}
	last, err := s.WAL.LastIndex()
	if err != nil {
		return err
	}
	if first == 0 || index < first || index > last {
		return raft.ErrLogNotFound
	}
	return s.WAL.GetLog(index, l)
}

var (
	_ logStore               = (*walStore)(nil)
	_ raft.MonotonicLogStore = (*walStore)(nil)
	_ logStore               = (*raftboltdb.BoltStore)(nil)
)

// LogStore is the kind of Raft log store this node opened: LogStoreWAL
// or LogStoreBoltDB.
func (s *Store) LogStore() string { return s.logKind }
