package stated

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/statedhq/stated/internal/grpccodec"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// A large Txn in wire form. A Txn of up to maxCoalescedWrites mutations
// builds them as messages, which a coalesced call carries with others. A
// Txn of more goes as its own Commit call (coalesce.go), and from its
// next mutation on it writes each one straight into the bytes that call
// sends, as proto.Marshal would write it (grpccodec.AppendMutation): no
// message to build, no copies of keys and values apart from those bytes,
// and nothing for the garbage collector to scan. Building a message per
// mutation, a copy of each key and value, and marshalling them one by one
// took about three times the CPU (BENCHMARKS.md).
//
// Counter adds stay messages, since a later add to their key may still
// merge into them (merge.go); each one is kept with the place in the
// bytes where it goes. The bytes come from a pool and go back to it when
// the Txn's Commit returns: a Txn commits at most once, and the codec has
// copied them into the call's own buffer by then.

// wireAdd is a counter add of a Txn in wire form: it is sent before the
// wire bytes from at on.
type wireAdd struct {
	at int
	m  *statedv1.Mutation
}

// maxPooledWire is the largest buffer the pool keeps: a Txn of more
// (a rare huge commit) leaves its bytes to the garbage collector.
const maxPooledWire = 4 << 20

var wireBufs = sync.Pool{New: func() any { return new([]byte) }}

// wireLimit is how many mutations the Txn builds as messages (wireAt).
func (t *Txn) wireLimit() int {
	switch {
	case t.wireAt == 0:
		return maxCoalescedWrites
	case t.wireAt < 0:
		return 0
	}
	return t.wireAt
}

// toWire puts the Txn in wire form: its mutations so far into bytes from
// the pool, but its counter adds, kept in place.
func (t *Txn) toWire() {
	t.wire = wireBufs.Get().(*[]byte)
	b := (*t.wire)[:0]
	for _, m := range t.mutations {
		if m.GetKind() == statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD {
			t.adds = append(t.adds, wireAdd{at: len(b), m: m})
			continue
		}
		b = appendMessage(b, m)
	}
	*t.wire = b
	t.mutations = nil
}

// appendMessage appends the wire form of the mutation message m.
func appendMessage(b []byte, m *statedv1.Mutation) []byte {
	return grpccodec.AppendMutation(b, m.Kind, m.Namespace, m.Key, m.SubKey, m.Value, m.Delta, m.TtlMillis)
}

// appendWire appends a mutation (not a counter add) to a Txn in wire form.
func (t *Txn) appendWire(kind statedv1.MutationKind, ns string, key, subKey, value []byte, delta, ttlMillis int64) {
	*t.wire = grpccodec.AppendMutation(*t.wire, kind, ns, key, subKey, value, delta, ttlMillis)
	t.counted()
}

// wireMutations returns the wire form of all the mutations of a Txn in
// wire form, counter adds in their places; release gives its bytes back.
func (t *Txn) wireMutations() (b []byte, release func()) {
	if len(t.adds) == 0 {
		return *t.wire, func() {}
	}
	buf := wireBufs.Get().(*[]byte)
	b = (*buf)[:0]
	from := 0
	for _, a := range t.adds {
		b = append(b, (*t.wire)[from:a.at]...)
		m := a.m
		b = appendMessage(b, m)
		from = a.at
	}
	b = append(b, (*t.wire)[from:]...)
	return b, func() { putWire(buf, b) }
}

// releaseWire gives a committed Txn's bytes back to the pool.
func (t *Txn) releaseWire() {
	if t.wire != nil {
		putWire(t.wire, *t.wire)
		t.wire = nil
	}
}

// putWire puts buf back in the pool, grown to b.
func putWire(buf *[]byte, b []byte) {
	if cap(b) <= maxPooledWire {
		*buf = b[:0]
		wireBufs.Put(buf)
	}
}

// protoMutations returns the mutations of a Txn in wire form as messages,
// for a Client without a connection of its own (tests with a fake
// StateClient), which can only send messages.
func (t *Txn) protoMutations() ([]*statedv1.Mutation, error) {
	b, release := t.wireMutations()
	defer release()
	var req statedv1.CommitRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		return nil, err
	}
	return req.Mutations, nil
}

// wireCommit is an attempt of a Commit call that sends req, whose
// mutations are the Txn's wire form.
type wireCommit struct {
	conn grpc.ClientConnInterface
	w    grpccodec.WireCommit
}

// send makes one Commit call.
func (w *wireCommit) send(ctx context.Context) (*statedv1.CommitResponse, error) {
	resp := new(statedv1.CommitResponse)
	if err := w.conn.Invoke(ctx, statedv1.State_Commit_FullMethodName, &w.w, resp, grpc.StaticMethod()); err != nil {
		return nil, err
	}
	return resp, nil
}
