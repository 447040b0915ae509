package stated

import (
	"bytes"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// A Txn takes the mutations it builds, and the copies of the keys and
// values it is given, from blocks of its own that grow as it does: a Txn of
// 1000 puts makes about 25 allocations for them instead of 3,000 (a
// mutation and two copies each): Put, mostly those allocations, was a
// quarter of a client's CPU under 1000-put commits (BENCHMARKS.md). A Txn
// of one put makes two instead of three.

const (
	minCopyBlock     = 256      // the first block of a Txn's copies
	maxCopyBlock     = 32 << 10 // blocks double up to this
	maxMutationBlock = 128      // mutations a block; the first holds 1
)

type txnAlloc struct {
	free      []byte // the unused end of the current block of copies
	copyBlock int
	muts      []statedv1.Mutation // the unused rest of the current block
	mutBlock  int
}

// mutation returns a zero Mutation of the Txn's own.
func (a *txnAlloc) mutation() *statedv1.Mutation {
	if len(a.muts) == 0 {
		a.mutBlock = min(max(2*a.mutBlock, 1), maxMutationBlock)
		a.muts = make([]statedv1.Mutation, a.mutBlock)
	}
	m := &a.muts[0]
	a.muts = a.muts[1:]
	return m
}

// clone returns a copy of b as bytes.Clone does: nil for nil, and memory
// no one else holds. The copy's capacity is its length, so an append to
// it cannot reach the next one.
func (a *txnAlloc) clone(b []byte) []byte {
	n := len(b)
	switch {
	case b == nil:
		return nil
	case n == 0:
		return []byte{}
	case n > maxCopyBlock/4:
		return bytes.Clone(b)
	case n > cap(a.free):
		a.copyBlock = min(max(2*a.copyBlock, minCopyBlock), maxCopyBlock)
		a.free = make([]byte, 0, a.copyBlock)
	}
	c := append(a.free[:0], b...)
	a.free = c[n:n]
	return c[:n:n]
}

// mutate adds a mutation of kind with copies of key, subKey and value (nil
// for a field the kind has not): a message, or its wire form once the Txn
// is in wire form (txnwire.go).
func (t *Txn) mutate(kind statedv1.MutationKind, ns string, key, subKey, value []byte, delta, ttlMillis int64) *Txn {
	if t.wire == nil && t.nmut >= t.wireLimit() {
		t.toWire()
	}
	if t.wire != nil && kind != statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD {
		t.endRuns(kind, ns, key)
		t.appendWire(kind, ns, key, subKey, value, delta, ttlMillis)
		return t
	}
	m := t.alloc.mutation()
	*m = statedv1.Mutation{
		Kind: kind, Namespace: ns, Delta: delta, TtlMillis: ttlMillis,
		Key: t.alloc.clone(key), SubKey: t.alloc.clone(subKey), Value: t.alloc.clone(value),
	}
	return t.add(m)
}
