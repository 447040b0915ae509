package fsm

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/statedhq/stated/raftstore/command"
)

// TestTablesEndAtEachKeyPrefix: flushes and compactions end a table where
// the key's first byte changes (PebbleOptions, tableAtEachPrefix). Every
// batch of the state machine writes its applied index and its session's
// and lanes' records beside the state; split, a compaction of that
// bookkeeping leaves the state's tables as they are, and the state reads
// the same after it.
func TestTablesEndAtEachKeyPrefix(t *testing.T) {
	// Pebble compacts only when told to here, so that what a compaction
	// of the bookkeeping does is all that changes the tables.
	f, err := Open(filepath.Join(t.TempDir(), "state"), nil, func(o *openOptions) {
		o.tune = func(po *pebble.Options) { po.DisableAutomaticCompactions = true }
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	index := uint64(1)
	if res := apply(t, f, index, openSessionCmd("c", 1, 0)); res.Err != nil {
		t.Fatal(res.Err)
	}
	seq := map[uint32]uint64{}
	key := 0
	for range 4 { // four flushes of rising state keys, as a stream of events writes them
		for i := range 5 {
			muts := make([]command.Mutation, 200)
			for j := range muts {
				muts[j] = command.Mutation{Op: command.OpPut, Namespace: "ns", Key: fmt.Appendf(nil, "k%08d", key), Value: bytes.Repeat([]byte{'v'}, 100)}
				key++
			}
			lane := uint32(i % 2)
			seq[lane]++
			index++
			cmd := inSession(&command.Command{Type: command.TypeCommit, Commit: &command.Commit{ClientID: "c", Mutations: muts}}, 1, lane, seq[lane])
			if res := apply(t, f, index, cmd); res.Err != nil {
				t.Fatal(res.Err)
			}
		}
		if err := f.db.Flush(); err != nil {
			t.Fatal(err)
		}
	}

	stateTables := func() []string {
		t.Helper()
		byPrefix := tablesByPrefix(t, f.db)
		for _, p := range []byte{prefixSystem, prefixState, prefixSession, prefixLane} {
			if len(byPrefix[p]) == 0 {
				t.Errorf("no table of prefix %#02x: the commits wrote no bookkeeping or no state", p)
			}
		}
		return byPrefix[prefixState]
	}
	before := stateTables()
	if len(before) < 4 {
		t.Fatalf("%d state tables after four flushes, want at least four", len(before))
	}
	want := dump(t, f)

	// Compact the bookkeeping, as Pebble does once it stacks up in L0.
	for _, span := range [][2]byte{{prefixSystem, prefixSystem + 1}, {prefixSession, prefixLane + 1}} {
		if err := f.db.Compact(context.Background(), []byte{span[0]}, []byte{span[1]}, false); err != nil {
			t.Fatal(err)
		}
	}
	if after := stateTables(); !slices.Equal(after, before) {
		t.Errorf("compacting the bookkeeping rewrote the state's tables:\n before %v\n after  %v", before, after)
	}
	if got := dump(t, f); !slices.EqualFunc(got, want, func(a, b [2][]byte) bool {
		return bytes.Equal(a[0], b[0]) && bytes.Equal(a[1], b[1])
	}) {
		t.Errorf("the store holds %d keys after the compactions, want the %d before, unchanged", len(got), len(want))
	}
}

// tablesByPrefix lists db's tables ("L6 000012") by the key prefix they
// hold, sorted, and fails t for a table that holds more than one prefix.
func tablesByPrefix(t *testing.T, db *pebble.DB) map[byte][]string {
	t.Helper()
	levels, err := db.SSTables()
	if err != nil {
		t.Fatal(err)
	}
	byPrefix := map[byte][]string{}
	for level, tables := range levels {
		for _, tbl := range tables {
			first, last := tbl.Smallest.UserKey, tbl.Largest.UserKey
			if tbl.Largest.IsExclusiveSentinel() && len(first) > 0 && bytes.Equal(last, []byte{first[0] + 1}) {
				last = first // a range deletion to the prefix's end ends there
			}
			if len(first) == 0 || len(last) == 0 || first[0] != last[0] {
				t.Errorf("L%d table %s spans %x to %x, want one key prefix a table", level, tbl.FileNum, first, last)
				continue
			}
			byPrefix[first[0]] = append(byPrefix[first[0]], fmt.Sprintf("L%d %s", level, tbl.FileNum))
		}
	}
	for _, names := range byPrefix {
		slices.Sort(names)
	}
	return byPrefix
}

// TestTableAtEachPrefixEndsASpanAtTheNextFirstByte pins the spans the
// policy returns at the key space's edges.
func TestTableAtEachPrefixEndsASpanAtTheNextFirstByte(t *testing.T) {
	for _, c := range []struct{ start, end []byte }{
		{nil, []byte{0x00}},
		{[]byte{prefixSystem}, []byte{prefixOffset}},
		{[]byte{prefixState, 'n', 's', 0}, []byte{prefixState + 1}},
		{[]byte{0xfe, 0xff, 0xff}, []byte{0xff}},
		{[]byte{0xff, 0x01}, nil},
	} {
		policy, end, err := tableAtEachPrefix(c.start)
		if err != nil || policy != (pebble.SpanPolicy{}) || !bytes.Equal(end, c.end) || (end == nil) != (c.end == nil) {
			t.Errorf("tableAtEachPrefix(%x) = %+v, %x, %v; want the default policy up to %x", c.start, policy, end, err, c.end)
		}
	}
}
