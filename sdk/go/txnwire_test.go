package stated

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/statedhq/stated/internal/grpccodec"
	"github.com/statedhq/stated/internal/testenv"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// sentRequest is the request txn sends on lane l, with its mutations as
// messages whichever form it is in (txnwire.go).
func sentRequest(tb testing.TB, txn *Txn, l *lane) *statedv1.CommitRequest {
	tb.Helper()
	req := txn.request(l)
	if txn.wire != nil {
		muts, err := txn.protoMutations()
		if err != nil {
			tb.Fatal(err)
		}
		req.Mutations = muts
	}
	return req
}

// wireBytes is what the codec sends for txn on lane l: its request, or,
// in wire form, its WireCommit, as commitInSession sends them.
func wireBytes(tb testing.TB, txn *Txn, l *lane) []byte {
	tb.Helper()
	var v any = txn.request(l)
	if txn.wire != nil {
		muts, release := txn.wireMutations()
		defer release()
		v = &grpccodec.WireCommit{Mutations: muts, Rest: txn.request(l)}
	}
	data, err := grpccodec.Codec.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	defer data.Free()
	return data.Materialize()
}

// randomBuild returns a random sequence of builder calls: every kind of
// mutation over a few keys (counter adds that merge and runs that end,
// through CounterAdd and a Counter handle, with and without a TTL),
// offsets and window adds, with byte arguments from one buffer the caller
// rewrites after each call.
func randomBuild(rng *rand.Rand) func(*Txn) {
	type call func(x *Txn, buf []byte)
	namespaces, keys := []string{"ns", "other"}, []string{"a", "ab", "b", ""}
	var calls []call
	for range rng.IntN(60) {
		ns, key := namespaces[rng.IntN(len(namespaces))], keys[rng.IntN(len(keys))]
		val := bytes.Repeat([]byte{byte(rng.IntN(256))}, rng.IntN(300))
		delta := []int64{0, 1, 5, -2, math.MaxInt64, math.MinInt64}[rng.IntN(6)]
		var opts []WriteOption
		if rng.IntN(4) == 0 {
			opts = []WriteOption{WithTTL(time.Duration(1+rng.IntN(5000)) * time.Millisecond)}
		}
		// at copies s into the caller's buffer, which the next call
		// overwrites.
		at := func(buf []byte, s []byte) []byte { return buf[:copy(buf, s)] }
		switch rng.IntN(11) {
		case 0:
			calls = append(calls, func(x *Txn, buf []byte) { x.Put(ns, at(buf, []byte(key)), at(buf[512:], val), opts...) })
		case 1:
			calls = append(calls, func(x *Txn, buf []byte) { x.Delete(ns, at(buf, []byte(key))) })
		case 2:
			calls = append(calls, func(x *Txn, buf []byte) { x.DeletePrefix(ns, at(buf, []byte(key))[:min(len(key), 1)]) })
		case 3:
			calls = append(calls, func(x *Txn, buf []byte) {
				x.MapPut(ns, at(buf, []byte(key)), at(buf[256:], []byte("sub")), at(buf[512:], val), opts...)
			})
		case 4:
			calls = append(calls, func(x *Txn, buf []byte) { x.MapDelete(ns, at(buf, []byte(key)), at(buf[256:], []byte("s"))) })
		case 5:
			calls = append(calls, func(x *Txn, buf []byte) { x.ListAppend(ns, at(buf, []byte(key)), at(buf[512:], val), opts...) })
		case 6:
			partition, next := int32(rng.IntN(3)), int64(rng.IntN(1000))
			calls = append(calls, func(x *Txn, _ []byte) { x.CommitOffset("g", "topic", partition, next) })
		case 7:
			calls = append(calls, func(x *Txn, buf []byte) {
				x.AddWindow("w", at(buf, []byte(key)), time.UnixMilli(1_700_000_000_000), NoValue(), FromSource("s"))
			})
		case 8:
			calls = append(calls, func(x *Txn, _ []byte) { (&Counter{ns: ns}).In(x).Add(key, delta, opts...) })
		default:
			calls = append(calls, func(x *Txn, buf []byte) { x.CounterAdd(ns, at(buf, []byte(key)), delta, opts...) })
		}
	}
	return func(x *Txn) {
		buf := make([]byte, 1024)
		for _, c := range calls {
			c(x, buf)
			for i := range buf {
				buf[i] = 0xee
			}
		}
	}
}

// TestATxnInWireFormSendsWhatItsMessagesWould builds random Txns twice:
// as messages only, and in wire form from any point on (txnwire.go). What
// the codec sends for each must be the same bytes, and the same bytes as
// proto.Marshal of the messages' request; the two must count and map
// their builder calls alike, and a Txn in wire form must decode to the
// messages' mutations.
func TestATxnInWireFormSendsWhatItsMessagesWould(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	l := &lane{session: 9, id: 2, next: 41}
	inWire := 0
	for round := range 2000 {
		build := randomBuild(rng)
		c := newFakeClient(&fakeState{})
		msgs, wire := c.Txn(), c.Txn()
		msgs.wireAt = math.MaxInt
		wire.wireAt = []int{0, -1, 1 + rng.IntN(30)}[rng.IntN(3)]
		build(msgs)
		build(wire)
		if msgs.wire != nil {
			t.Fatalf("round %d: a Txn with wireAt MaxInt went to wire form", round)
		}
		if wire.wire != nil {
			inWire++
		}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(msgs.request(l))
		if err != nil {
			t.Fatal(err)
		}
		if got := wireBytes(t, msgs, l); !bytes.Equal(got, want) {
			t.Fatalf("round %d: the codec sent %x for the messages, proto.Marshal %x", round, got, want)
		}
		if got := wireBytes(t, wire, l); !bytes.Equal(got, want) {
			t.Fatalf("round %d (wireAt %d, in wire form %v): sent %x, want %x", round, wire.wireAt, wire.wire != nil, got, want)
		}
		if got, want := sentRequest(t, wire, l), msgs.request(l); !proto.Equal(got, want) {
			t.Fatalf("round %d: decoded %v, want %v", round, got, want)
		}
		if wire.built != msgs.built || wire.nmut != msgs.nmut || wire.Len() != msgs.Len() || !equalInts(wire.origin, msgs.origin) {
			t.Fatalf("round %d: built %d, %d mutations, origin %v; the messages' %d, %d, %v",
				round, wire.built, wire.nmut, wire.origin, msgs.built, msgs.nmut, msgs.origin)
		}
		wire.releaseWire()
	}
	if inWire < 500 {
		t.Fatalf("only %d of 2000 Txns went to wire form", inWire)
	}
}

