package test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

// TestMergedCounterAddsEndAsUnmergedOnes commits each case's Txn through
// the SDK (which merges adds to one key) into one namespace, and the same
// mutations unmerged through a raw client into another, from the same
// seeded counters: the commit is accepted or refused alike, and every
// counter ends equal.
func TestMergedCounterAddsEndAsUnmergedOnes(t *testing.T) {
	t.Parallel()
	ctx, c, d := sdkSetup(t)
	raw := rawClient(t, d.SocketPath())
	type op struct {
		kind  statedv1.MutationKind
		key   string
		delta int64
	}
	add := func(key string, d int64) op { return op{statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, key, d} }
	del := func(key string) op { return op{kind: statedv1.MutationKind_MUTATION_KIND_DELETE, key: key} }
	put := func(key string) op { return op{kind: statedv1.MutationKind_MUTATION_KIND_PUT, key: key} }
	for i, tc := range []struct {
		name string
		seed map[string]int64
		ops  []op
	}{
		{"interleaved adds to a few keys", nil,
			[]op{add("a", 1), add("b", 5), add("a", 2), add("c", -1), add("b", 5), add("a", 3), add("c", -7)}},
		{"+max then -max on 5 overflows at the first add", map[string]int64{"a": 5},
			[]op{add("a", math.MaxInt64), add("a", -math.MaxInt64)}},
		{"three adds of 3 on max-10 fit", map[string]int64{"a": math.MaxInt64 - 10},
			[]op{add("a", 3), add("a", 3), add("a", 3)}},
		{"four adds of 3 on max-10 overflow", map[string]int64{"a": math.MaxInt64 - 10},
			[]op{add("a", 3), add("a", 3), add("a", 3), add("a", 3)}},
		{"two adds of max on min fit though their sum does not", map[string]int64{"a": math.MinInt64},
			[]op{add("a", math.MaxInt64), add("a", math.MaxInt64)}},
		{"negative adds under min overflow", map[string]int64{"a": math.MinInt64 + 4},
			[]op{add("a", -2), add("a", -2), add("a", -1)}},
		{"a delete between adds", map[string]int64{"a": 100},
			[]op{add("a", 1), del("a"), add("a", 2), add("a", 3)}},
		{"a put of the key between adds", map[string]int64{"a": 100},
			[]op{add("a", 1), put("a"), add("a", 2), add("a", 3)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nsMerged, nsPlain := "merged"+string(rune('a'+i)), "plain"+string(rune('a'+i))
			keys := map[string]bool{}
			for k, v := range tc.seed {
				keys[k] = true
				_, err := c.Update(ctx, func(x *stated.Txn) error {
					x.CounterAdd(nsMerged, []byte(k), v).CounterAdd(nsPlain, []byte(k), v)
					return nil
				})
				must(t, err)
			}
			x := c.Txn()
			req := &statedv1.CommitRequest{}
			for _, o := range tc.ops {
				keys[o.key] = true
				switch o.kind {
				case statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD:
					x.CounterAdd(nsMerged, []byte(o.key), o.delta)
				case statedv1.MutationKind_MUTATION_KIND_DELETE:
					x.Delete(nsMerged, []byte(o.key))
				case statedv1.MutationKind_MUTATION_KIND_PUT:
					x.Put(nsMerged, []byte(o.key), []byte("v"))
				}
				m := &statedv1.Mutation{Kind: o.kind, Namespace: nsPlain, Key: []byte(o.key), Delta: o.delta}
				if o.kind == statedv1.MutationKind_MUTATION_KIND_PUT {
					m.Value = []byte("v")
				}
				req.Mutations = append(req.Mutations, m)
			}
			_, mergedErr := x.Commit(ctx)
			_, plainErr := raw.Commit(ctx, req)
			if status.Code(mergedErr) != status.Code(plainErr) {
				t.Fatalf("merged commit: %v; unmerged: %v", mergedErr, plainErr)
			}
			if plainErr != nil && status.Code(plainErr) != codes.InvalidArgument {
				t.Fatalf("unmerged commit: %v", plainErr)
			}
			for k := range keys {
				got, err := c.GetCounter(ctx, nsMerged, []byte(k), stated.WithConsistency(stated.ConsistencyLinearizable))
				must(t, err)
				want, err := c.GetCounter(ctx, nsPlain, []byte(k), stated.WithConsistency(stated.ConsistencyLinearizable))
				must(t, err)
				if got != want {
					t.Errorf("counter %q = %d merged, %d unmerged (commit errors: %v; %v)", k, got, want, mergedErr, plainErr)
				}
			}
			t.Logf("outcome: %v", plainErr)
		})
	}
}

// TestATxnOfMoreAddsThanACommitCarriesIsRefusedAsUnmerged checks the
// limit on mutations per commit against the Txn as built: 100,001 adds to
// one key, which the SDK merges into one, are refused with the daemon's
// own refusal of 100,001 mutations (the SDK refuses them itself, sending
// nothing), and 100,000 of them commit as one add of their sum.
func TestATxnOfMoreAddsThanACommitCarriesIsRefusedAsUnmerged(t *testing.T) {
	t.Parallel()
	ctx, c, d := sdkSetup(t)
	raw := rawClient(t, d.SocketPath())
	const limit = 100_000
	build := func(n int) (*stated.Txn, *statedv1.CommitRequest) {
		x, req := c.Txn(), &statedv1.CommitRequest{}
		counter := stated.NewCounter(c, "hits")
		for range n {
			counter.In(x).Add("k", 1)
			req.Mutations = append(req.Mutations, &statedv1.Mutation{
				Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, Namespace: "raw", Key: []byte("k"), Delta: 1,
			})
		}
		return x, req
	}

	x, req := build(limit + 1)
	if x.Len() != limit+1 {
		t.Fatalf("Len() = %d, want %d", x.Len(), limit+1)
	}
	_, sdkErr := x.Commit(ctx)
	_, rawErr := raw.Commit(ctx, req)
	st, _ := status.FromError(rawErr)
	if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "mutations: 100001 mutations, limit 100000") {
		t.Fatalf("the daemon answered %d mutations with %v", limit+1, rawErr)
	}
	if !errors.Is(sdkErr, stated.ErrInvalidArgument) || status.Code(sdkErr) != codes.InvalidArgument || !strings.Contains(sdkErr.Error(), st.Message()) {
		t.Fatalf("the SDK answered %d adds with %v, want the daemon's %q", limit+1, sdkErr, st.Message())
	}

	x, _ = build(limit)
	res, err := x.Commit(ctx)
	must(t, err)
	got, err := c.GetCounter(ctx, "hits", []byte("k"), stated.WithConsistency(stated.ConsistencyLinearizable))
	must(t, err)
	if got != limit {
		t.Fatalf("counter = %d after %d adds of 1 (index %d)", got, limit, res.Index)
	}
}
