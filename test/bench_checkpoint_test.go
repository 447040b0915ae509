package test

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/fsm"
	"github.com/statedhq/stated/uploader"
)

// The checkpoint benchmarks (issue 6) drive the state machine directly:
// fsm.Open with the daemon's Pebble options, and (*fsm.FSM).Apply of
// encoded Raft entries, one at a time as Raft's apply loop does. The state
// is built before the clock starts, from 1 KiB random values under
// distinct keys. Each sub-benchmark builds its own state, so run them once
// per count:
//
//	go test ./test -run '^$' -bench Checkpoint -benchtime 1x -count 5 -timeout 60m

const ckptValueSize = 1 << 10

var ckptStateSizes = []struct {
	name  string
	bytes int64
}{{"100MB", 100 << 20}, {"1GB", 1 << 30}}

// ckptState is a state machine with a state of keys values of 1 KiB and
// the Raft index of its last entry.
type ckptState struct {
	b     testing.TB
	root  string
	dir   string // Pebble's directory
	f     *fsm.FSM
	idx   uint64
	keys  int
	fill  *rand.ChaCha8 // value bytes: random, so they do not compress
	pick  *rand.Rand    // which keys change
	value []byte
	// made is how long the last barrier's local checkpoint took, from
	// the barrier's Apply until it was made (in the background).
	made time.Duration
}

// newCkptState builds a state of size bytes of values through the state
// machine, in commits of 1000 puts, and waits for Pebble's compactions to
// settle.
func newCkptState(b testing.TB, size int64) *ckptState {
	root := b.TempDir()
	s := &ckptState{
		b: b, root: root, dir: filepath.Join(root, "state"),
		keys: int(size / ckptValueSize),
		fill: rand.NewChaCha8([32]byte{1}), pick: rand.New(rand.NewPCG(1, 2)),
	}
	f, err := fsm.Open(s.dir, nil)
	if err != nil {
		b.Fatal(err)
	}
	s.f = f
	b.Cleanup(func() { f.Close() })
	start := time.Now()
	for first := 0; first < s.keys; first += 1000 {
		n := min(1000, s.keys-first)
		s.commit(n, func(i int) int { return first + i })
	}
	built := time.Since(start)
	// Keys written in order leave their tables in L0, side by side, where
	// the first write over the whole key space would pull all of them
	// into one compaction. Overwriting 1% of the keys at random and
	// letting compactions finish gives the shape a state has in use
	// (most tables in L6).
	s.overwrite(s.keys / 100)
	s.flush()
	waitQuiet(b, s.dir)
	b.Logf("state of %d keys (%d MB of values) built in %v, settled after %v; Pebble directory %d MB",
		s.keys, size>>20, built.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), dirBytes(b, s.dir)>>20)
	return s
}

func (s *ckptState) apply(c *command.Command) *fsm.Result {
	s.idx++
	r := s.f.Apply(&raft.Log{Index: s.idx, Term: 1, Type: raft.LogCommand, Data: command.Encode(nil, c)})
	res, ok := r.(*fsm.Result)
	if !ok || res.Err != nil {
		s.b.Fatalf("apply of entry %d (type %d): %+v", s.idx, c.Type, r)
	}
	return res
}

// commit applies one commit of n puts of fresh random values under the
// keys key(0..n-1).
func (s *ckptState) commit(n int, key func(i int) int) {
	if need := n * ckptValueSize; cap(s.value) < need {
		s.value = make([]byte, need)
	}
	s.value = s.value[:n*ckptValueSize]
	s.fill.Read(s.value)
	muts := make([]command.Mutation, n)
	for i := range muts {
		muts[i] = command.Mutation{
			Op: command.OpPut, Namespace: "bench",
			Key:   binary.BigEndian.AppendUint64([]byte("key/"), uint64(key(i))),
			Value: s.value[i*ckptValueSize : (i+1)*ckptValueSize],
		}
	}
	s.apply(&command.Command{Type: command.TypeCommit, Now: time.Now().UnixNano(), Commit: &command.Commit{Mutations: muts}})
}

