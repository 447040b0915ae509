package raftstore

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
)

// releasingFiler is raft-wal's own segment filer, except that a segment
// it wrote is read, once sealed, through a reader of its file instead of
// through its writer.
//
// raft-wal (v0.4.1) keeps a sealed segment's writer as the segment's
// reader for as long as the segment lives, and the writer keeps its
// append buffer, which grew to the largest batch Raft appended to it
// (up to MaxAppendEntries entries of up to --max-message-bytes each). The
// log holds every entry since the last Raft snapshot plus the trailing
// ones, so with large commits that memory grew with the log: 280 MB of
// the Go heap at 4 GB of state in the growth study (BENCHMARKS.md,
// "Cost as state grows"), then twice that in RSS under the Go GC's
// default target. A sealed segment's reader holds only its file.
//
// Segments opened sealed at start are readers already; the tail recovered
// at start is wrapped like a new segment.
//
// The segments it creates are zeroingFiles (walzero.go): zeroed ahead of
// the writer, so that an append overwrites written blocks; on a disk too
// full to preallocate one, plain unpreallocated files
// (unpreallocatedWhenFull).
//
// The files of segments the log drops are removed in the background
// (segmentDeleter), not under raft-wal's write lock.
type releasingFiler struct {
	*segment.Filer
	files   *trackingVFS
	deletes *segmentDeleter
}

func newReleasingFiler(dir string) *releasingFiler {
	return newReleasingFilerOn(dir, fs.New())
}

// newReleasingFilerOn is newReleasingFiler on the file system base.
func newReleasingFilerOn(dir string, base types.VFS) *releasingFiler {
	v := &trackingVFS{VFS: unpreallocatedWhenFull{zeroingVFS{base}}, open: map[string]types.WritableFile{}}
	f := segment.NewFiler(dir, v)
	return &releasingFiler{Filer: f, files: v, deletes: newSegmentDeleter(f.Delete)}
}

// Delete removes the segment's file in the background (segmentDeleter);
// raft-wal asks only once the log no longer names the segment and no
// reader uses it.
func (f *releasingFiler) Delete(baseIndex, ID uint64) error {
	f.deletes.add(baseIndex, ID)
	return nil
}

// wait returns once every file Delete was asked for is removed, or
// failed to be (the error is logged).
func (f *releasingFiler) wait() { f.deletes.wait() }

// segmentDeleter removes dropped segments' files one at a time, in a
// goroutine of its own.
//
// raft-wal (v0.4.1) removes a dropped segment's file under its write
// lock: Raft's log compaction after each snapshot drops every segment
// before the snapshot's index at once, and on this project's VM (ext4
// mounted with discard, which TRIMs the freed blocks) the unlink of a
// written 64 MiB segment took 14-20 ms, so every append waited for all
// of them (compactions of 74 ms on one node under 100-mutation commits,
// the longest append 93 ms; BENCHMARKS.md). Removing them later is
// safe: raft-wal has already committed the metadata without the segment
// and closed its reader, new segments never reuse a name (each has a new
// ID), and if the process dies first, raft-wal's Open removes every
// segment file its metadata does not name.
//
// The goroutine is started when a removal is queued and ends once the
// queue is empty, so an idle log holds none.
type segmentDeleter struct {
	remove func(baseIndex, ID uint64) error
	log    hclog.Logger // nil: errors are not logged

	mu      sync.Mutex
	idle    sync.Cond // on mu; broadcast when the goroutine ends
	queue   [][2]uint64
	running bool
}

func newSegmentDeleter(remove func(baseIndex, ID uint64) error) *segmentDeleter {
	d := &segmentDeleter{remove: remove}
	d.idle.L = &d.mu
	return d
}

func (d *segmentDeleter) add(baseIndex, ID uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.queue = append(d.queue, [2]uint64{baseIndex, ID})
	if !d.running {
		d.running = true
		go d.run()
	}
}

func (d *segmentDeleter) run() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for len(d.queue) > 0 {
		seg := d.queue[0]
		d.queue = d.queue[1:]
		d.mu.Unlock()
		err := d.remove(seg[0], seg[1])
		if err != nil && d.log != nil {
			// As raft-wal treats it: the log is whole without the
			// file, and Open removes it when the node starts again.
			d.log.Error("failed to delete old segment", "baseIndex", seg[0], "id", seg[1], "err", err)
		}
		d.mu.Lock()
	}
	d.queue = nil
	d.running = false
	d.idle.Broadcast()
}

func (d *segmentDeleter) wait() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.running {
		d.idle.Wait()
	}
}

// unpreallocatedWhenFull is raft-wal's file system, except that a segment
// the disk has no room to preallocate is created without preallocation.
//
// raft-wal (v0.4.1) creates the next segment once the metadata names it,
// in the background, and does not try again if that fails: the full
// segment stays the tail and every append fails ("segment is sealed")
// until a restart, even once the disk has room again. A segment created
// unpreallocated lets the roll finish: appends that do not fit then fail
// one by one (ENOSPC), and succeed again once there is room.
type unpreallocatedWhenFull struct {
	types.VFS
}

func (v unpreallocatedWhenFull) Create(dir, name string, size uint64) (types.WritableFile, error) {
	f, err := v.VFS.Create(dir, name, size)
	if err == nil || size == 0 || !errors.Is(err, syscall.ENOSPC) {
		return f, err
	}
	// raft-wal's Create leaves the file it created and could not
	// preallocate (empty, created by this call: it refuses an existing
	// name).
	if rerr := os.Remove(filepath.Join(dir, name)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		return nil, err
	}
	return v.VFS.Create(dir, name, 0)
}

