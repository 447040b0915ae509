package fsm

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/statedhq/stated/raftstore/command"
)

// TestListsOfExpiringElementsLeaveNothingBehind: a list's position record
// expires with the list's last element, so lists written only with TTLs,
// under ever-new keys, do not grow the state; a list with one element
// without a TTL keeps its record and its positions.
func TestListsOfExpiringElementsLeaveNothingBehind(t *testing.T) {
	f := openFSM(t)
	now := int64(1e18)
	appendCmd := func(key string, ttl int64) *command.Command {
		return commitCmd(now, []command.Mutation{{Op: command.OpListAppend, Namespace: "ns", Key: []byte(key), Value: []byte("v"), TTL: ttl}}, nil)
	}
	idx := uint64(0)
	step := func(cmd *command.Command) {
		t.Helper()
		idx++
		if res := apply(t, f, idx, cmd); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	for i := range 100 {
		step(appendCmd(fmt.Sprint("l", i), 10))
	}
	step(appendCmd("kept", 10))
	step(appendCmd("kept", 0))   // no TTL: the list stays
	step(appendCmd("long", 10))  // expires with its later element
	step(appendCmd("long", 500)) // ...
	step(&command.Command{Type: command.TypeExpire, Now: now + 100, ExpireLimit: 10_000})
	c, err := f.Counts()
	if err != nil {
		t.Fatal(err)
	}
	// Left: "kept" (its record and its element without a TTL) and "long"
	// (its record and its second element), with their index records.
	if c.StateKeys != 4 || c.TTLPending != 2 {
		t.Fatalf("counts after expiry = %+v; want 4 state keys (two lists) and 2 TTL records", c)
	}
	var seen []string
	for _, e := range scanAll(t, f, ScanQuery{Namespace: "ns", Kind: KindList, Key: []byte("long")}, now+100) {
		seen = append(seen, fmt.Sprint(e.SubKey))
	}
	if len(seen) != 1 || seen[0] != fmt.Sprint(listPosition(1)) {
		t.Fatalf("list long = %v, want its element at position 1", seen)
	}
	step(&command.Command{Type: command.TypeExpire, Now: now + 1000, ExpireLimit: 10_000})
	if c, _ := f.Counts(); c.StateKeys != 2 || c.TTLPending != 0 {
		t.Fatalf("counts after the last expiry = %+v; want only the list without TTL", c)
	}
	// A new append to an expired list starts it afresh.
	step(appendCmd("long", 0))
	seen = seen[:0]
	for _, e := range scanAll(t, f, ScanQuery{Namespace: "ns", Kind: KindList, Key: []byte("long")}, now+1000) {
		seen = append(seen, fmt.Sprint(e.SubKey))
	}
	if len(seen) != 1 || seen[0] != fmt.Sprint(listPosition(0)) {
		t.Fatalf("list long after it expired = %v, want one element at position 0", seen)
	}
}

func scanAll(t *testing.T, f *FSM, q ScanQuery, now int64) []Entry {
	t.Helper()
	var out []Entry
	if err := f.Scan(q, now, func(e Entry) error {
		// The entry's slices are valid only during the call.
		e.Key = append([]byte(nil), e.Key...)
		e.SubKey = append([]byte(nil), e.SubKey...)
		e.Value = append([]byte(nil), e.Value...)
		out = append(out, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCountsStopsWhenItsContextEnds: a scan of the counts whose caller
// left stops with the context's cause instead of reading the rest of the
// state, and an unended one counts everything.
func TestCountsStopsWhenItsContextEnds(t *testing.T) {
	f := openFSM(t)
	muts := make([]command.Mutation, 0, 10_000)
	for i := range 10_000 {
		muts = append(muts, command.Mutation{Op: command.OpPut, Namespace: "ns", Key: []byte(fmt.Sprint("k", i)), Value: []byte("v")})
	}
	if res := apply(t, f, 1, commitCmd(1e18, muts, nil)); res.Err != nil {
		t.Fatal(res.Err)
	}
	stop := errors.New("the caller left")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(stop)
	if c, err := f.CountsContext(ctx); !errors.Is(err, stop) {
		t.Fatalf("CountsContext with an ended context = %+v, %v; want the context's cause", c, err)
	}
	if c, err := f.CountsContext(context.Background()); err != nil || c.StateKeys != 10_000 {
		t.Fatalf("CountsContext = %+v, %v; want 10000 state keys", c, err)
	}
}
