package fsm

import (
	"math"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

func applyNext(t *testing.T, f *FSM, idx *uint64, cmd *command.Command) *Result {
	t.Helper()
	*idx++
	return apply(t, f, *idx, cmd)
}

// A commit rejected after it wrote a key with a TTL leaves neither the
// write nor its expiry record, alone or in a batch.
func TestARejectedCommitLeavesNoExpiryRecord(t *testing.T) {
	now := int64(1e18)
	first := commitCmd(now, []command.Mutation{
		{Op: command.OpPut, Namespace: "ns", Key: []byte("k"), Value: []byte("v1"), TTL: 100},
		{Op: command.OpCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: math.MaxInt64 - 1},
	}, nil)
	bad := commitCmd(now+10, []command.Mutation{
		{Op: command.OpPut, Namespace: "ns", Key: []byte("k"), Value: []byte("v2"), TTL: 500},
		{Op: command.OpMapPut, Namespace: "ns", Key: []byte("m"), SubKey: []byte("s"), Value: []byte("x"), TTL: 7},
		{Op: command.OpListAppend, Namespace: "ns", Key: []byte("l"), Value: []byte("x"), TTL: 7},
		{Op: command.OpCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: 2},
	}, nil)
	check := func(t *testing.T, f *FSM) {
		t.Helper()
		e, ok, _ := f.Get("ns", []byte("k"), KindValue, nil, now)
		if !ok || string(e.Value) != "v1" || e.ExpiresAt != now+100 {
			t.Fatalf("k = %q expires %d; want v1 expiring at now+100", e.Value, e.ExpiresAt)
		}
		c, _ := f.Counts()
		if c.TTLPending != 1 || c.StateKeys != 2 {
			t.Fatalf("counts = %+v; want 1 expiry record, 2 state keys", c)
		}
	}
	t.Run("alone", func(t *testing.T) {
		f := openFSM(t)
		var idx uint64
		applyNext(t, f, &idx, first)
		if r := applyNext(t, f, &idx, bad); r.Err == nil {
			t.Fatal("overflow not rejected")
		}
		check(t, f)
	})
	t.Run("batch", func(t *testing.T) {
		f := openFSM(t)
		logs := []*raft.Log{
			{Index: 1, Type: raft.LogCommand, Data: command.Encode(nil, first)},
			{Index: 2, Type: raft.LogCommand, Data: command.Encode(nil, bad)},
		}
		out := f.Batching().ApplyBatch(logs)
		if out[1].(*Result).Err == nil {
			t.Fatal("overflow not rejected")
		}
		check(t, f)
	})
}

// An expire whose limit cuts between a list's position record and its
// elements, then appends: the list reads as the new appends only, and a
// second expire leaves only the new list.
func TestAnExpireCutBetweenAListsRecordsThenAppendsLeavesTheNewListOnly(t *testing.T) {
	f := openFSM(t)
	now := int64(1e18)
	var idx uint64
	for _, v := range []string{"a", "b", "c"} {
		applyNext(t, f, &idx, commitCmd(now, []command.Mutation{{Op: command.OpListAppend, Namespace: "ns", Key: []byte("l"), Value: []byte(v), TTL: 10}}, nil))
	}
	applyNext(t, f, &idx, &command.Command{Type: command.TypeExpire, Now: now + 20, ExpireLimit: 1})
	for _, v := range []string{"x", "y"} {
		applyNext(t, f, &idx, commitCmd(now+30, []command.Mutation{{Op: command.OpListAppend, Namespace: "ns", Key: []byte("l"), Value: []byte(v), TTL: 1000}}, nil))
	}
	read := func(at int64) []string {
		var out []string
		for _, e := range scanAll(t, f, ScanQuery{Namespace: "ns", Kind: KindList, Key: []byte("l")}, at) {
			out = append(out, string(e.Value))
		}
		return out
	}
	if got := read(now + 30); len(got) != 2 || got[0] != "x" || got[1] != "y" {
		t.Fatalf("list = %q, want [x y]", got)
	}
	applyNext(t, f, &idx, &command.Command{Type: command.TypeExpire, Now: now + 40, ExpireLimit: 100})
	if got := read(now + 40); len(got) != 2 || got[0] != "x" || got[1] != "y" {
		t.Fatalf("list after expire = %q, want [x y]", got)
	}
	c, _ := f.Counts()
	if c.StateKeys != 3 || c.TTLPending != 3 {
		t.Fatalf("counts = %+v; want the record and two elements, with their 3 expiry records", c)
	}
	applyNext(t, f, &idx, &command.Command{Type: command.TypeExpire, Now: now + 2000, ExpireLimit: 100})
	if c, _ := f.Counts(); c.StateKeys != 0 || c.TTLPending != 0 {
		t.Fatalf("counts at the end = %+v; want nothing left", c)
	}
}

// TestTheExpiryIndexKeepsOneRecordPerEntryWithATTL: docs/METRICS.md's
// stated_ttl_backlog_entries counts "entries with a TTL that expiry has
// not deleted yet". A counter added to with a TTL 1000 times, a value, a
// map entry rewritten with a TTL 1000 times, and a list appended to with
// a TTL, are four entries with a TTL (plus the list's elements); the index
// kept a record per write until each write's own expiry (a hot counter
// with a one-day TTL: a record per add for a day).
func TestTheExpiryIndexKeepsOneRecordPerEntryWithATTL(t *testing.T) {
	f := openFSM(t)
	now := int64(1e18)
	day := int64(24 * 3600 * 1e9)
	var idx uint64
	for i := range int64(1000) {
		applyNext(t, f, &idx, commitCmd(now+i, []command.Mutation{
			{Op: command.OpCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: 1, TTL: day},
			{Op: command.OpPut, Namespace: "ns", Key: []byte("v"), Value: []byte("x"), TTL: day},
			{Op: command.OpMapPut, Namespace: "ns", Key: []byte("m"), SubKey: []byte("s"), Value: []byte("x"), TTL: day},
		}, nil))
	}
	for i := range int64(3) {
		applyNext(t, f, &idx, commitCmd(now+1000+i, []command.Mutation{
			{Op: command.OpListAppend, Namespace: "ns", Key: []byte("l"), Value: []byte("x"), TTL: day},
		}, nil))
	}
	c, err := f.Counts()
	if err != nil {
		t.Fatal(err)
	}
	// The counter, the value, the map entry, the list's three elements
	// and its position record.
	if c.StateKeys != 7 || c.TTLPending != 7 {
		t.Fatalf("counts = {StateKeys:%d TTLPending:%d}; want 7 entries with a TTL and 7 records", c.StateKeys, c.TTLPending)
	}
	// A counter add without a TTL keeps the counter's expiry, and its
	// record; a put without one leaves the replaced entry's record to its
	// time, when Expire drops it and leaves the entry.
	applyNext(t, f, &idx, commitCmd(now+2000, []command.Mutation{
		{Op: command.OpCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: 1},
		{Op: command.OpPut, Namespace: "ns", Key: []byte("v"), Value: []byte("forever")},
	}, nil))
	if c, _ := f.Counts(); c.TTLPending != 7 {
		t.Fatalf("TTLPending = %d after an add and a put without a TTL, want 7", c.TTLPending)
	}
	later := now + 2*day
	applyNext(t, f, &idx, &command.Command{Type: command.TypeExpire, Now: later, ExpireLimit: 100})
	if c, _ := f.Counts(); c.TTLPending != 0 || c.StateKeys != 1 {
		t.Fatalf("after the day: counts = {StateKeys:%d TTLPending:%d}; want only the value without a TTL, and no record", c.StateKeys, c.TTLPending)
	}
	if e, ok, err := f.Get("ns", []byte("v"), KindValue, nil, later); err != nil || !ok || string(e.Value) != "forever" {
		t.Fatalf("the value rewritten without a TTL, after the day: %q, %v, %v", e.Value, ok, err)
	}
}

// TestReadsJudgeExpiryByTheNewestLeaderTimeWhenTheClockIsBehind: a node
// whose clock runs behind the leader's serves no entry that its log's
// time already says expired: ReadTime is the later of the two.
func TestReadsJudgeExpiryByTheNewestLeaderTimeWhenTheClockIsBehind(t *testing.T) {
	f := openFSM(t)
	leader := int64(2e18)
	var idx uint64
	applyNext(t, f, &idx, commitCmd(leader, []command.Mutation{
		{Op: command.OpPut, Namespace: "ns", Key: []byte("k"), Value: []byte("v"), TTL: 10},
	}, nil))
	applyNext(t, f, &idx, commitCmd(leader+20, []command.Mutation{
		{Op: command.OpPut, Namespace: "ns", Key: []byte("other"), Value: []byte("v")},
	}, nil))
	behind := leader - int64(time.Hour)
	if got := f.ReadTime(behind); got != leader+20 {
		t.Fatalf("ReadTime(a clock an hour behind) = %d, want the newest leader time %d", got, leader+20)
	}
	if got := f.ReadTime(leader + 100); got != leader+100 {
		t.Fatalf("ReadTime(a clock ahead) = %d, want the clock", got)
	}
	if _, ok, err := f.Get("ns", []byte("k"), KindValue, nil, f.ReadTime(behind)); err != nil || ok {
		t.Fatalf("the entry the log's time says expired, read with a clock behind: found %v, %v", ok, err)
	}
}
