package fsm

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/statedhq/stated/raftstore/command"
)

// deltaStore drives a state machine with random commits and takes its
// local checkpoints, as the checkpoint coordinator does.
type deltaStore struct {
	t    *testing.T
	f    *FSM
	idx  uint64
	rng  *rand.Rand
	fill *rand.ChaCha8
}

func newDeltaStore(t *testing.T, seed uint64) *deltaStore {
	// Small memtables and tables: the state spreads over many tables
	// and levels, as a large one does, and compactions change some.
	f, err := Open(filepath.Join(t.TempDir(), "state"), nil, func(o *openOptions) {
		o.tune = func(po *pebble.Options) {
			po.MemTableSize = 256 << 10
			po.TargetFileSizes[0] = 32 << 10
			for i := 1; i < len(po.TargetFileSizes); i++ {
				po.TargetFileSizes[i] = 2 * po.TargetFileSizes[i-1]
			}
			po.LBaseMaxBytes = 256 << 10
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	f.SetCheckpointDir(filepath.Join(t.TempDir(), "cps"))
	return &deltaStore{t: t, f: f, rng: rand.New(rand.NewPCG(seed, seed+1)), fill: rand.NewChaCha8([32]byte{byte(seed)})}
}

func (s *deltaStore) step(cmd *command.Command) *Result {
	s.t.Helper()
	s.idx++
	res := apply(s.t, s.f, s.idx, cmd)
	if res.Err != nil {
		s.t.Fatal(res.Err)
	}
	return res
}

func deltaKey(i int) []byte { return binary.BigEndian.AppendUint32([]byte("k"), uint32(i)) }

// commit applies one commit of n random mutations over keys [0, keys):
// puts and overwrites, deletes, map and list entries, entries with a TTL,
// and now and then a prefix delete (a range deletion).
func (s *deltaStore) commit(now int64, n, keys int) {
	s.t.Helper()
	var muts []command.Mutation
	for range n {
		i := s.rng.IntN(keys)
		v := make([]byte, 1+s.rng.IntN(300))
		s.fill.Read(v)
		switch s.rng.IntN(10) {
		case 0:
			muts = append(muts, command.Mutation{Op: command.OpMapPut, Namespace: "m", Key: deltaKey(i % 50), SubKey: deltaKey(i), Value: v})
		case 1:
			muts = append(muts, command.Mutation{Op: command.OpMapDelete, Namespace: "m", Key: deltaKey(i % 50), SubKey: deltaKey(i)})
		case 2:
			muts = append(muts, command.Mutation{Op: command.OpListAppend, Namespace: "l", Key: deltaKey(i % 20), Value: v})
		case 3:
			muts = append(muts, command.Mutation{Op: command.OpDelete, Namespace: "p", Key: deltaKey(i)})
		case 4:
			muts = append(muts, command.Mutation{Op: command.OpPut, Namespace: "p", Key: deltaKey(i), Value: v, TTL: 5})
		default:
			muts = append(muts, command.Mutation{Op: command.OpPut, Namespace: "p", Key: deltaKey(i), Value: v})
		}
	}
	if s.rng.IntN(8) == 0 {
		muts = append(muts, command.Mutation{Op: command.OpDeletePrefix, Namespace: "p", Key: []byte{'k', 0, 0, byte(s.rng.IntN(keys >> 8))}})
	}
	s.step(commitCmd(now, muts, nil))
}

// checkpoint takes a local checkpoint and trims its WAL.
func (s *deltaStore) checkpoint(now int64) (uint64, string) {
	s.t.Helper()
	if err := s.f.Flush(); err != nil {
		s.t.Fatal(err)
	}
	// A write between the flush and the barrier: it is in the
	// checkpoint's WAL.
	s.commit(now, 3, 20000)
	res := s.step(&command.Command{Type: command.TypeCheckpoint, Now: now})
	if res.Checkpoint == nil || res.Checkpoint.Wait() != nil {
		s.t.Fatalf("checkpoint: %+v", res.Checkpoint)
	}
	if _, err := TrimCheckpointWAL(res.Checkpoint.Dir); err != nil {
		s.t.Fatal(err)
	}
	return res.Checkpoint.Epoch, res.Checkpoint.Dir
}

// TestCheckpointCounterCountsFromItsBaseWhatAWholeCountCounts: over 40
// checkpoints of a state machine under random commits (overwrites,
// deletes, prefix deletes, map and list entries, expiry), flushes and
// compactions of parts of the state or all of it, every count a
// CheckpointCounter makes, from its base or whole, equals a whole count
// of the same checkpoint and the live state machine's count. Many are
// made from the base (at least a third; 25-29 of 40 in 18 runs, 8-9 of
// 16 under the race detector), some with range deletions among the
// changes; a base that is damaged or of another store is counted whole
// or still exactly. Each checkpoint directory is removed once kept, as the
// coordinator's completion does.
func TestCheckpointCounterCountsFromItsBaseWhatAWholeCountCounts(t *testing.T) {
	s := newDeltaStore(t, 11)
	ctx := context.Background()
	c := NewCheckpointCounter(filepath.Join(t.TempDir(), "count-base"))
	for now := range int64(40) {
		s.commit(now, 500, 20000)
		if err := s.f.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	// Under the race detector (every Pebble call ~20× slower) fewer
	// rounds, with the same share counted from the base.
	rounds := 40
	if modelRace {
		rounds = 16
	}
	var fromBase, withRanges, whole int
	for round := range rounds {
		now := int64(100 + round)
		for range 1 + s.rng.IntN(2) {
			s.commit(now, 5+s.rng.IntN(40), 20000)
		}
		switch round % 7 {
		case 3:
			// A compaction of a part of the state's range.
			from := s.rng.IntN(18000)
			lo, hi := keyPrefix("p", deltaKey(from)), keyPrefix("p", deltaKey(from+2000))
			if err := s.f.db.Compact(ctx, lo, hi, true); err != nil {
				t.Fatal(err)
			}
		case 6:
			s.step(&command.Command{Type: command.TypeExpire, Now: now + 10, ExpireLimit: 10_000})
		}
		if round == rounds/2 {
			// All of it: nearly every table changes.
			if err := s.f.db.Compact(ctx, []byte{0}, []byte{0xff}, true); err != nil {
				t.Fatal(err)
			}
		}
		epoch, dir := s.checkpoint(now)
		got, err := c.Count(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		keys, size, err := CountCheckpoint(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		live, err := s.f.Counts()
		if err != nil {
			t.Fatal(err)
		}
		if got.Keys != keys || got.Bytes != size || keys != live.StateKeys || size != live.StateBytes {
			t.Fatalf("round %d: the counter counted %d keys, %d bytes (%+v); a whole count %d, %d; the live state %d, %d",
				round, got.Keys, got.Bytes, got, keys, size, live.StateKeys, live.StateBytes)
		}
		switch {
		case got.Whole != "":
			whole++
			t.Logf("round %d: counted whole: %s", round, got.Whole)
		case got.RangesCompared > 0:
			withRanges++
			fromBase++
		default:
			fromBase++
		}
		if err := c.Keep(dir, epoch, got); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("from the base %d times (%d with range deletions), whole %d times", fromBase, withRanges, whole)
	if fromBase < rounds/3 || withRanges == 0 || whole < 2 {
		t.Fatalf("counted from the base %d times (%d with range deletions) and whole %d times in %d rounds: want at least a third, 1 and 2 (the first count, and the full compaction's)", fromBase, withRanges, whole, rounds)
	}

	t.Run("damaged base", func(t *testing.T) {
		if err := os.WriteFile(filepath.Join(c.base, countBaseFile), []byte("{"), 0o644); err != nil {
			t.Fatal(err)
		}
		s.commit(500, 20, 4000)
		_, dir := s.checkpoint(500)
		got, err := c.Count(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		keys, size, _ := CountCheckpoint(ctx, dir)
		if got.Whole == "" || !strings.Contains(got.Whole, "counts") || got.Keys != keys || got.Bytes != size {
			t.Fatalf("with damaged counts in the base: %+v; want a whole count of %d keys, %d bytes", got, keys, size)
		}
	})
	t.Run("a base of another store", func(t *testing.T) {
		other := newDeltaStore(t, 12)
		for now := range int64(10) {
			other.commit(now, 100, 4000)
		}
		epoch, odir := other.checkpoint(10)
		n, err := c.Count(ctx, odir)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Keep(odir, epoch, n); err != nil {
			t.Fatal(err)
		}
		s.commit(600, 20, 4000)
		_, dir := s.checkpoint(600)
		got, err := c.Count(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		keys, size, _ := CountCheckpoint(ctx, dir)
		if got.Keys != keys || got.Bytes != size {
			t.Fatalf("from another store's base: %+v; want %d keys, %d bytes", got, keys, size)
		}
		if got.Whole == "" {
			t.Fatalf("from another store's base: counted from it (%+v); no table is shared, so the count should be whole", got)
		}
	})
	t.Run("dropped", func(t *testing.T) {
		if err := c.Drop(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(c.base); !os.IsNotExist(err) {
			t.Fatalf("the base is still there after Drop: %v", err)
		}
		_, dir := s.checkpoint(700)
		if got, err := c.Count(ctx, dir); err != nil || got.Whole != "no base kept" {
			t.Fatalf("after Drop: %+v, %v; want a whole count with no base kept", got, err)
		}
	})
	t.Run("stops with its context", func(t *testing.T) {
		_, dir := s.checkpoint(800)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := c.Count(cctx, dir); err != context.Canceled {
			t.Fatalf("a count with its context ended returned %v, want context.Canceled", err)
		}
	})
}

// TestACopyOfACheckpointCountsAfterTheCheckpointIsRemoved: the
// coordinator counts a checkpoint from the counter's hard-linked copy of
// it while the next barrier removes the checkpoint's own directory, as
// it removes the last local checkpoint. The copy counts exactly what the
// checkpoint held, is kept as the next count's base, and is removed by
// RemoveCopy and by Drop; a second Copy replaces the first.
func TestACopyOfACheckpointCountsAfterTheCheckpointIsRemoved(t *testing.T) {
	s := newDeltaStore(t, 5)
	ctx := context.Background()
	c := NewCheckpointCounter(filepath.Join(t.TempDir(), "count-base"))
	for now := range int64(8) {
		s.commit(now, 300, 5000)
	}
	epoch, dir := s.checkpoint(10)
	live, err := s.f.Counts()
	if err != nil {
		t.Fatal(err)
	}
	cp, err := c.Copy(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	// The state moves on, as it does while a count runs.
	s.commit(11, 300, 5000)
	got, err := c.Count(ctx, cp)
	if err != nil {
		t.Fatal(err)
	}
	if got.Keys != live.StateKeys || got.Bytes != live.StateBytes || got.Whole != "no base kept" {
		t.Fatalf("the copy counted %+v; the state at the checkpoint held %d keys, %d bytes (want them, counted whole with no base kept)", got, live.StateKeys, live.StateBytes)
	}
	if err := c.Keep(cp, epoch, got); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveCopy(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cp); !os.IsNotExist(err) {
		t.Fatalf("the copy after RemoveCopy: %v; want it removed", err)
	}

	// The next checkpoint, copied twice: the second copy replaces the
	// first, and counts from the base the first copy became.
	epoch2, dir2 := s.checkpoint(12)
	live, err = s.f.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Copy(dir2); err != nil {
		t.Fatal(err)
	}
	if cp, err = c.Copy(dir2); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir2); err != nil {
		t.Fatal(err)
	}
	got, err = c.Count(ctx, cp)
	if err != nil {
		t.Fatal(err)
	}
	if got.Keys != live.StateKeys || got.Bytes != live.StateBytes || !(got.Whole == "" && got.BaseEpoch == epoch || strings.Contains(got.Whole, "since the base")) {
		t.Fatalf("checkpoint %d's copy counted %+v; want %d keys, %d bytes, from the base of epoch %d or whole after comparing with it", epoch2, got, live.StateKeys, live.StateBytes, epoch)
	}
	if err := c.Drop(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{cp, c.base} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Fatalf("%s after Drop: %v; want it removed", d, err)
		}
	}
}