// TestATxnInWireFormHasRoomForEachAddWhereItWasBuilt: counter adds stay
// messages in a Txn in wire form, each sent where it was built, and one
// merged into after the Txn went to wire form carries the sum.
func TestATxnInWireFormHasRoomForEachAddWhereItWasBuilt(t *testing.T) {
	txn := newFakeClient(&fakeState{}).Txn()
	txn.wireAt = 2
	txn.CounterAdd("ns", []byte("c"), 1). // a message, in t.mutations
						Put("ns", []byte("a"), []byte("1")).
						Put("ns", []byte("b"), []byte("2")). // the Txn goes to wire form here
						CounterAdd("ns", []byte("c"), 2).    // merged into the first add
						CounterAdd("ns", []byte("d"), 5).    // a new add, among the wire bytes
						Put("ns", []byte("e"), []byte("3")).
						CounterAdd("ns", []byte("d"), 6)
	if txn.wire == nil || len(txn.adds) != 2 {
		t.Fatalf("in wire form %v with %d adds, want wire form and 2", txn.wire != nil, len(txn.adds))
	}
	got := sentRequest(t, txn, &lane{next: 1}).Mutations
	want := []*statedv1.Mutation{
		{Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, Namespace: "ns", Key: []byte("c"), Delta: 3},
		{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "ns", Key: []byte("a"), Value: []byte("1")},
		{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "ns", Key: []byte("b"), Value: []byte("2")},
		{Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, Namespace: "ns", Key: []byte("d"), Delta: 11},
		{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "ns", Key: []byte("e"), Value: []byte("3")},
	}
	if len(got) != len(want) {
		t.Fatalf("sent %v, want %v", got, want)
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("mutations[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	if want := []int{0, 1, 2, 4, 5}; !equalInts(txn.origin, want) {
		t.Fatalf("origin %v, want %v", txn.origin, want)
	}
}

// TestATxnOf1000PutsInWireFormAllocatesAlmostNothing: past its first
// mutations, a Txn in wire form writes into bytes from the pool, which
// its Commit gives back.
func TestATxnOf1000PutsInWireFormAllocatesAlmostNothing(t *testing.T) {
	if testenv.Race {
		// The race detector's sync.Pool drops a quarter of what it is
		// given back, so a Txn may grow its bytes from nothing.
		t.Skip("sync.Pool drops buffers under the race detector")
	}
	var key [16]byte
	value := make([]byte, 100)
	allocs := testing.AllocsPerRun(20, func() {
		txn := &Txn{}
		for i := range 1000 {
			binary.BigEndian.PutUint64(key[8:], uint64(i))
			txn.Put("ns", key[:], value)
		}
		if txn.wire == nil {
			t.Fatal("1000 puts, not in wire form")
		}
		txn.releaseWire() // as Commit does
	})
	// The Txn and its first 16 mutations' blocks, copies and slice:
	// under 20 (18 with the marshal, BenchmarkTxnPuts), against 37 as
	// messages and 3,000 before those. A garbage collection that empties
	// the pool between two runs costs one run about 12 more, the bytes'
	// doublings from nothing.
	if allocs > 30 {
		t.Fatalf("a Txn of 1000 puts in wire form made %.0f allocations, want at most 30", allocs)
	}
}

// TestACommittedTxnGivesItsWireBytesBack: Commit returns the bytes to the
// pool whatever it returns, and a Txn with a build error sends nothing.
func TestACommittedTxnGivesItsWireBytesBack(t *testing.T) {
	f := &fakeState{indexes: []uint64{5}}
	c := newFakeClient(f)
	txn := c.Txn()
	for i := range 100 {
		txn.Put("ns", []byte{byte(i)}, []byte("v"))
	}
	if txn.wire == nil {
		t.Fatal("100 puts, not in wire form")
	}
	res, err := txn.Commit(context.Background())
	if err != nil || res.Index != 5 {
		t.Fatalf("commit: %+v, %v", res, err)
	}
	if txn.wire != nil {
		t.Fatal("the committed Txn still holds its wire bytes")
	}
	// Without a connection of its own (a fake StateClient) the Client
	// sent the mutations as messages.
	if got := len(f.commits[0].GetMutations()); got != 100 {
		t.Fatalf("sent %d mutations, want 100", got)
	}
	for i, m := range f.commits[0].GetMutations() {
		if !bytes.Equal(m.GetKey(), []byte{byte(i)}) {
			t.Fatalf("mutations[%d] key %x", i, m.GetKey())
		}
	}
}
