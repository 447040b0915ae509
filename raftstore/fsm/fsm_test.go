package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

func openFSM(t testing.TB) *FSM {
	t.Helper()
	f, err := Open(filepath.Join(t.TempDir(), "state"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func apply(t *testing.T, f *FSM, index uint64, cmd *command.Command) *Result {
	t.Helper()
	return f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: command.Encode(nil, cmd)}).(*Result)
}

func commitCmd(now int64, muts []command.Mutation, offs []command.Offset) *command.Command {
	return &command.Command{Type: command.TypeCommit, Now: now, Commit: &command.Commit{Mutations: muts, Offsets: offs}}
}

// dump returns every key and value in Pebble, in order.
func dump(t *testing.T, f *FSM) [][2][]byte {
	t.Helper()
	f.mu.RLock()
	defer f.mu.RUnlock()
	it, err := f.db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out [][2][]byte
	for ok := it.First(); ok; ok = it.Next() {
		out = append(out, [2][]byte{slices.Clone(it.Key()), slices.Clone(it.Value())})
	}
	return out
}

func sameContents(t *testing.T, a, b *FSM) {
	t.Helper()
	da, db := dump(t, a), dump(t, b)
	if len(da) != len(db) {
		t.Fatalf("%d keys vs %d keys", len(da), len(db))
	}
	for i := range da {
		if !bytes.Equal(da[i][0], db[i][0]) || !bytes.Equal(da[i][1], db[i][1]) {
			t.Fatalf("entry %d differs: %x=%x vs %x=%x", i, da[i][0], da[i][1], db[i][0], db[i][1])
		}
	}
}

// randomLog builds a command log that exercises every operation, TTLs,
// expiry, and commands that the state machine rejects.
func randomLog(seed uint64, n int) []*command.Command {
	r := rand.New(rand.NewPCG(seed, seed))
	key := func() []byte { return []byte(fmt.Sprintf("k%d\x00%d", r.IntN(20), r.IntN(3))) }
	now := int64(1_700_000_000_000_000_000)
	offsets := map[int32]int64{}
	var log []*command.Command
	for i := 0; i < n; i++ {
		now += int64(r.IntN(50)) * 1e6
		if r.IntN(10) == 0 {
			log = append(log, &command.Command{Type: command.TypeExpire, Now: now, ExpireLimit: uint32(1 + r.IntN(5))})
			continue
		}
		if r.IntN(40) == 2 {
			log = append(log, &command.Command{Type: command.TypeCheckpoint, Now: now})
			continue
		}
		if r.IntN(10) == 1 {
			// Claims and releases of partitions 3 and 4; commits below
			// move them with epochs that are sometimes stale.
			typ := []command.Type{command.TypeClaim, command.TypeRelease}[r.IntN(2)]
			log = append(log, &command.Command{Type: typ, Now: now, Claim: &command.Claim{
				Group: "g", Owner: fmt.Sprint("o", r.IntN(2)),
				Partitions: []command.PartitionEpoch{{Topic: "t", Partition: int32(3 + r.IntN(2)), Epoch: uint64(r.IntN(4))}},
			}})
			continue
		}
		var muts []command.Mutation
		for j := r.IntN(6); j >= 0; j-- {
			m := command.Mutation{Op: command.Op(1 + r.IntN(7)), Namespace: []string{"a", "b", "a\x00"}[r.IntN(3)], Key: key()}
			switch m.Op {
			case command.OpPut, command.OpMapPut, command.OpListAppend:
				m.Value = []byte(fmt.Sprint(r.Int()))
			case command.OpCounterAdd:
				m.Delta = int64(r.IntN(200) - 100)
			case command.OpDeletePrefix:
				m.Key = m.Key[:r.IntN(len(m.Key))]
			}
			if m.Op == command.OpMapPut || m.Op == command.OpMapDelete {
				m.SubKey = []byte(fmt.Sprint("s", r.IntN(5)))
			}
			if r.IntN(3) == 0 {
				m.TTL = int64(r.IntN(500)) * 1e6
			}
			muts = append(muts, m)
		}
		var offs []command.Offset
		var owner string
		if r.IntN(2) == 0 {
			p := int32(r.IntN(5))
			next := offsets[p] + int64(r.IntN(10))
			if r.IntN(8) == 0 {
				next = offsets[p] - 1 // rejected: moves backwards
			} else {
				offsets[p] = next
			}
			o := command.Offset{Group: "g", Topic: "t", Partition: p, Offset: next}
			if p >= 3 {
				o.Epoch, owner = uint64(r.IntN(4)), fmt.Sprint("o", r.IntN(2))
			}
			offs = append(offs, o)
		}
		c := commitCmd(now, muts, offs)
		c.Commit.ClientID = owner
		log = append(log, c)
	}
	return log
}

func TestApplyingTheSameLogGivesByteIdenticalState(t *testing.T) {
	if modelRace {
		t.Skip("applies one log twice from one goroutine: 15 s under the race detector; go test ./raftstore/fsm runs it")
	}
	log := randomLog(7, 1000)
	a, b := openFSM(t), openFSM(t)
	rejected := 0
	for i, cmd := range log {
		ra := apply(t, a, uint64(i+1), cmd)
		rb := apply(t, b, uint64(i+1), cmd)
		if (ra.Err == nil) != (rb.Err == nil) {
			t.Fatalf("entry %d: replicas disagree: %v vs %v", i+1, ra.Err, rb.Err)
		}
		if ra.Err != nil {
			if !errors.Is(ra.Err, ErrRejected) {
				t.Fatalf("entry %d: %v", i+1, ra.Err)
			}
			rejected++
		}
	}
	if rejected == 0 {
		t.Fatal("the log should include rejected commands")
	}
	sameContents(t, a, b)
	if got := len(dump(t, a)); got < 50 {
		t.Fatalf("only %d keys: the log exercises too little", got)
	}
}

func TestRejectedCommitAppliesNothing(t *testing.T) {
	f := openFSM(t)
	put := command.Mutation{Op: command.OpPut, Namespace: "ns", Key: []byte("x"), Value: []byte("1")}
	if r := apply(t, f, 1, commitCmd(1, []command.Mutation{put},
		[]command.Offset{{Group: "g", Topic: "t", Partition: 0, Offset: 10}})); r.Err != nil {
		t.Fatal(r.Err)
	}
	before := dump(t, f)
	cases := map[string]*command.Command{
		"offset moves backwards after valid mutations": commitCmd(2, []command.Mutation{
			{Op: command.OpPut, Namespace: "ns", Key: []byte("y"), Value: []byte("2")},
			{Op: command.OpCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: 5},
		}, []command.Offset{
			{Group: "g", Topic: "t", Partition: 1, Offset: 3},
			{Group: "g", Topic: "t", Partition: 0, Offset: 9},
		}),
		"counter overflows in the middle": commitCmd(2, []command.Mutation{
			{Op: command.OpPut, Namespace: "ns", Key: []byte("y"), Value: []byte("2")},
			{Op: command.OpCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: math.MaxInt64},
			{Op: command.OpCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: 1},
			{Op: command.OpDelete, Namespace: "ns", Key: []byte("x")},
		}, nil),
	}
	index := uint64(2)
	for name, cmd := range cases {
		t.Run(name, func(t *testing.T) {
			r := apply(t, f, index, cmd)
			var rej *RejectError
			if !errors.As(r.Err, &rej) {
				t.Fatalf("err = %v, want a RejectError", r.Err)
			}
			t.Logf("rejected: %v", rej)
			if f.AppliedIndex() != index {
				t.Fatalf("applied index %d, want %d", f.AppliedIndex(), index)
			}
			// A rejected entry writes nothing but the applied index.
			after := dump(t, f)
			if got, _ := readAppliedIndex(f.db); got != index {
				t.Fatalf("stored applied index %d, want %d", got, index)
			}
			withoutIndex := func(d [][2][]byte) [][2][]byte {
				return slices.DeleteFunc(d, func(kv [2][]byte) bool { return bytes.Equal(kv[0], keyAppliedIndex) })
			}
			if after, before := withoutIndex(after), withoutIndex(slices.Clone(before)); !slices.EqualFunc(after, before, func(a, b [2][]byte) bool {
				return bytes.Equal(a[0], b[0]) && bytes.Equal(a[1], b[1])
			}) {
				t.Fatalf("rejected commit changed the state:\n%q\nwas\n%q", after, before)
			}
			index++
		})
	}
	if e, ok, _ := f.Get("ns", []byte("x"), KindValue, nil, 0); !ok || string(e.Value) != "1" {
		t.Fatalf("x = %q, %v", e.Value, ok)
	}
}

func TestOffsetRejectionNamesTheField(t *testing.T) {
	f := openFSM(t)
	apply(t, f, 1, commitCmd(1, nil, []command.Offset{{Group: "g", Topic: "t", Partition: 2, Offset: 10}}))
	r := apply(t, f, 2, commitCmd(2, nil, []command.Offset{
		{Group: "g", Topic: "t", Partition: 1, Offset: 1},
		{Group: "g", Topic: "t", Partition: 2, Offset: 4},
	}))
	var rej *RejectError
	if !errors.As(r.Err, &rej) || rej.Field != "offsets[1].offset" {
		t.Fatalf("err = %v, want a rejection of offsets[1].offset", r.Err)
	}
	// The same offset again is accepted: a re-commit of the same progress.
	if r := apply(t, f, 3, commitCmd(3, nil, []command.Offset{{Group: "g", Topic: "t", Partition: 2, Offset: 10}})); r.Err != nil {
		t.Fatal(r.Err)
	}
	offs, err := f.Offsets("g")
	if err != nil || len(offs) != 1 || offs[0].Offset != 10 {
		t.Fatalf("offsets = %+v, %v", offs, err)
	}
}

func TestEntriesAtOrBelowTheAppliedIndexAreSkippedAfterReopen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	f, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	add := commitCmd(1, []command.Mutation{{Op: command.OpCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: 1}}, nil)
	for i := uint64(1); i <= 5; i++ {
		apply(t, f, i, add)
	}
	f.Close()
	if f, err = Open(dir, nil); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.AppliedIndex() != 5 {
		t.Fatalf("applied index after reopen = %d, want 5", f.AppliedIndex())
	}
	for i := uint64(1); i <= 6; i++ { // Raft replays 1..5, then 6 is new
		apply(t, f, i, add)
	}
	if e, _, _ := f.Get("ns", []byte("c"), KindCounter, nil, 0); e.Counter != 6 {
		t.Fatalf("counter = %d, want 6: replayed entries were applied twice", e.Counter)
	}
}

type bufSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *bufSink) ID() string    { return "test" }
func (s *bufSink) Cancel() error { s.cancelled = true; return nil }
func (s *bufSink) Close() error  { return nil }

// snapshotBytes takes a snapshot as Raft does (Snapshot, then Persist,
// which writes a reference) and reads the stream the reference opens, as
// a leader sends it to a follower.
func snapshotBytes(t *testing.T, f *FSM) []byte {
	t.Helper()
	return streamBytes(t, f, persistRef(t, f))
}

// persistRef takes a snapshot of f and persists it as Raft does: what
// Persist writes is a reference to the state.
func persistRef(t *testing.T, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

// streamBytes opens the stream of the snapshot reference ref and reads it
// whole, checking that it is as long as OpenSnapshotStream said.
func streamBytes(t *testing.T, f *FSM, ref []byte) []byte {
	t.Helper()
	applied, ok, err := DecodeSnapshotRef(ref)
	if err != nil || !ok {
		t.Fatalf("a persisted snapshot is not a reference (%d bytes): ok=%v err=%v", len(ref), ok, err)
	}
	size, rc, err := f.OpenSnapshotStream(applied)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != size {
		t.Fatalf("the snapshot stream is %d bytes, OpenSnapshotStream said %d", len(b), size)
	}
	return b
}

func TestRestoreReplacesTheWholeState(t *testing.T) {
	a, b := openFSM(t), openFSM(t)
	for i, cmd := range randomLog(1, 300) {
		apply(t, a, uint64(i+1), cmd)
	}
	for i, cmd := range randomLog(2, 100) {
		apply(t, b, uint64(i+1), cmd)
	}
	snap := snapshotBytes(t, a)
	// Writes after the snapshot must not leak into it.
	apply(t, a, 301, commitCmd(2e18, []command.Mutation{{Op: command.OpPut, Namespace: "late", Key: []byte("k")}}, nil))
	if err := b.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if b.AppliedIndex() != 300 {
		t.Fatalf("applied index after restore = %d, want 300", b.AppliedIndex())
	}
	c := openFSM(t)
	for i, cmd := range randomLog(1, 300) {
		apply(t, c, uint64(i+1), cmd)
	}
	sameContents(t, b, c)
}

func TestRestoreRefusesACorruptSnapshotAndKeepsTheState(t *testing.T) {
	a, b := openFSM(t), openFSM(t)
	for i, cmd := range randomLog(3, 100) {
		apply(t, a, uint64(i+1), cmd)
		apply(t, b, uint64(i+1), cmd)
	}
	snap := snapshotBytes(t, a)
	for name, bad := range map[string][]byte{
		"flipped byte":   func() []byte { s := slices.Clone(snap); s[len(s)/2] ^= 0x40; return s }(),
		"truncated":      snap[:len(snap)-9],
		"not a snapshot": []byte("hello"),
	} {
		t.Run(name, func(t *testing.T) {
			err := b.Restore(io.NopCloser(bytes.NewReader(bad)))
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
			sameContents(t, a, b)
		})
	}
}

func TestKeyEncodingKeepsTupleOrderAndPrefixesContiguous(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	comp := func() []byte {
		b := make([]byte, r.IntN(4))
		for i := range b {
			b[i] = []byte{0x00, 0x01, 0xFF, 'a'}[r.IntN(4)]
		}
		return b
	}
	type tuple struct{ ns, key, sub []byte }
	var ts []tuple
	for range 500 {
		ts = append(ts, tuple{comp(), comp(), comp()})
	}
	cmpTuple := func(a, b tuple) int {
		if c := bytes.Compare(a.ns, b.ns); c != 0 {
			return c
		}
		if c := bytes.Compare(a.key, b.key); c != 0 {
			return c
		}
		return bytes.Compare(a.sub, b.sub)
	}
	enc := func(x tuple) []byte { return stateKey(string(x.ns), x.key, KindMap, x.sub) }
	for _, a := range ts {
		for _, b := range ts {
			if got, want := bytes.Compare(enc(a), enc(b)), cmpTuple(a, b); got != want {
				t.Fatalf("order of %q vs %q: encoded %d, tuples %d", a, b, got, want)
			}
			// A key prefix is a contiguous range of the namespace.
			p := appendEscaped(namespacePrefix(string(b.ns)), b.key)
			inRange := bytes.HasPrefix(enc(a), p)
			if want := bytes.Equal(a.ns, b.ns) && bytes.HasPrefix(a.key, b.key); inRange != want {
				t.Fatalf("prefix %q of %q: in range %v, want %v", b.key, a.key, inRange, want)
			}
		}
		k, kind, sub, err := decodeStateKey(enc(a), len(namespacePrefix(string(a.ns))))
		if err != nil || !bytes.Equal(k, a.key) || kind != KindMap || !bytes.Equal(sub, a.sub) {
			t.Fatalf("decode %q: %q %v %q %v", a, k, kind, sub, err)
		}
	}
}

func TestTTLHidesExpiredEntriesAndExpireDeletesThem(t *testing.T) {
	f := openFSM(t)
	now := int64(1e18)
	muts := []command.Mutation{
		{Op: command.OpPut, Namespace: "ns", Key: []byte("short"), Value: []byte("v"), TTL: 100},
		{Op: command.OpPut, Namespace: "ns", Key: []byte("long"), Value: []byte("v"), TTL: 1000},
		{Op: command.OpPut, Namespace: "ns", Key: []byte("forever"), Value: []byte("v")},
		{Op: command.OpCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: 3, TTL: 100},
	}
	apply(t, f, 1, commitCmd(now, muts, nil))
	// Overwriting "long" without TTL leaves a stale expiry record behind.
	apply(t, f, 2, commitCmd(now, []command.Mutation{{Op: command.OpPut, Namespace: "ns", Key: []byte("long"), Value: []byte("w")}}, nil))

	if _, ok, _ := f.Get("ns", []byte("short"), KindValue, nil, now+99); !ok {
		t.Fatal("short should be live before its expiry")
	}
	if _, ok, _ := f.Get("ns", []byte("short"), KindValue, nil, now+100); ok {
		t.Fatal("short should be gone at its expiry")
	}
	// A counter add after expiry starts from zero.
	apply(t, f, 3, commitCmd(now+200, []command.Mutation{{Op: command.OpCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: 1}}, nil))
	if e, _, _ := f.Get("ns", []byte("c"), KindCounter, nil, now+200); e.Counter != 1 || e.ExpiresAt != 0 {
		t.Fatalf("counter after expiry = %d (expires %d), want 1 without expiry", e.Counter, e.ExpiresAt)
	}
	if due, _ := f.ExpiryDue(now + 2000); !due {
		t.Fatal("expiry should be due")
	}
	apply(t, f, 4, &command.Command{Type: command.TypeExpire, Now: now + 2000, ExpireLimit: 100})
	if due, _ := f.ExpiryDue(now + 2000); due {
		t.Fatal("nothing should be due after expire")
	}
	var keys []string
	f.Scan(ScanQuery{Namespace: "ns"}, 0, func(e Entry) error { keys = append(keys, string(e.Key)); return nil })
	if want := []string{"c", "forever", "long"}; !slices.Equal(keys, want) {
		t.Fatalf("keys after expire = %q, want %q (stale expiry must not delete a rewritten key)", keys, want)
	}
}

// TestAnExpireWithANowBeforeTheEpochDeletesNothing: the expiry index
// is keyed by the expiry time as an unsigned number; a Now below zero
// (a leader's clock set before 1970) wrapped to the top of the range and
// made every entry with a TTL due.
func TestAnExpireWithANowBeforeTheEpochDeletesNothing(t *testing.T) {
	f := openFSM(t)
	now := int64(1e18)
	apply(t, f, 1, commitCmd(now, []command.Mutation{{Op: command.OpPut, Namespace: "ns", Key: []byte("k"), Value: []byte("v"), TTL: 100}}, nil))
	for i, early := range []int64{-2, -1, math.MinInt64} {
		// The leader asks ExpiryDue before it proposes an expire: a wrap
		// there proposed an entry on every tick.
		if due, err := f.ExpiryDue(early); due || err != nil {
			t.Fatalf("ExpiryDue(%d) = %t, %v; want false", early, due, err)
		}
		apply(t, f, uint64(2+i), &command.Command{Type: command.TypeExpire, Now: early, ExpireLimit: 100})
		if _, ok, err := f.Get("ns", []byte("k"), KindValue, nil, now); !ok || err != nil {
			t.Fatalf("an entry expiring at %d after an expire at %d: found %t, %v; want it kept", now+100, early, ok, err)
		}
	}
	if due, _ := f.ExpiryDue(now + 100); !due {
		t.Fatal("the entry's expiry record went with the early expires")
	}
}

func TestScanSelectsByKindPrefixAndRange(t *testing.T) {
	f := openFSM(t)
	var muts []command.Mutation
	for _, k := range []string{"a", "user/1", "user/2", "user/3", "users", "z"} {
		muts = append(muts, command.Mutation{Op: command.OpPut, Namespace: "ns", Key: []byte(k), Value: []byte(k)})
	}
	for _, s := range []string{"b", "a", "c", "ab"} {
		muts = append(muts, command.Mutation{Op: command.OpMapPut, Namespace: "ns", Key: []byte("m"), SubKey: []byte(s), Value: []byte(s)})
	}
	for _, v := range []string{"first", "second", "third"} {
		muts = append(muts, command.Mutation{Op: command.OpListAppend, Namespace: "ns", Key: []byte("l"), Value: []byte(v)})
	}
	muts = append(muts, command.Mutation{Op: command.OpCounterAdd, Namespace: "ns", Key: []byte("cnt"), Delta: 2})
	muts = append(muts, command.Mutation{Op: command.OpPut, Namespace: "other", Key: []byte("user/9"), Value: []byte("x")})
	apply(t, f, 1, commitCmd(1, muts, nil))

	collect := func(q ScanQuery) []string {
		var out []string
		if err := f.Scan(q, 0, func(e Entry) error {
			s := string(e.Key)
			if len(e.SubKey) > 0 && e.Kind == KindMap {
				s += "." + string(e.SubKey)
			}
			if e.Kind == KindList {
				s += "=" + string(e.Value)
			}
			out = append(out, s)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		q    ScanQuery
		want []string
	}{
		{"key prefix", ScanQuery{Namespace: "ns", Prefix: []byte("user/")}, []string{"user/1", "user/2", "user/3"}},
		{"key range", ScanQuery{Namespace: "ns", Start: []byte("user/2"), End: []byte("users")}, []string{"user/2", "user/3"}},
		{"limit", ScanQuery{Namespace: "ns", Prefix: []byte("user"), Limit: 2}, []string{"user/1", "user/2"}},
		{"counters only", ScanQuery{Namespace: "ns", Kind: KindCounter}, []string{"cnt"}},
		{"map in order", ScanQuery{Namespace: "ns", Kind: KindMap, Key: []byte("m")}, []string{"m.a", "m.ab", "m.b", "m.c"}},
		{"map prefix", ScanQuery{Namespace: "ns", Kind: KindMap, Key: []byte("m"), Prefix: []byte("a")}, []string{"m.a", "m.ab"}},
		{"map range", ScanQuery{Namespace: "ns", Kind: KindMap, Key: []byte("m"), Start: []byte("ab"), End: []byte("c")}, []string{"m.ab", "m.b"}},
		{"list in append order", ScanQuery{Namespace: "ns", Kind: KindList, Key: []byte("l")}, []string{"l=first", "l=second", "l=third"}},
		{"list from a position", ScanQuery{Namespace: "ns", Kind: KindList, Key: []byte("l"), Start: listPosition(1)}, []string{"l=second", "l=third"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := collect(tc.q); !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	// Prefix delete takes user/1..3 and nothing else.
	apply(t, f, 2, commitCmd(2, []command.Mutation{{Op: command.OpDeletePrefix, Namespace: "ns", Key: []byte("user/")}}, nil))
	if got := collect(ScanQuery{Namespace: "ns", Kind: KindValue}); !slices.Equal(got, []string{"a", "users", "z"}) {
		t.Fatalf("after prefix delete: %q", got)
	}
	if _, ok, _ := f.Get("other", []byte("user/9"), KindValue, nil, 0); !ok {
		t.Fatal("prefix delete reached into another namespace")
	}
}

var _ = pebble.Sync
