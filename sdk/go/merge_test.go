package stated

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

func TestTxnMergesCounterAddsOnlyWhereTheOutcomeStaysTheSame(t *testing.T) {
	add := func(ns, key string, d int64) *statedv1.Mutation {
		return &statedv1.Mutation{Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, Namespace: ns, Key: []byte(key), Delta: d}
	}
	addTTL := func(ns, key string, d, ttl int64) *statedv1.Mutation {
		m := add(ns, key, d)
		m.TtlMillis = ttl
		return m
	}
	put := &statedv1.Mutation{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "ns", Key: []byte("a"), Value: []byte("v")}
	for _, tc := range []struct {
		name   string
		build  func(*Txn)
		want   []*statedv1.Mutation
		origin []int // nil: sent as built
	}{
		{"one add is sent as built",
			func(x *Txn) { x.CounterAdd("ns", []byte("a"), 1) },
			[]*statedv1.Mutation{add("ns", "a", 1)}, nil},
		{"adds to one key become one add of their sum at the first's place",
			func(x *Txn) {
				x.CounterAdd("ns", []byte("a"), 1).CounterAdd("ns", []byte("b"), 10).CounterAdd("ns", []byte("a"), 2).CounterAdd("ns", []byte("a"), 3)
			},
			[]*statedv1.Mutation{add("ns", "a", 6), add("ns", "b", 10)}, []int{0, 1}},
		{"the same key in another namespace is another counter",
			func(x *Txn) { x.CounterAdd("ns", []byte("a"), 1).CounterAdd("other", []byte("a"), 2) },
			[]*statedv1.Mutation{add("ns", "a", 1), add("other", "a", 2)}, nil},
		{"negative adds merge with negative ones, and zero with either",
			func(x *Txn) {
				x.CounterAdd("ns", []byte("a"), -1).CounterAdd("ns", []byte("a"), 0).CounterAdd("ns", []byte("a"), -2)
			},
			[]*statedv1.Mutation{add("ns", "a", -3)}, []int{0}},
		{"a sign change starts a new run: +max then -max on a counter at 5 overflows unmerged",
			func(x *Txn) {
				x.CounterAdd("ns", []byte("a"), math.MaxInt64).CounterAdd("ns", []byte("a"), -math.MaxInt64)
			},
			[]*statedv1.Mutation{add("ns", "a", math.MaxInt64), add("ns", "a", -math.MaxInt64)}, nil},
		{"a sum out of int64 starts a new run, which merges what follows",
			func(x *Txn) {
				x.CounterAdd("ns", []byte("a"), math.MaxInt64-5).CounterAdd("ns", []byte("a"), 3).
					CounterAdd("ns", []byte("a"), 3).CounterAdd("ns", []byte("a"), 4)
			},
			[]*statedv1.Mutation{add("ns", "a", math.MaxInt64-2), add("ns", "a", 7)}, []int{0, 2}},
		{"different TTLs are not merged",
			func(x *Txn) {
				x.CounterAdd("ns", []byte("a"), 1, WithTTL(time.Second)).CounterAdd("ns", []byte("a"), 2).
					CounterAdd("ns", []byte("a"), 3, WithTTL(time.Second))
			},
			[]*statedv1.Mutation{addTTL("ns", "a", 1, 1000), add("ns", "a", 2), addTTL("ns", "a", 3, 1000)}, nil},
		{"equal TTLs are merged",
			func(x *Txn) {
				x.CounterAdd("ns", []byte("a"), 1, WithTTL(time.Second)).CounterAdd("ns", []byte("a"), 2, WithTTL(time.Second))
			},
			[]*statedv1.Mutation{addTTL("ns", "a", 3, 1000)}, []int{0}},
		{"a put of the key ends the run",
			func(x *Txn) {
				x.CounterAdd("ns", []byte("a"), 1).Put("ns", []byte("a"), []byte("v")).CounterAdd("ns", []byte("a"), 2).CounterAdd("ns", []byte("a"), 3)
			},
			[]*statedv1.Mutation{add("ns", "a", 1), put, add("ns", "a", 5)}, []int{0, 1, 2}},
		{"a delete of the key ends the run",
			func(x *Txn) {
				x.CounterAdd("ns", []byte("a"), 1).Delete("ns", []byte("a")).CounterAdd("ns", []byte("a"), 2)
			},
			[]*statedv1.Mutation{add("ns", "a", 1), {Kind: statedv1.MutationKind_MUTATION_KIND_DELETE, Namespace: "ns", Key: []byte("a")}, add("ns", "a", 2)}, nil},
		{"a delete prefix covering the key ends the run; one that does not, does not",
			func(x *Txn) {
				x.CounterAdd("ns", []byte("ab"), 1).DeletePrefix("ns", []byte("x")).CounterAdd("ns", []byte("ab"), 2).
					DeletePrefix("ns", []byte("a")).CounterAdd("ns", []byte("ab"), 4)
			},
			[]*statedv1.Mutation{add("ns", "ab", 3),
				{Kind: statedv1.MutationKind_MUTATION_KIND_DELETE_PREFIX, Namespace: "ns", Key: []byte("x")},
				{Kind: statedv1.MutationKind_MUTATION_KIND_DELETE_PREFIX, Namespace: "ns", Key: []byte("a")},
				add("ns", "ab", 4)}, []int{0, 1, 3, 4}},
		{"a put of another key does not end the run",
			func(x *Txn) {
				x.CounterAdd("ns", []byte("c"), 1).Put("ns", []byte("a"), []byte("v")).CounterAdd("ns", []byte("c"), 2)
			},
			[]*statedv1.Mutation{add("ns", "c", 3), put}, []int{0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newFakeClient(&fakeState{}).Txn()
			tc.build(x)
			built := len(x.mutations)
			req := x.request(&lane{session: 1, next: 1})
			if len(req.Mutations) != len(tc.want) {
				t.Fatalf("sent %d mutations %v, want %v", len(req.Mutations), req.Mutations, tc.want)
			}
			for i := range tc.want {
				if !proto.Equal(req.Mutations[i], tc.want[i]) {
					t.Errorf("mutations[%d] = %v, want %v", i, req.Mutations[i], tc.want[i])
				}
			}
			if len(x.origin) != len(tc.origin) || (tc.origin != nil && !equalInts(x.origin, tc.origin)) {
				t.Errorf("origin = %v, want %v", x.origin, tc.origin)
			}
			if x.Len() != built || len(x.mutations) != built {
				t.Errorf("Len() = %d after request, want the %d built", x.Len(), built)
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestMergedTxnRefusalNamesTheTxnsOwnMutationIndex(t *testing.T) {
	for _, tc := range []struct {
		name, daemon, want string
	}{
		{"a field after a merged run", "mutations[2].namespace: must not be empty", "mutations[4].namespace: must not be empty"},
		{"the merged add", "mutations[0].delta: counter 9223372036854775807 + 3 overflows int64", "mutations[0].delta: counter"},
		{"not a mutation", "offsets[0].offset: 3 is lower than the stored 7", "offsets[0].offset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeState{commitErr: status.Error(codes.InvalidArgument, tc.daemon)}
			c := newFakeClient(f)
			_, err := c.Txn().CounterAdd("ns", []byte("a"), 1).CounterAdd("ns", []byte("b"), 1).CounterAdd("ns", []byte("a"), 2).
				CounterAdd("ns", []byte("b"), 2).Put("", []byte("k"), nil).Commit(context.Background())
			if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Commit = %v, want ErrInvalidArgument naming %q", err, tc.want)
			}
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("status.Code = %v, want InvalidArgument", status.Code(err))
			}
		})
	}
}

// BenchmarkCounterAddsOfAPoll builds what the Kafka processor's
// per-record handler builds for one poll, 5,000 counter adds over 100
// keys, and merges them as Commit does: one op is one add.
func BenchmarkCounterAddsOfAPoll(b *testing.B) {
	const adds, keys = 5000, 100
	names := make([]string, keys)
	for i := range names {
		names[i] = "key-" + strings.Repeat("x", 8) + string(rune('a'+i%26)) + string(rune('a'+i/26))
	}
	counts := &Counter{ns: "counts"}
	b.ReportAllocs()
	for b.Loop() {
		t := &Txn{}
		for i := range adds {
			counts.In(t).Add(names[i%keys], 1)
		}
		if merged, _ := mergeCounterAdds(t.mutations); len(merged) != keys {
			b.Fatalf("merged into %d adds, want %d", len(merged), keys)
		}
	}
	b.SetBytes(0)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*adds), "ns/add")
}