// overwrite gives n keys picked at random over the whole key space new
// values, in commits of up to 1000 puts.
func (s *ckptState) overwrite(n int) {
	for n > 0 {
		m := min(n, 1000)
		s.commit(m, func(int) int { return s.pick.IntN(s.keys) })
		n -= m
	}
}

// flush is what the coordinator does before proposing a barrier.
func (s *ckptState) flush() time.Duration {
	start := time.Now()
	if err := s.f.Flush(); err != nil {
		s.b.Fatal(err)
	}
	return time.Since(start)
}

// barrier applies a TypeCheckpoint entry and returns its result and how
// long the apply loop spent in it.
func (s *ckptState) barrier() (*fsm.CheckpointResult, time.Duration) {
	start := time.Now()
	res := s.apply(&command.Command{Type: command.TypeCheckpoint, Now: time.Now().UnixNano()})
	d := time.Since(start)
	// The apply loop is free once Apply returns; the local checkpoint is
	// made in the background, and the coordinator waits for it.
	if res.Checkpoint == nil || res.Checkpoint.Wait() != nil {
		s.b.Fatalf("barrier: %+v", res.Checkpoint)
	}
	s.made = time.Since(start)
	return res.Checkpoint, d
}

// done applies the completion entry of epoch, which removes the local
// checkpoints up to it, and returns how long the apply loop spent in it.
func (s *ckptState) done(epoch uint64) time.Duration {
	start := time.Now()
	s.apply(&command.Command{Type: command.TypeCheckpointDone, Epoch: epoch, Now: time.Now().UnixNano()})
	return time.Since(start)
}

// waitQuiet waits until dir's files (names and sizes) stayed the same for
// 3 s: Pebble's background compactions are done.
func waitQuiet(b testing.TB, dir string) {
	listing := func() string {
		var sb strings.Builder
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil {
					fmt.Fprintf(&sb, "%s %d\n", p, fi.Size())
				}
			}
			return nil
		})
		return sb.String()
	}
	last, since := listing(), time.Now()
	for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); {
		time.Sleep(250 * time.Millisecond)
		if l := listing(); l != last {
			last, since = l, time.Now()
		} else if time.Since(since) >= 3*time.Second {
			return
		}
	}
	b.Logf("Pebble's directory %s still changing after 5 minutes", dir)
}

type ckptFiles struct {
	files, tables                        int
	bytes, tableBytes, walBytes, mfBytes int64
}

