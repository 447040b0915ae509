package stated

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/big"
	"math/rand/v2"
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
			req := sentRequest(t, x, &lane{session: 1, next: 1})
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
			if want := builderCalls[tc.name]; x.Len() != want {
				t.Errorf("Len() = %d, want the %d built", x.Len(), want)
			}
		})
	}
}

// builderCalls is how many mutations each case above builds: what Len
// counts, merged or not.
var builderCalls = map[string]int{
	"one add is sent as built": 1,
	"adds to one key become one add of their sum at the first's place":                    4,
	"the same key in another namespace is another counter":                                2,
	"negative adds merge with negative ones, and zero with either":                        3,
	"a sign change starts a new run: +max then -max on a counter at 5 overflows unmerged": 2,
	"a sum out of int64 starts a new run, which merges what follows":                      4,
	"different TTLs are not merged":                                                       3,
	"equal TTLs are merged":                                                               2,
	"a put of the key ends the run":                                                       4,
	"a delete of the key ends the run":                                                    3,
	"a delete prefix covering the key ends the run; one that does not, does not":          5,
	"a put of another key does not end the run":                                           3,
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
// keys, merged as they are added: one op is one add.
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
		if t.nmut != keys {
			b.Fatalf("merged into %d adds, want %d", t.nmut, keys)
		}
	}
	b.SetBytes(0)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*adds), "ns/add")
}

// TestTxnMergedAsBuiltCommitsWhatItsBuilderCallsCommit builds random Txns
// of counter adds (through CounterAdd and a Counter handle, with and
// without a TTL, deltas up to the int64 limits) among puts, deletes and
// prefix deletes of a few keys, and applies both the builder calls one by
// one and the merged mutations to a model of the daemon's counters, which
// refuses the whole commit when an add leaves int64. Both must be refused
// alike or end with equal counters, and every sent mutation must stand,
// through origin, for a builder call of the same kind, key and TTL.
func TestTxnMergedAsBuiltCommitsWhatItsBuilderCallsCommit(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	namespaces, keys := []string{"ns", "other"}, []string{"a", "ab", "b"}
	deltas := []int64{0, 1, 2, 7, -1, -3}
	extremes := []int64{math.MaxInt64, math.MinInt64, math.MaxInt64/2 + 1, math.MinInt64/2 - 1}
	starts := []int64{0, 5, -5, math.MaxInt64 - 10, math.MinInt64 + 10}
	merged, refused := 0, 0
	for round := range 3000 {
		x := newFakeClient(&fakeState{}).Txn()
		// In either form, or switching at any point (txnwire.go).
		x.wireAt = []int{0, -1, math.MaxInt, 1 + rng.IntN(20)}[rng.IntN(4)]
		var built []*statedv1.Mutation
		for range 1 + rng.IntN(40) {
			ns, key := namespaces[rng.IntN(len(namespaces))], keys[rng.IntN(len(keys))]
			m := &statedv1.Mutation{Namespace: ns, Key: []byte(key)}
			switch rng.IntN(12) {
			case 0:
				m.Kind, m.Value = statedv1.MutationKind_MUTATION_KIND_PUT, []byte("v")
				x.Put(ns, m.Key, m.Value)
			case 1:
				m.Kind = statedv1.MutationKind_MUTATION_KIND_DELETE
				x.Delete(ns, m.Key)
			case 2:
				m.Kind, m.Key = statedv1.MutationKind_MUTATION_KIND_DELETE_PREFIX, []byte(key[:1])
				x.DeletePrefix(ns, m.Key)
			case 3:
				m.Kind, m.SubKey, m.Value = statedv1.MutationKind_MUTATION_KIND_MAP_PUT, []byte("s"), []byte("v")
				x.MapPut(ns, m.Key, m.SubKey, m.Value)
			default:
				m.Kind, m.Delta = statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, deltas[rng.IntN(len(deltas))]
				if rng.IntN(8) == 0 {
					m.Delta = extremes[rng.IntN(len(extremes))]
				}
				var opts []WriteOption
				if rng.IntN(4) == 0 {
					opts, m.TtlMillis = []WriteOption{WithTTL(time.Second)}, 1000
				}
				if rng.IntN(2) == 0 {
					x.CounterAdd(ns, m.Key, m.Delta, opts...)
				} else {
					(&Counter{ns: ns}).In(x).Add(key, m.Delta, opts...)
				}
			}
			built = append(built, m)
		}
		sent := sentRequest(t, x, &lane{session: 1, next: 1}).GetMutations()
		if x.Len() != len(built) {
			t.Fatalf("round %d: Len() = %d, want the %d built", round, x.Len(), len(built))
		}
		origin := func(j int) int {
			if x.origin == nil {
				return j
			}
			return x.origin[j]
		}
		if x.origin != nil && len(x.origin) != len(sent) {
			t.Fatalf("round %d: %d origins for %d mutations sent", round, len(x.origin), len(sent))
		}
		for j, m := range sent {
			b := built[origin(j)]
			if b.GetKind() != m.GetKind() || b.GetNamespace() != m.GetNamespace() || !bytes.Equal(b.GetKey(), m.GetKey()) || b.GetTtlMillis() != m.GetTtlMillis() {
				t.Fatalf("round %d: sent mutations[%d] %v stands for builder call %d, %v", round, j, m, origin(j), b)
			}
			if j > 0 && origin(j) <= origin(j-1) {
				t.Fatalf("round %d: origins out of order: %v", round, x.origin)
			}
		}
		if len(sent) < len(built) {
			merged++
		}
		// Merging moves no delta to another key or TTL, and wraps none.
		if b, s := deltaSums(built), deltaSums(sent); !maps.EqualFunc(b, s, func(x, y *big.Int) bool { return x.Cmp(y) == 0 }) {
			t.Fatalf("round %d: deltas by key and TTL sum to %v built, %v sent", round, b, s)
		}
		start := map[string]int64{}
		for _, ns := range namespaces {
			for _, k := range keys {
				start[ns+"/"+k] = starts[rng.IntN(len(starts))]
			}
		}
		wantAt, want := applyCounterModel(built, start)
		gotAt, got := applyCounterModel(sent, start)
		switch {
		case (wantAt < 0) != (gotAt < 0):
			t.Fatalf("round %d: built refused at %d, merged refused at %d\nbuilt %v\nsent %v", round, wantAt, gotAt, built, sent)
		case gotAt >= 0:
			refused++
			// The refusal names the first add of a run that overflows (it
			// may be another key's than the builder call that overflowed
			// first unmerged: the commit is refused whole either way).
			if b := built[origin(gotAt)]; b.GetKind() != statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD {
				t.Fatalf("round %d: merged refusal names builder call %d, %v, not an add", round, origin(gotAt), b)
			}
		default:
			for k, v := range want {
				if got[k] != v {
					t.Fatalf("round %d: counter %s = %d merged, %d built\nbuilt %v\nsent %v", round, k, got[k], v, built, sent)
				}
			}
		}
	}
	t.Logf("3000 Txns: %d merged something, %d refused", merged, refused)
	if merged < 1000 || refused < 100 {
		t.Fatalf("the random Txns merged %d times and overflowed %d times: too few to check the rules", merged, refused)
	}
}

