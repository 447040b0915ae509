package stated

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// Counter adds to one key merged within a Txn (see "Counters" in the
// package documentation). The daemon applies a Txn's mutations in order
// and refuses the whole commit when one add takes its counter out of
// int64, so a run of adds to one key is one add of their sum only where
// that changes nothing a caller can observe:
//
//   - the adds have the same TTL (the daemon checks and applies each add's
//     expiry; equal TTLs in one entry give equal expiries);
//   - their deltas share a sign (zero goes with either), so the partial
//     sums move one way and the counter overflows after some of them
//     exactly when it overflows after all of them, whatever its value;
//   - their sum fits in an int64 (else the run ends and a new one starts);
//   - no other mutation of the same namespace and key, nor a DeletePrefix
//     that covers the key, comes between them (an add after a Put, Delete
//     or DeletePrefix of its key is never merged across it).
//
// The Txn merges as it is built: an add that extends its key's open run
// adds its delta to the run's first add and allocates nothing, which is
// what lets a per-record handler add once per record (one poll of the
// Kafka processor is thousands of adds over a few keys). The merged add
// takes the place of the run's first add. The daemon names a refused
// field by its index in what it received; refusals are mapped back to the
// Txn's own indexes (mutations[i] of the i-th builder call), so a merged
// add's refusal names the run's first add.

// maxMergeMutations is the daemon's MaxMutationsPerCommit. A Txn built of
// more mutations is refused as the daemon refuses one that carries them,
// even when merged it would carry fewer.
const maxMergeMutations = 100_000

// counterRun is the open run of adds to one namespace and key.
type counterRun struct {
	add      *statedv1.Mutation // the run's add, to be sent
	ttl      int64
	pos, neg bool // a positive, a negative delta is in the run
}

// counterRuns are a Txn's open runs, by namespace, then key: looking a
// key up converts its bytes without allocating.
type counterRuns map[string]map[string]*counterRun

// add appends m, built by the Txn's builder call number t.built, to the
// mutations to send, ending the runs it touches; a counter add starts a
// run. Counter adds try mergeAdd first.
func (t *Txn) add(m *statedv1.Mutation) *Txn {
	if m.GetKind() == statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD {
		t.startRun(m.GetNamespace(), string(m.GetKey()), m)
	} else {
		t.endRuns(m.GetKind(), m.GetNamespace(), m.GetKey())
	}
	t.appendBuilt(m)
	return t
}

// endRuns ends the runs that a mutation of kind (not a counter add) to key
// in ns comes between.
func (t *Txn) endRuns(kind statedv1.MutationKind, ns string, key []byte) {
	switch kind {
	case statedv1.MutationKind_MUTATION_KIND_PUT, statedv1.MutationKind_MUTATION_KIND_DELETE,
		statedv1.MutationKind_MUTATION_KIND_MAP_PUT, statedv1.MutationKind_MUTATION_KIND_MAP_DELETE,
		statedv1.MutationKind_MUTATION_KIND_LIST_APPEND:
		delete(t.runs[ns], string(key))
	case statedv1.MutationKind_MUTATION_KIND_DELETE_PREFIX:
		for rk := range t.runs[ns] {
			if strings.HasPrefix(rk, string(key)) {
				delete(t.runs[ns], rk)
			}
		}
	default: // a kind this SDK does not know: merge nothing across it
		clear(t.runs)
	}
}

// appendBuilt appends m as the mutation of builder call t.built: to
// t.mutations, or once the Txn is in wire form to its adds (txnwire.go).
func (t *Txn) appendBuilt(m *statedv1.Mutation) {
	if t.wire == nil && t.nmut >= t.wireLimit() {
		t.toWire()
	}
	if t.wire != nil {
		t.adds = append(t.adds, wireAdd{at: len(*t.wire), m: m})
	} else {
		t.mutations = append(t.mutations, m)
	}
	t.counted()
}

// counted counts a mutation appended by builder call t.built.
func (t *Txn) counted() {
	if t.origin != nil {
		t.origin = append(t.origin, t.built)
	}
	t.nmut++
	t.built++
}

// startRun makes the add m, about to be appended, the open run of its key.
func (t *Txn) startRun(ns, key string, m *statedv1.Mutation) {
	inNS := t.runs[ns]
	if inNS == nil {
		if t.runs == nil {
			t.runs = make(counterRuns, 1)
		}
		inNS = make(map[string]*counterRun)
		t.runs[ns] = inNS
	}
	d := m.GetDelta()
	inNS[key] = &counterRun{add: m, ttl: m.GetTtlMillis(), pos: d > 0, neg: d < 0}
}

// mergeAdd adds delta to the open run of key in ns, counting one builder
// call, and reports whether it could (see extend); ttl is in
// milliseconds, as sent. Looking key up allocates nothing, whether it is
// a string or bytes.
func mergeAdd[K string | []byte](t *Txn, ns string, key K, delta, ttl int64) bool {
	r := t.runs[ns][string(key)]
	if r == nil || !t.extend(r, delta, ttl) {
		return false
	}
	t.built++
	return true
}

// extend adds delta to the run r's add and reports whether it could: same
// TTL, same sign, and a sum that fits in an int64. The first time, the
// mutations' builder indexes (origin) start to differ from their places.
func (t *Txn) extend(r *counterRun, d, ttl int64) bool {
	if ttl != r.ttl || (d > 0 && r.neg) || (d < 0 && r.pos) {
		return false
	}
	m := r.add
	sum := m.GetDelta()
	if (d > 0 && sum > math.MaxInt64-d) || (d < 0 && sum < math.MinInt64-d) {
		return false
	}
	if t.origin == nil {
		t.origin = make([]int, t.nmut, max(t.nmut, cap(t.mutations)))
		for i := range t.origin {
			t.origin[i] = i
		}
	}
	m.Delta = sum + d
	r.pos, r.neg = r.pos || d > 0, r.neg || d < 0
	return true
}

// tooManyMutations is the daemon's refusal of a commit of more than
// maxMergeMutations mutations, for a Txn built of that many, or nil.
func (t *Txn) tooManyMutations() error {
	if t.built <= maxMergeMutations {
		return nil
	}
	return status.Error(codes.InvalidArgument, fmt.Sprintf("mutations: %d mutations, limit %d", t.built, maxMergeMutations))
}

// remapFieldIndex rewrites the daemon's refusal of a merged request so
// that "mutations[j]" at the start of its message names the Txn's own
// index origin[j]. Any other error is returned as it is.
func remapFieldIndex(err error, origin []int) error {
	const prefix = "mutations["
	st, ok := status.FromError(err)
	if !ok || origin == nil || st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), prefix) {
		return err
	}
	msg := st.Message()
	end := strings.IndexByte(msg, ']')
	if end < 0 {
		return err
	}
	j, perr := strconv.Atoi(msg[len(prefix):end])
	if perr != nil || j < 0 || j >= len(origin) {
		return err
	}
	p := st.Proto()
	p.Message = prefix + strconv.Itoa(origin[j]) + msg[end:]
	return status.FromProto(p).Err()
}
