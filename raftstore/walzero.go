package raftstore

import (
	"os"
	"sync"

	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/types"
)

// A new raft-wal segment is preallocated with fallocate(2), which on ext4
// and XFS leaves its blocks allocated but unwritten: the first write into
// a block turns its extent into a written one, which is metadata, so the
// sync of an append that reaches a new block also commits the
// filesystem's journal. Small single commits share a block and rarely pay
// for it; a batch of commits (the SDK's coalesced calls, a Kafka poll's
// commit, a follower's append of several entries) reaches new blocks every
// time. On this project's VM a 5 KB append to raft-wal took p50 245-290 µs
// into fallocated space and 150-190 µs into space already written with
// zeros (BENCHMARKS.md, "The Raft log's appends overwrite zeros").
// PostgreSQL fills new WAL files with zeros for the same reason
// (wal_init_zero), InnoDB its redo log.
//
// So the segments this node creates are zeroed ahead of the writer, in
// the background: a goroutine writes zeros past the furthest write, a
// zeroChunk at a time up to zeroLead bytes ahead of it, and syncs each
// chunk, so that the extent changes are committed before the writer gets
// there and its own sync writes its data alone.
//
// Zeros are what the unwritten blocks read as already, so neither the
// file's contents nor what a crash can leave of them change: raft-wal
// reads a zero frame header as the end of the segment either way. The
// zeroer only writes where the writer has not: it reserves a range past
// the furthest write the writer announced, and a write into a reserved
// range waits for the zeroer to finish it.
//
// The zeroer writes and syncs through a file description of its own. Linux
// reports a writeback error to one fsync of each open file description
// (errseq_t): an fdatasync of the zeroer's through the writer's
// description, which writes out the whole file's dirty pages, appends not
// yet synced included, would take an error meant for the writer, whose
// own sync would then succeed, and raft-wal would acknowledge an append
// the disk never got. Through its own, the writer's sync reports it too.
//
// Only zeroLead bytes ahead are zeroed, not the whole 64 MiB segment, so
// that a node that writes little (most of the test suite's nodes) writes
// little more.
//
// Zeroing pays while appends are small: it saves each append that reaches
// new blocks one journal commit (about 100 µs here), and costs a write and
// a sync per chunk, which take the disk from the appends' syncs for 2-3
// ms. At 5 KB an append, a chunk spares 200 commits; at 130 KB (a
// 1000-put commit) 8, and zeroing made those commits slower (0.91× with
// a worse p99, BENCHMARKS.md). So the zeroer works only while the
// writer's appends average at most zeroMaxAppend bytes.
const (
	zeroChunk     = 1 << 20
	zeroLead      = 4 << 20
	zeroMaxAppend = 32 << 10
)

// zeroingVFS is raft-wal's file system, except that the files Create
// makes are zeroingFiles.
type zeroingVFS struct {
	types.VFS
}

func (v zeroingVFS) Create(dir, name string, size uint64) (types.WritableFile, error) {
	f, err := v.VFS.Create(dir, name, size)
	if err != nil {
		return nil, err
	}
	inner, ok := f.(*fs.File)
	if !ok || size == 0 {
		return f, nil
	}
	return newZeroingFile(inner, int64(size)), nil
}

// zeroingFile is a new segment file zeroed ahead of its writer.
//
// Its first Sync is raft-wal's: fsync(2) of the file, then of its
// directory, which makes the new file's name durable. Later ones sync its
// data only (fdatasync(2) where there is one), and with it what a read of
// the data needs: the file's size was set when it was created, except
// that the append that seals the segment ends past it, and fdatasync
// writes a size change out too. etcd's WAL and Pebble's are synced the
// same way.
//
// The zeroer is a goroutine started when there is a chunk to zero and
// gone once it has caught up, so a sealed segment, which raft-wal keeps
// open until the log drops it, holds no goroutine and no buffer.
type zeroingFile struct {
	inner *fs.File
	size  int64
	// zf is the zeroer's own description of the file (see above), nil
	// once closed: when the zeroer has zeroed the whole file, or by Close.
	zf *os.File

	mu   sync.Mutex
	cond *sync.Cond // broadcast when a reservation or the zeroer ends
	// written is the end of the furthest write announced: nothing below
	// it is ever zeroed.
	written int64
	// zeroed is where the zeroer's last chunk ended.
	zeroed int64
	// reserved is the start of the range the zeroer is writing, up to
	// zeroed; -1 when it writes none.
	reserved int64
	// avgAppend is the mean size of the writer's writes (an exponential
	// moving average over about the last 8).
	avgAppend int64
	running   bool // the zeroer is at work
	stopped   bool // closed, or the zeroer failed: no more zeroing
	synced    bool // the first Sync, raft-wal's, is done
}

