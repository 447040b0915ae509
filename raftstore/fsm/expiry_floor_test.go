package fsm

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// TestExpiryStartsAtTheFloorAndMissesNothing checks the floor expire and
// ExpiryDue start their scans at (expiryFloor) against what could leave a
// due record below it: a leader clock that went back, an expire whose
// limit stops among records of one time (or is zero), an expire in the same apply batch
// as the write it must see, and a restored state with records below the
// floor the replaced one had reached.
func TestExpiryStartsAtTheFloorAndMissesNothing(t *testing.T) {
	now := int64(1e18)
	put := func(at int64, ttl int64, keys ...string) *command.Command {
		var muts []command.Mutation
		for _, k := range keys {
			muts = append(muts, command.Mutation{Op: command.OpPut, Namespace: "ns", Key: []byte(k), Value: []byte("v"), TTL: ttl})
		}
		return commitCmd(at, muts, nil)
	}
	expire := func(at int64, limit uint32) *command.Command {
		return &command.Command{Type: command.TypeExpire, Now: at, ExpireLimit: limit}
	}
	// state is how many state keys and expiry index records the state
	// holds, and whether an expiry is due at `at`.
	state := func(t *testing.T, f *FSM, at int64) string {
		t.Helper()
		due, err := f.ExpiryDue(at)
		if err != nil {
			t.Fatal(err)
		}
		c, err := f.Counts()
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("keys=%d index=%d due=%v", c.StateKeys, c.TTLPending, due)
	}
	want := func(t *testing.T, f *FSM, at int64, w string) {
		t.Helper()
		if g := state(t, f, at); g != w {
			t.Fatalf("state: %s, want %s", g, w)
		}
	}

	t.Run("clock back", func(t *testing.T) {
		f := openFSM(t)
		var idx uint64
		applyNext(t, f, &idx, put(now, 100, "a"))
		applyNext(t, f, &idx, expire(now+1000, 100)) // the floor passes now+1000
		want(t, f, now+1000, "keys=0 index=0 due=false")
		// A new leader whose clock is a second behind writes below it.
		applyNext(t, f, &idx, put(now-1e9, 100, "b"))
		want(t, f, now+1000, "keys=1 index=1 due=true") // b, written below the floor, is due
		applyNext(t, f, &idx, expire(now+1000, 100))
		want(t, f, now+1000, "keys=0 index=0 due=false")
	})

	t.Run("limit within one time", func(t *testing.T) {
		f := openFSM(t)
		var idx uint64
		applyNext(t, f, &idx, put(now, 100, "a", "b", "c", "d", "e")) // one expiry time
		applyNext(t, f, &idx, expire(now+1000, 0))                    // deletes nothing
		want(t, f, now+1000, "keys=5 index=5 due=true")
		for _, w := range []string{"keys=3 index=3 due=true", "keys=1 index=1 due=true", "keys=0 index=0 due=false"} {
			applyNext(t, f, &idx, expire(now+1000, 2))
			want(t, f, now+1000, w)
		}
	})

	// batch applies cmds as one apply batch after the entries before.
	batch := func(t *testing.T, f *FSM, idx *uint64, cmds ...*command.Command) {
		t.Helper()
		var logs []*raft.Log
		for _, c := range cmds {
			*idx++
			logs = append(logs, &raft.Log{Index: *idx, Type: raft.LogCommand, Data: command.Encode(nil, c)})
		}
		for i, out := range f.Batching().ApplyBatch(logs) {
			if err := out.(*Result).Err; err != nil {
				t.Fatalf("entry %d: %v", logs[i].Index, err)
			}
		}
	}

	t.Run("one batch", func(t *testing.T) {
		// The expire raises the floor past now+1000 in the batch; the
		// write after it in the same batch, under a clock behind, lowers
		// it again, and the second expire of the batch deletes it.
		f := openFSM(t)
		var idx uint64
		batch(t, f, &idx, put(now, 100, "a"), expire(now+1000, 100), put(now-1e9, 100, "b"),
			expire(now+1000, 100), put(now+5000, 1e12, "c"))
		want(t, f, now+1000, "keys=1 index=1 due=false")
	})

	t.Run("one batch after a committed floor", func(t *testing.T) {
		// The floor the database has reached is past now+1000; a batch
		// writes below it and then expires: the expire must start at the
		// batch's floor, not the database's.
		f := openFSM(t)
		var idx uint64
		applyNext(t, f, &idx, put(now, 100, "a"))
		applyNext(t, f, &idx, expire(now+1000, 100))
		batch(t, f, &idx, put(now-1e9, 100, "b"), expire(now+1000, 100))
		want(t, f, now+1000, "keys=0 index=0 due=false")
	})

	t.Run("abort", func(t *testing.T) {
		// A batch that is not committed takes back what it did to the
		// floors (the apply loop aborts the record cache then).
		c := newRecordCache()
		c.expiry.raise(10)
		c.endedExpiry.raise(10)
		c.commit()
		c.expiry.raise(20)
		c.endedExpiry.lower(5)
		c.abort()
		if c.expiry.batch != 10 || c.endedExpiry.batch != 10 || c.expiry.db.Load() != 10 {
			t.Fatalf("floors after an abort: %d and %d (database %d), want 10", c.expiry.batch, c.endedExpiry.batch, c.expiry.db.Load())
		}
	})

	t.Run("ended sessions", func(t *testing.T) {
		// The index of ended sessions' records has a floor of its own,
		// which the sweeps raise and an ending lowers.
		f := openFSM(t)
		var idx uint64
		ended := func(at int64, wantN uint64, wantDue bool) {
			t.Helper()
			due, err := f.EndedSessionsDue(at)
			if n := endedCount(t, f); n != wantN || due != wantDue || err != nil {
				t.Fatalf("%d ended sessions, due %v (%v); want %d, %v", n, due, err, wantN, wantDue)
			}
		}
		t1 := now + int64(time.Minute)
		applyNext(t, f, &idx, openSessionCmd("a", 1, now))
		applyNext(t, f, &idx, openSessionCmd("a", 2, t1)) // ends a's session 1, kept EndedSessionRetention
		day := t1 + int64(EndedSessionRetention)
		ended(day, 1, true)
		applyNext(t, f, &idx, expireSessionsCmd(day))
		ended(day, 0, false) // the floor passes day
		// A leader whose clock is an hour behind ends b's session 1: its
		// record expires below the floor.
		applyNext(t, f, &idx, openSessionCmd("b", 1, now))
		applyNext(t, f, &idx, openSessionCmd("b", 2, t1-int64(time.Hour)))
		ended(day, 1, true)
		applyNext(t, f, &idx, expireSessionsCmd(day))
		ended(day, 0, false)
	})

	t.Run("restore", func(t *testing.T) {
		f := openFSM(t)
		var idx uint64
		applyNext(t, f, &idx, put(now, 100, "a", "b"))
		snap := snapshotBytes(t, f)
		applyNext(t, f, &idx, expire(now+1000, 100))
		want(t, f, now+1000, "keys=0 index=0 due=false")
		if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
			t.Fatal(err)
		}
		want(t, f, now+1000, "keys=2 index=2 due=true")
		applyNext(t, f, &idx, expire(now+1000, 100))
		want(t, f, now+1000, "keys=0 index=0 due=false")
	})
}