// deltaSums sums the counter adds' deltas by namespace, key and TTL.
func deltaSums(muts []*statedv1.Mutation) map[string]*big.Int {
	s := map[string]*big.Int{}
	for _, m := range muts {
		if m.GetKind() == statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD {
			k := fmt.Sprintf("%s/%s ttl %d", m.GetNamespace(), m.GetKey(), m.GetTtlMillis())
			if s[k] == nil {
				s[k] = new(big.Int)
			}
			s[k].Add(s[k], big.NewInt(m.GetDelta()))
		}
	}
	return s
}

// applyCounterModel applies muts to the counters in start (keyed
// "ns/key") as the daemon does: an add that leaves int64 refuses the
// whole commit, and a delete or covering prefix delete resets a counter.
// It returns the refused mutation's index, or -1 and the counters.
func applyCounterModel(muts []*statedv1.Mutation, start map[string]int64) (int, map[string]int64) {
	c := maps.Clone(start)
	for i, m := range muts {
		k := m.GetNamespace() + "/" + string(m.GetKey())
		switch m.GetKind() {
		case statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD:
			v, d := c[k], m.GetDelta()
			if (d > 0 && v > math.MaxInt64-d) || (d < 0 && v < math.MinInt64-d) {
				return i, nil
			}
			c[k] = v + d
		case statedv1.MutationKind_MUTATION_KIND_DELETE:
			c[k] = 0
		case statedv1.MutationKind_MUTATION_KIND_DELETE_PREFIX:
			for ck := range c {
				if strings.HasPrefix(ck, k) {
					c[ck] = 0
				}
			}
		}
	}
	return -1, c
}
