package fsm

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/statedhq/stated/raftstore/command"
)

// TestCountCheckpointSplitCountsWhatAPlainScanCounts: a state spread
// over many tables (a flush after every commit), with overwrites, map
// and list entries, point deletes, key and prefix deletes crossing table
// boundaries and expired entries, is counted the same in one range and
// split at table boundaries into 2, 3 and 8, and the same as the live
// state machine counts it.
func TestCountCheckpointSplitCountsWhatAPlainScanCounts(t *testing.T) {
	f := openFSM(t)
	f.SetCheckpointDir(filepath.Join(t.TempDir(), "cps"))
	rng, fill := rand.New(rand.NewPCG(7, 8)), rand.NewChaCha8([32]byte{7})
	idx := uint64(0)
	step := func(cmd *command.Command) {
		t.Helper()
		idx++
		if res := apply(t, f, idx, cmd); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	key := func(i int) []byte { return binary.BigEndian.AppendUint32([]byte("k"), uint32(i)) }
	for c := range 60 {
		var muts []command.Mutation
		for range 200 {
			i := rng.IntN(5000)
			v := make([]byte, 1+rng.IntN(2000))
			fill.Read(v)
			switch rng.IntN(8) {
			case 0:
				muts = append(muts, command.Mutation{Op: command.OpMapPut, Namespace: "m", Key: key(i % 50), SubKey: key(i), Value: v})
			case 1:
				muts = append(muts, command.Mutation{Op: command.OpMapDelete, Namespace: "m", Key: key(i % 50), SubKey: key(i)})
			case 2:
				muts = append(muts, command.Mutation{Op: command.OpListAppend, Namespace: "l", Key: key(i % 20), Value: v})
			case 3:
				muts = append(muts, command.Mutation{Op: command.OpDelete, Namespace: "p", Key: key(i)})
			case 4:
				muts = append(muts, command.Mutation{Op: command.OpPut, Namespace: "p", Key: key(i), Value: v, TTL: 10})
			default:
				muts = append(muts, command.Mutation{Op: command.OpPut, Namespace: "p", Key: key(i), Value: v})
			}
		}
		if c%10 == 9 {
			// A prefix delete over a tenth of the keys, across tables.
			muts = append(muts, command.Mutation{Op: command.OpDeletePrefix, Namespace: "p", Key: []byte{'k', 0, 0, byte(rng.IntN(20))}})
		}
		step(commitCmd(int64(c), muts, nil))
		if c%20 == 19 {
			step(&command.Command{Type: command.TypeExpire, Now: int64(c), ExpireLimit: 10_000})
		}
		if err := f.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	step(commitCmd(100, []command.Mutation{{Op: command.OpPut, Namespace: "p", Key: []byte("after the flush"), Value: []byte("in the WAL")}}, nil))
	idx++
	res := apply(t, f, idx, &command.Command{Type: command.TypeCheckpoint, Now: 100})
	if res.Checkpoint == nil || res.Checkpoint.Wait() != nil {
		t.Fatalf("checkpoint: %+v", res.Checkpoint)
	}
	live, err := f.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if live.StateKeys < 1000 {
		t.Fatalf("the state holds %d keys; the test wants more", live.StateKeys)
	}
	db, err := openCheckpoint(res.Checkpoint.Dir)
	if err != nil {
		t.Fatal(err)
	}
	bounds, err := stateSplits(db, 8)
	levels, _ := db.SSTables()
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(bounds) < 3 {
		t.Fatalf("split into %d ranges, want several: the tables are too few to test the split (%d levels: %v)", len(bounds)-1, len(levels), levels)
	}
	for _, parts := range []int{1, 2, 3, 8} {
		t.Run(fmt.Sprintf("parts=%d", parts), func(t *testing.T) {
			keys, n, err := countCheckpoint(context.Background(), res.Checkpoint.Dir, parts)
			if err != nil {
				t.Fatal(err)
			}
			if keys != live.StateKeys || n != live.StateBytes {
				t.Fatalf("counted %d keys, %d bytes; the live state holds %d, %d", keys, n, live.StateKeys, live.StateBytes)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := CountCheckpoint(ctx, res.Checkpoint.Dir); err != context.Canceled {
		t.Fatalf("a count with its context ended returned %v, want context.Canceled", err)
	}
}
