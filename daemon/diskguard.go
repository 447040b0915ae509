package daemon

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/statedhq/stated/daemon/grpcapi"
)

// DefaultMinFreeDiskBytes is DefaultConfig's MinFreeDiskBytes: room for
// the flush of a full memtable (64 MiB) and a new segment of raft-wal's
// log (64 MiB, written in full when it is created) after the last commit
// let in.
const DefaultMinFreeDiskBytes = 128 << 20

// diskGuardEvery is how long the guard trusts what it last read of the
// disk's free space: at most one statfs per interval, whatever the rate
// of commits; writes between two reads may take the disk below the
// minimum by what they wrote meanwhile.
const diskGuardEvery = 100 * time.Millisecond

// diskGuard refuses commits on the leader while the data dir's disk has
// less than min bytes free: past that, Pebble's flushes and WAL rotation
// fail, and a WAL it cannot finish crashes the process (docs/OPERATIONS.md,
// A full data disk). Refusing before proposing keeps the disk from filling
// through stated's own writes; what else fills it is the operator's.
type diskGuard struct {
	dir    string
	min    int64
	nodeID string
	statfs func(dir string) (free int64, err error)

	logger *slog.Logger

	mu      sync.Mutex
	at      time.Time // when free was read; zero: never
	free    int64
	err     error
	low     bool // the last check refused
	refused atomic.Uint64
}

func newDiskGuard(dir, nodeID string, min int64, logger *slog.Logger) *diskGuard {
	return &diskGuard{dir: dir, min: min, nodeID: nodeID, statfs: freeBytes, logger: logger}
}

// freeBytes is what an unprivileged process may still write on dir's
// file system.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// Free returns the data dir's disk's free bytes as last read (at most
// diskGuardEvery old), and the error of that read.
func (g *diskGuard) Free() (int64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.freeLocked()
}

func (g *diskGuard) freeLocked() (int64, error) {
	if now := time.Now(); g.at.IsZero() || now.Sub(g.at) >= diskGuardEvery {
		g.free, g.err = g.statfs(g.dir)
		g.at = now
	}
	return g.free, g.err
}

// check returns a *grpcapi.DiskFullError when the disk has less than the minimum
// free. A disk whose free space cannot be read is not refused for it: the
// writes themselves fail if it is full.
func (g *diskGuard) check() error {
	if g == nil || g.min <= 0 {
		return nil
	}
	g.mu.Lock()
	free, err := g.freeLocked()
	if err != nil {
		// Not known: let it through (the writes fail if the disk is full)
		// and leave what was logged as it is.
		g.mu.Unlock()
		return nil
	}
	low, was := free < g.min, g.low
	g.low = low
	g.mu.Unlock()
	switch {
	case low && !was:
		g.logger.Warn("daemon: the data dir's disk is nearly full: refusing commits until there is room (free space or grow the volume)",
			"free_bytes", free, "min_free_disk", g.min, "dir", g.dir)
	case !low && was:
		g.logger.Info("daemon: the data dir's disk has room again: commits resume", "free_bytes", free, "min_free_disk", g.min)
	}
	if !low {
		return nil
	}
	g.refused.Add(1)
	return &grpcapi.DiskFullError{NodeID: g.nodeID, Dir: g.dir, Free: free, Min: g.min}
}

// Refused counts the commit calls the guard refused.
func (g *diskGuard) Refused() uint64 { return g.refused.Load() }