// zeros is what the zeroers write, shared: nothing writes into it.
var zeros = make([]byte, zeroChunk)

func newZeroingFile(inner *fs.File, size int64) *zeroingFile {
	z := &zeroingFile{inner: inner, size: size, reserved: -1}
	z.cond = sync.NewCond(&z.mu)
	zf, err := os.OpenFile(inner.Name(), os.O_WRONLY, 0)
	if err != nil {
		// No zeroing: the writer writes into unwritten blocks, as it does in
		// raft-wal's own files.
		z.stopped = true
	}
	z.zf = zf
	z.mu.Lock()
	z.startLocked()
	z.mu.Unlock()
	return z
}

// startLocked starts the zeroer if it is not at work, the writer's
// appends are small, and there is a whole chunk to zero, or what is left
// up to the file's end.
func (z *zeroingFile) startLocked() {
	target := min(z.written+zeroLead, z.size)
	if z.running || z.stopped || z.avgAppend > zeroMaxAppend || z.zeroed >= target || (target-z.zeroed < zeroChunk && target < z.size) {
		return
	}
	z.running = true
	go z.zeroAhead()
}

// WriteAt announces the write, waiting while the zeroer writes into the
// range it covers, then writes.
func (z *zeroingFile) WriteAt(p []byte, off int64) (int, error) {
	end := off + int64(len(p))
	z.mu.Lock()
	for z.reserved >= 0 && off < z.zeroed && end > z.reserved {
		z.cond.Wait()
	}
	z.written = max(z.written, end)
	z.avgAppend += (int64(len(p)) - z.avgAppend) / 8
	z.startLocked()
	z.mu.Unlock()
	return z.inner.WriteAt(p, off)
}

func (z *zeroingFile) ReadAt(p []byte, off int64) (int, error) { return z.inner.ReadAt(p, off) }

// Sync is called by the segment's writer alone (under raft-wal's write
// lock).
func (z *zeroingFile) Sync() error {
	if !z.synced {
		if err := z.inner.Sync(); err != nil {
			return err
		}
		z.synced = true
		return nil
	}
	return syncData(&z.inner.File)
}

// Close stops the zeroer, waits for it, and closes the file.
func (z *zeroingFile) Close() error {
	z.mu.Lock()
	z.stopped = true
	for z.running {
		z.cond.Wait()
	}
	z.closeZeroerLocked()
	z.mu.Unlock()
	return z.inner.Close()
}

// closeZeroerLocked closes the zeroer's description of the file. An
// error closing it is the zeroer's only: nothing the writer wrote was
// written through it.
func (z *zeroingFile) closeZeroerLocked() {
	if z.zf != nil {
		z.zf.Close()
		z.zf = nil
	}
}

// zeroAhead is the zeroer: it zeroes up to zeroLead bytes past the
// furthest write, a chunk at a time, syncing each chunk. It returns once
// it has caught up, when the appends grow large, when the file is closed,
// or at its first error; the writer then writes into unwritten blocks, as
// it does in raft-wal's own files.
func (z *zeroingFile) zeroAhead() {
	z.mu.Lock()
	defer func() {
		z.running = false
		if z.zeroed >= z.size || z.stopped {
			z.closeZeroerLocked() // nothing left to zero, or no more zeroing
		}
		z.cond.Broadcast()
		z.mu.Unlock()
	}()
	for !z.stopped && z.avgAppend <= zeroMaxAppend {
		start := max(z.zeroed, z.written)
		end := min(z.written+zeroLead, z.size, start+zeroChunk)
		if end <= start {
			return
		}
		z.reserved, z.zeroed = start, end
		zf := z.zf // not closed while the zeroer runs
		z.mu.Unlock()
		testHookZeroerReserved(start, end)
		_, err := zf.WriteAt(zeros[:end-start], start)
		z.mu.Lock()
		z.reserved = -1
		z.cond.Broadcast()
		if err == nil {
			z.mu.Unlock()
			err = syncData(zf)
			z.mu.Lock()
		}
		if err != nil {
			z.stopped = true
		}
	}
}

// testHookZeroerReserved is called by the zeroer between reserving a
// range and writing it.
var testHookZeroerReserved = func(start, end int64) {}

var _ types.WritableFile = (*zeroingFile)(nil)
