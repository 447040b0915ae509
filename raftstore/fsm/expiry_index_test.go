package fsm

import (
	"fmt"
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

// TestTheExpiryIndexKeepsOneRecordPerCounterAndList: docs/METRICS.md's
// stated_ttl_backlog_entries. A counter added to with a TTL 1000 times,
// and a list appended to with a TTL, keep one expiry record each (and one
// per element): a counter used to keep a record per add until that add's
// own expiry (a hot counter with a one-day TTL: a record per add for a
// day). A value put with a TTL 1000 times keeps a record per put until
// each one's time (a put does not read what it replaces); Expire then
// deletes the records and leaves an entry rewritten without a TTL.
func TestTheExpiryIndexKeepsOneRecordPerCounterAndList(t *testing.T) {
	f := openFSM(t)
	now := int64(1e18)
	day := int64(24 * 3600 * 1e9)
	var idx uint64
	for i := range int64(1000) {
		applyNext(t, f, &idx, commitCmd(now+i, []command.Mutation{
			{Op: command.OpCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: 1, TTL: day},
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
	// The counter, the list's three elements and its position record.
	if c.StateKeys != 5 || c.TTLPending != 5 {
		t.Fatalf("counts = {StateKeys:%d TTLPending:%d}; want 5 entries with a TTL and 5 records", c.StateKeys, c.TTLPending)
	}
	for i := range int64(1000) {
		applyNext(t, f, &idx, commitCmd(now+2000+i, []command.Mutation{
			{Op: command.OpPut, Namespace: "ns", Key: []byte("v"), Value: []byte("x"), TTL: day},
		}, nil))
	}
	// A counter add without a TTL keeps the counter's expiry, and its
	// record; the value is put once more, without a TTL.
	applyNext(t, f, &idx, commitCmd(now+4000, []command.Mutation{
		{Op: command.OpCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: 1},
		{Op: command.OpPut, Namespace: "ns", Key: []byte("v"), Value: []byte("forever")},
	}, nil))
	if c, _ := f.Counts(); c.TTLPending != 1005 {
		t.Fatalf("TTLPending = %d after 1000 puts with a TTL of one value, want 1005", c.TTLPending)
	}
	later := now + 2*day
	for range 2 {
		applyNext(t, f, &idx, &command.Command{Type: command.TypeExpire, Now: later, ExpireLimit: 1000})
	}
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

// TestTheExpiryIndexIsTheSameHoweverEntriesAreGrouped: commits that write
// one key twice with a TTL, or delete it and write it with one, leave the
// same state, expiry records included, whether each entry is applied alone
// or in a group with others: a write that reads what it replaces must read
// the same on replicas that group entries differently (a version of this
// stop's put that read the entry it replaced did not, outside
// readsOwnWrites).
func TestTheExpiryIndexIsTheSameHoweverEntriesAreGrouped(t *testing.T) {
	now := int64(1e18)
	cmds := []*command.Command{
		commitCmd(now, []command.Mutation{{Op: command.OpPut, Namespace: "ns", Key: []byte("k"), Value: []byte("0"), TTL: 500}}, nil),
		commitCmd(now+1, []command.Mutation{
			{Op: command.OpPut, Namespace: "ns", Key: []byte("k"), Value: []byte("1"), TTL: 100},
			{Op: command.OpPut, Namespace: "ns", Key: []byte("k"), Value: []byte("2"), TTL: 200},
		}, nil),
		commitCmd(now+2, []command.Mutation{
			{Op: command.OpDelete, Namespace: "ns", Key: []byte("k")},
			{Op: command.OpPut, Namespace: "ns", Key: []byte("k"), Value: []byte("3"), TTL: 300},
		}, nil),
		commitCmd(now+3, []command.Mutation{
			{Op: command.OpCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: 1, TTL: 100},
			{Op: command.OpCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: 1, TTL: 200},
			{Op: command.OpDelete, Namespace: "ns", Key: []byte("c")},
			{Op: command.OpCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: 1, TTL: 300},
		}, nil),
	}
	alone := openFSM(t)
	var idx uint64
	for _, c := range cmds {
		applyNext(t, alone, &idx, c)
	}
	grouped := openFSM(t)
	var logs []*raft.Log
	for i, c := range cmds {
		logs = append(logs, &raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: command.Encode(nil, c)})
	}
	grouped.Batching().ApplyBatch(logs)
	a, g := dump(t, alone), dump(t, grouped)
	if fmt.Sprintf("%q", a) != fmt.Sprintf("%q", g) {
		t.Fatalf("the state applied alone:\n%q\ngrouped:\n%q", a, g)
	}
}