func checkpointFiles(b testing.TB, dir string) ckptFiles {
	var c ckptFiles
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		c.files++
		c.bytes += fi.Size()
		switch name := d.Name(); {
		case strings.HasSuffix(name, ".sst"):
			c.tables++
			c.tableBytes += fi.Size()
		case strings.HasSuffix(name, ".log"):
			c.walBytes += fi.Size()
		case strings.HasPrefix(name, "MANIFEST"):
			c.mfBytes += fi.Size()
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func dirBytes(b testing.TB, dir string) int64 { return checkpointFiles(b, dir).bytes }

// quantile is the quantile latencies.report takes: the element at
// p×(n−1) of the sorted values.
func quantile[T cmp.Ordered](v []T, p float64) T {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[int(p*float64(len(s)-1))]
}

func quantileµs(d []time.Duration, p float64) float64 { return float64(quantile(d, p).Microseconds()) }

func reportPause(b *testing.B, prefix string, d []time.Duration) {
	b.ReportMetric(quantileµs(d, 0.50), prefix+"p50-µs")
	b.ReportMetric(quantileµs(d, 0.99), prefix+"p99-µs")
	b.ReportMetric(quantileµs(d, 1), prefix+"max-µs")
}

// BenchmarkCheckpointBarrierPause measures how long the apply loop spends
// in a checkpoint barrier: the epoch's batch and the hand-off of the local
// Pebble checkpoint to a goroutine (barrier-*), and, apart, how long that
// checkpoint takes to be made (made-*: hard links of the tables, a copy
// of the flushed WAL and of the MANIFEST, fsyncs), which the coordinator
// waits for before it uploads. Between barriers 4 MB of writes go to
// random existing keys; before each barrier the memtable is flushed, as
// the coordinator does, and 100 KB more are written (what arrives while
// the barrier goes through Raft). Each barrier is followed by its
// completion entry, which removes the local checkpoint after its WAL copy
// was trimmed as the coordinator does (also timed: it runs in the apply
// loop too). The same is then done without the flush, to show what the
// flush buys.
func BenchmarkCheckpointBarrierPause(b *testing.B) {
	const barriers = 50
	for _, size := range ckptStateSizes {
		b.Run("state="+size.name, func(b *testing.B) {
			s := newCkptState(b, size.bytes)
			var pause, made, donePause, flushes, noFlush []time.Duration
			var walSizes, nfWAL []int64
			var last ckptFiles
			b.ResetTimer()
			for range b.N {
				for range barriers {
					s.overwrite(4000)
					flushes = append(flushes, s.flush())
					s.overwrite(100)
					cp, d := s.barrier()
					pause = append(pause, d)
					made = append(made, s.made)
					last = checkpointFiles(b, cp.Dir)
					walSizes = append(walSizes, last.walBytes)
					// The coordinator trims the WAL copy before it uploads,
					// and applies the completion entry after.
					if _, err := fsm.TrimCheckpointWAL(cp.Dir); err != nil {
						b.Fatal(err)
					}
					donePause = append(donePause, s.done(cp.Epoch))
				}
				for range barriers {
					s.overwrite(4100)
					cp, d := s.barrier()
					noFlush = append(noFlush, d)
					nfWAL = append(nfWAL, checkpointFiles(b, cp.Dir).walBytes)
					if _, err := fsm.TrimCheckpointWAL(cp.Dir); err != nil {
						b.Fatal(err)
					}
					s.done(cp.Epoch)
				}
			}
			b.StopTimer()
			reportPause(b, "barrier-", pause)
			reportPause(b, "made-", made)
			reportPause(b, "done-", donePause)
			reportPause(b, "noflush-barrier-", noFlush)
			b.ReportMetric(quantileµs(flushes, 0.5)/1000, "flush-p50-ms")
			b.ReportMetric(float64(last.files), "ckpt-files")
			b.ReportMetric(float64(last.tables), "ckpt-tables")
			b.ReportMetric(float64(quantile(walSizes, 0.5)), "ckpt-wal-p50-B")
			b.ReportMetric(float64(quantile(walSizes, 1)), "ckpt-wal-max-B")
			b.ReportMetric(float64(quantile(nfWAL, 0.5)), "noflush-ckpt-wal-p50-B")
			b.ReportMetric(float64(last.mfBytes), "ckpt-manifest-B")
			b.ReportMetric(float64(last.bytes), "ckpt-B")
		})
	}
}

// copyTree copies every regular file of src to dst through user space
// (read and write with a 1 MiB buffer, no copy_file_range), optionally
// fsyncing each file and the directory.
func copyTree(src, dst string, fsync bool) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		in, err := os.Open(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		out, err := os.Create(filepath.Join(dst, e.Name()))
		if err != nil {
			in.Close()
			return err
		}
		_, err = io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{in}, buf)
		in.Close()
		if err == nil && fsync {
			err = out.Sync()
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	if fsync {
		d, err := os.Open(dst)
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	}
	return nil
}

// timed runs fn after a sync(2), so that no writeback of earlier writes
// is charged to it, and returns its duration.
func timed(b *testing.B, what string, fn func() error) time.Duration {
	syscall.Sync()
	start := time.Now()
	if err := fn(); err != nil {
		b.Fatalf("%s: %v", what, err)
	}
	return time.Since(start)
}

// BenchmarkCheckpointUpload measures a checkpoint to a file:// bucket on
// the same disk, as the coordinator runs it (flush, barrier,
// fsm.TrimCheckpointWAL, ReadCheckpoint, Upload), next to copies of the
// same checkpoint directory: `cp -r` (which copies in the kernel with
// copy_file_range) alone and followed by sync(2), a read/write copy in
// Go, and that copy with an fsync of each file. The full upload goes to a
// fresh bucket; then 1% of the keys, picked at random over the key space,
// get new values and the next checkpoint is uploaded incrementally by the
// same uploader; then, after a checkpoint interval (10 s) without writes,
// which lets compactions run, one more.
func BenchmarkCheckpointUpload(b *testing.B) {
	ctx := context.Background()
	const mb = 1e6
	for _, size := range ckptStateSizes {
		b.Run("state="+size.name, func(b *testing.B) {
			s := newCkptState(b, size.bytes)
			type ckptRun struct {
				flush, barrier, trim, read, upload time.Duration
				// count is how long counting the state took, and sent
				// how long the upload took to send the files (until it
				// waited for the counts): the longer of the two is the
				// upload's critical path.
				count, sent time.Duration
				counted     fsm.CheckpointCount
				trimmed     int64
				st          uploader.UploadStats
				info        fsm.CheckpointInfo
				files       ckptFiles
			}
			var up *uploader.Uploader
			// checkpoint runs one epoch as the coordinator does, up to the
			// upload, counting the state with counter (from its base, if
			// it kept one) and keeping the checkpoint as its next base;
			// the completion entry is applied by the caller.
			checkpoint := func(counter *fsm.CheckpointCounter) (*fsm.CheckpointResult, ckptRun) {
				var r ckptRun
				r.flush = s.flush()
				var cp *fsm.CheckpointResult
				cp, r.barrier = s.barrier()
				start := time.Now()
				var err error
				if r.trimmed, err = fsm.TrimCheckpointWAL(cp.Dir); err != nil {
					b.Fatal(err)
				}
				r.trim = time.Since(start)
				start = time.Now()
				if r.info, err = fsm.ReadCheckpointMeta(cp.Dir); err != nil {
					b.Fatal(err)
				}
				r.read = time.Since(start)
				r.files = checkpointFiles(b, cp.Dir)
				meta := uploader.Meta{Epoch: cp.Epoch, RaftIndex: cp.Index, RaftTerm: cp.Term, CreatedAt: time.Now().UTC()}
				// As the coordinator does: the state is counted while the
				// files are sent (timed within the upload).
				r.upload = timed(b, "upload", func() error {
					type count struct {
						fsm.CheckpointCount
						took time.Duration
						err  error
					}
					counted := make(chan count, 1)
					start := time.Now()
					go func() {
						var c count
						c.CheckpointCount, c.err = counter.Count(ctx, cp.Dir)
						c.took = time.Since(start)
						if c.err == nil {
							c.err = counter.Keep(cp.Dir, cp.Epoch, c.CheckpointCount)
						}
						counted <- c
					}()
					var err error
					_, r.st, err = up.UploadFinishing(ctx, cp.Dir, meta, nil, func(m *uploader.Meta) error {
						r.sent = time.Since(start)
						c := <-counted
						r.count, r.counted = c.took, c.CheckpointCount
						m.Stats.Keys, m.Stats.Bytes = c.Keys, c.Bytes
						r.info.Keys, r.info.Bytes = c.Keys, c.Bytes
						return c.err
					})
					return err
				})
				return cp, r
			}
			total := func(r ckptRun) time.Duration { return r.flush + r.barrier + r.trim + r.read + r.upload }
			// cpR copies src with cp -r, then syncs: it returns both times.
			cpR := func(src, dst string) (cp, sync time.Duration) {
				cp = timed(b, "cp -r", func() error {
					out, err := exec.Command("cp", "-r", src, dst).CombinedOutput()
					if err != nil {
						return fmt.Errorf("%v: %s", err, out)
					}
					return nil
				})
				start := time.Now()
				syscall.Sync()
				return cp, time.Since(start)
			}

			sum := map[string]float64{}
			b.ResetTimer()
			for n := range b.N {
				work := filepath.Join(s.root, fmt.Sprintf("run%d", n))
				if err := os.MkdirAll(work, 0o755); err != nil {
					b.Fatal(err)
				}
				// The copies, of a checkpoint taken and trimmed as the
				// coordinator does.
				s.flush()
				cp0, _ := s.barrier()
				if _, err := fsm.TrimCheckpointWAL(cp0.Dir); err != nil {
					b.Fatal(err)
				}
				files := checkpointFiles(b, cp0.Dir)
				cp1, sync1 := cpR(cp0.Dir, filepath.Join(work, "cp1"))
				os.RemoveAll(filepath.Join(work, "cp1"))
				goCopy := timed(b, "copy", func() error { return copyTree(cp0.Dir, filepath.Join(work, "copy"), false) })
				os.RemoveAll(filepath.Join(work, "copy"))
				goCopySync := timed(b, "copy+fsync", func() error { return copyTree(cp0.Dir, filepath.Join(work, "copysync"), true) })
				os.RemoveAll(filepath.Join(work, "copysync"))
				s.done(cp0.Epoch)

				// The full checkpoint, to a fresh bucket.
				bucket, err := uploader.OpenBucket(ctx, (&url.URL{Scheme: "file", Path: filepath.Join(work, "bucket")}).String())
				if err != nil {
					b.Fatal(err)
				}
				if up, err = uploader.New(uploader.Config{Bucket: bucket}); err != nil {
					b.Fatal(err)
				}
				// This node's counter: none kept yet, so the full
				// checkpoint counts its state whole, and the next ones
				// count from the one before.
				counter := fsm.NewCheckpointCounter(filepath.Join(work, "count-base"))
				cpFull, full := checkpoint(counter)
				s.done(cpFull.Epoch)

				// cp -r again after the upload, so that cp's figure is the
				// mean of one run before and one after it. The uploaded
				// checkpoint went with its completion entry: copy a new
				// barrier's, which holds the same tables.
				s.flush()
				cpAgain, _ := s.barrier()
				if _, err := fsm.TrimCheckpointWAL(cpAgain.Dir); err != nil {
					b.Fatal(err)
				}
				cp2, sync2 := cpR(cpAgain.Dir, filepath.Join(work, "cp2"))
				os.RemoveAll(filepath.Join(work, "cp2"))
				s.done(cpAgain.Epoch)
				cpTime, cpSyncTime := (cp1+cp2)/2, (cp1+sync1+cp2+sync2)/2

				// 1% of the keys change; the next checkpoint is incremental.
				s.overwrite(s.keys / 100)
				cpIncr, incr := checkpoint(counter)
				s.done(cpIncr.Epoch)

				// A checkpoint interval later, with no writes in between.
				time.Sleep(10 * time.Second)
				cpNext, next := checkpoint(counter)
				s.done(cpNext.Epoch)

				// A new leader's first checkpoint, after another 1% changed:
				// a new Uploader, as a node that just took over has, on a
				// bucket of its own here, because a real new leader finds
				// no manifest naming its own tables' inodes (this node's
				// would seed the cache). Without hashing ahead of time it
				// reads every table; a follower that ran uploader.Prehash
				// over its state directory before the change reads what
				// changed. Both send every file: only the hashing differs.
				newLeader := func(prehash bool) ckptRun {
					nb, err := uploader.OpenBucket(ctx, (&url.URL{Scheme: "file", Path: filepath.Join(work, fmt.Sprintf("bucket-newleader-%v", prehash))}).String())
					if err != nil {
						b.Fatal(err)
					}
					defer nb.Close()
					if up, err = uploader.New(uploader.Config{Bucket: nb}); err != nil {
						b.Fatal(err)
					}
					if prehash {
						if _, err := up.Prehash(ctx, s.dir); err != nil {
							b.Fatal(err)
						}
					}
					s.overwrite(s.keys / 100)
					// A node that just took over kept no base.
					cp, r := checkpoint(fsm.NewCheckpointCounter(filepath.Join(work, fmt.Sprintf("count-base-newleader-%v", prehash))))
					s.done(cp.Epoch)
					return r
				}
				cold, warm := newLeader(false), newLeader(true)
				bucket.Close()
				os.RemoveAll(work)

				add := func(k string, v float64) { sum[k] += v }
				add("ckpt-files", float64(files.files))
				add("ckpt-MB", float64(files.bytes)/mb)
				add("state-MB", float64(full.info.Bytes)/mb)
				add("cp-s", cpTime.Seconds())
				add("cp-before-s", cp1.Seconds())
				add("cp-after-s", cp2.Seconds())
				add("cp+sync-s", cpSyncTime.Seconds())
				add("cp-MB/s", float64(files.bytes)/mb/cpTime.Seconds())
				add("gocopy-s", goCopy.Seconds())
				add("gocopy-fsync-s", goCopySync.Seconds())
				add("full-trim-s", full.trim.Seconds())
				add("full-read-s", full.read.Seconds())
				add("full-upload-s", full.upload.Seconds())
				add("full-count-s", full.count.Seconds())
				add("full-sent-s", full.sent.Seconds())
				add("incr-count-s", incr.count.Seconds())
				// 1 when a count was made from the checkpoint before.
				add("incr-count-from-base", boolFigure(incr.counted.Whole == ""))
				add("next-count-from-base", boolFigure(next.counted.Whole == ""))
				add("incr-count-read-MB", float64(incr.counted.TableBytesRead)/mb)
				add("incr-sent-s", incr.sent.Seconds())
				add("next-count-s", next.count.Seconds())
				add("next-sent-s", next.sent.Seconds())
				add("full-upload-MB/s", float64(full.st.BytesUploaded)/mb/full.upload.Seconds())
				add("full-uploaded-MB", float64(full.st.BytesUploaded)/mb)
				add("full-files", float64(full.st.FilesUploaded))
				add("full-ckpt-s", total(full).Seconds())
				add("full-upload/cp", full.upload.Seconds()/cpTime.Seconds())
				add("full-upload/cp+sync", full.upload.Seconds()/cpSyncTime.Seconds())
				add("full-ckpt/cp", total(full).Seconds()/cpTime.Seconds())
				add("full-ckpt/cp+sync", total(full).Seconds()/cpSyncTime.Seconds())
				add("full-upload/copy-fsync", full.upload.Seconds()/goCopySync.Seconds())
				add("incr-upload-s", incr.upload.Seconds())
				add("incr-read-s", incr.read.Seconds())
				add("incr-ckpt-s", total(incr).Seconds())
				add("incr-uploaded-MB", float64(incr.st.BytesUploaded)/mb)
				add("incr-files", float64(incr.st.FilesUploaded))
				add("incr-%", 100*float64(incr.st.BytesUploaded)/float64(incr.st.Bytes))
				add("incr-wal-MB", float64(incr.files.walBytes)/mb)
				add("incr-wal-trimmed-MB", float64(incr.trimmed)/mb)
				add("incr-manifest-MB", float64(incr.files.mfBytes)/mb)
				add("next-uploaded-MB", float64(next.st.BytesUploaded)/mb)
				add("next-files", float64(next.st.FilesUploaded))
				add("next-%", 100*float64(next.st.BytesUploaded)/float64(next.st.Bytes))
				add("next-wal-MB", float64(next.files.walBytes)/mb)
				add("next-ckpt-s", total(next).Seconds())
				add("newleader-cold-hashed-MB", float64(cold.st.BytesHashed)/mb)
				add("newleader-cold-upload-s", cold.upload.Seconds())
				add("newleader-prehashed-hashed-MB", float64(warm.st.BytesHashed)/mb)
				add("newleader-prehashed-upload-s", warm.upload.Seconds())
				add("incr-hashed-MB", float64(incr.st.BytesHashed)/mb)
				b.Logf("full %+v (flush %v barrier %v trim %v (%d B) read %v upload %v); incremental %+v (upload %v, WAL %d B after trimming %d B); next %+v; cp -r %v+%v sync / %v+%v sync, copy %v, copy+fsync %v",
					full.st, full.flush, full.barrier, full.trim, full.trimmed, full.read, full.upload, incr.st, incr.upload, incr.files.walBytes, incr.trimmed, next.st, cp1, sync1, cp2, sync2, goCopy, goCopySync)
			}
			b.StopTimer()
			for k, v := range sum {
				b.ReportMetric(v/float64(b.N), k)
			}
		})
	}
}

// BenchmarkCheckpointRawPebble is the barrier of
// BenchmarkCheckpointBarrierPause on Pebble alone, with the state
// machine's options, with WAL recycling on (Pebble's default, and the
// state machine's before it turned recycling off) and off (the state
// machine's options now): a batch, the removal of the previous
// checkpoint, Checkpoint with WithFlushedWAL, after a flush and 100 KB of
// writes. It tells what the barrier would cost if the checkpoint's WAL
// held only the writes since the flush.
func BenchmarkCheckpointRawPebble(b *testing.B) {
	const barriers = 50
	for _, size := range ckptStateSizes {
		for _, recycle := range []bool{true, false} {
			b.Run(fmt.Sprintf("state=%s/wal-recycling=%v", size.name, recycle), func(b *testing.B) {
				root := b.TempDir()
				opts := fsm.PebbleOptions()
				if recycle {
					opts.Cleaner = pebble.DeleteCleaner{}
				}
				db, err := pebble.Open(filepath.Join(root, "state"), opts)
				if err != nil {
					b.Fatal(err)
				}
				defer db.Close()
				fill, pick := rand.NewChaCha8([32]byte{1}), rand.New(rand.NewPCG(1, 2))
				keys := int(size.bytes / ckptValueSize)
				value := make([]byte, 1000*ckptValueSize)
				write := func(n int, key func(i int) int) {
					fill.Read(value[:n*ckptValueSize])
					batch := db.NewBatch()
					for i := range n {
						batch.Set(binary.BigEndian.AppendUint64([]byte("key/"), uint64(key(i))), value[i*ckptValueSize:(i+1)*ckptValueSize], nil)
					}
					if err := batch.Commit(pebble.NoSync); err != nil {
						b.Fatal(err)
					}
					batch.Close()
				}
				overwrite := func(n int) {
					for ; n > 0; n -= 1000 {
						write(min(n, 1000), func(int) int { return pick.IntN(keys) })
					}
				}
				for first := 0; first < keys; first += 1000 {
					write(min(1000, keys-first), func(i int) int { return first + i })
				}
				overwrite(keys / 100) // as newCkptState does
				if err := db.Flush(); err != nil {
					b.Fatal(err)
				}
				waitQuiet(b, filepath.Join(root, "state"))
				var pause, remove []time.Duration
				var wal []int64
				prev := ""
				b.ResetTimer()
				for range b.N {
					for i := range barriers {
						overwrite(4000)
						if err := db.Flush(); err != nil {
							b.Fatal(err)
						}
						overwrite(100)
						dir := filepath.Join(root, "checkpoints", fmt.Sprintf("%020d", i))
						start := time.Now()
						batch := db.NewBatch()
						batch.Set([]byte("epoch"), binary.BigEndian.AppendUint64(nil, uint64(i)), nil)
						if err := batch.Commit(pebble.NoSync); err != nil {
							b.Fatal(err)
						}
						batch.Close()
						if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
							b.Fatal(err)
						}
						if err := db.Checkpoint(dir, pebble.WithFlushedWAL()); err != nil {
							b.Fatal(err)
						}
						pause = append(pause, time.Since(start))
						wal = append(wal, checkpointFiles(b, dir).walBytes)
						if prev != "" {
							start = time.Now()
							os.RemoveAll(prev)
							remove = append(remove, time.Since(start))
						}
						prev = dir
					}
				}
				b.StopTimer()
				reportPause(b, "barrier-", pause)
				reportPause(b, "remove-", remove)
				b.ReportMetric(float64(quantile(wal, 0.5)), "ckpt-wal-p50-B")
				b.ReportMetric(float64(quantile(wal, 1)), "ckpt-wal-max-B")
			})
		}
	}
}

// boolFigure is 1 for true and 0 for false, for a benchmark's figures.
func boolFigure(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