// Create creates the segment as raft-wal does, wrapped.
func (f *releasingFiler) Create(info types.SegmentInfo) (types.SegmentWriter, error) {
	w, err := f.Filer.Create(info)
	file := f.files.take(segment.FileName(info))
	if err != nil {
		return nil, err
	}
	return newReleasingWriter(f.Filer, info, w, file), nil
}

// RecoverTail recovers the unsealed tail as raft-wal does, wrapped.
func (f *releasingFiler) RecoverTail(info types.SegmentInfo) (types.SegmentWriter, error) {
	w, err := f.Filer.RecoverTail(info)
	file := f.files.take(segment.FileName(info))
	if err != nil {
		return nil, err
	}
	return newReleasingWriter(f.Filer, info, w, file), nil
}

// trackingVFS is raft-wal's file system, remembering each file it opens
// for writing until the filer takes it: the filer closes it itself once
// the segment's writer is dropped.
type trackingVFS struct {
	types.VFS
	mu   sync.Mutex
	open map[string]types.WritableFile
}

func (v *trackingVFS) Create(dir, name string, size uint64) (types.WritableFile, error) {
	f, err := v.VFS.Create(dir, name, size)
	if err == nil {
		v.keep(name, f)
	}
	return f, err
}

func (v *trackingVFS) OpenWriter(dir, name string) (types.WritableFile, error) {
	f, err := v.VFS.OpenWriter(dir, name)
	if err == nil {
		v.keep(name, f)
	}
	return f, err
}

func (v *trackingVFS) keep(name string, f types.WritableFile) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.open[name] = f
}

// take returns the file opened for writing as name, and forgets it.
func (v *trackingVFS) take(name string) types.WritableFile {
	v.mu.Lock()
	defer v.mu.Unlock()
	f := v.open[name]
	delete(v.open, name)
	return f
}

// releasingWriter is a segment writer that, once its segment is sealed,
// reads through a reader of the sealed file and drops the writer (and so
// its append buffer and in-memory index).
//
// raft-wal calls Append, Sealed and ForceSeal one at a time (under its
// write lock), and GetLog and LastIndex at any time; Close once no reader
// uses the segment any more.
type releasingWriter struct {
	filer *segment.Filer
	info  types.SegmentInfo
	file  types.WritableFile // the writer's file; nil if the VFS did not hand it over

	w          atomic.Pointer[types.SegmentWriter] // nil once released
	read       atomic.Pointer[types.SegmentReader] // the writer, then the sealed reader
	last       atomic.Uint64                       // LastIndex once released
	indexStart uint64                              // set when sealed
}

func newReleasingWriter(filer *segment.Filer, info types.SegmentInfo, w types.SegmentWriter, file types.WritableFile) *releasingWriter {
	rw := &releasingWriter{filer: filer, info: info, file: file}
	var r types.SegmentReader = w
	rw.w.Store(&w)
	rw.read.Store(&r)
	return rw
}

func (rw *releasingWriter) writer() types.SegmentWriter {
	if p := rw.w.Load(); p != nil {
		return *p
	}
	return nil
}

func (rw *releasingWriter) Append(entries []types.LogEntry) error {
	w := rw.writer()
	if w == nil {
		return types.ErrSealed
	}
	return w.Append(entries)
}

func (rw *releasingWriter) Sealed() (bool, uint64, error) {
	if rw.indexStart != 0 {
		return true, rw.indexStart, nil
	}
	sealed, indexStart, err := rw.writer().Sealed()
	if err == nil && sealed {
		rw.indexStart = indexStart
		rw.release()
	}
	return sealed, indexStart, err
}

func (rw *releasingWriter) ForceSeal() (uint64, error) {
	if rw.indexStart != 0 {
		return rw.indexStart, nil
	}
	indexStart, err := rw.writer().ForceSeal()
	if err == nil {
		rw.indexStart = indexStart
		rw.release()
	}
	return indexStart, err
}

// release opens the sealed segment for reading and drops the writer. If
// the file cannot be opened, or its handle is unknown (so it could not be
// closed), the writer stays: nothing is lost but the memory.
func (rw *releasingWriter) release() {
	w := rw.writer()
	if rw.file == nil || w == nil {
		return
	}
	info := rw.info
	info.IndexStart = rw.indexStart
	info.MaxIndex = w.LastIndex()
	r, err := rw.filer.Open(info)
	if err != nil {
		return
	}
	rw.last.Store(info.MaxIndex)
	rw.read.Store(&r)
	rw.w.Store(nil)
}

func (rw *releasingWriter) LastIndex() uint64 {
	if w := rw.writer(); w != nil {
		return w.LastIndex()
	}
	return rw.last.Load()
}

func (rw *releasingWriter) GetLog(idx uint64) (*types.PooledBuffer, error) {
	return (*rw.read.Load()).GetLog(idx)
}

// Close closes the writer, or, once released, the sealed reader and the
// file the writer wrote.
func (rw *releasingWriter) Close() error {
	if w := rw.writer(); w != nil {
		return w.Close()
	}
	err := (*rw.read.Load()).Close()
	if cerr := rw.file.Close(); err == nil {
		err = cerr
	}
	return err
}
