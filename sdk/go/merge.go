package stated

import (
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
// The merged add takes the place of the run's first add. The daemon names
// a refused field by its index in what it received; refusals are mapped
// back to the Txn's own indexes (mutations[i] of the i-th builder call),
// so a merged add's refusal names the run's first add.

// maxMergeMutations is the daemon's MaxMutationsPerCommit: a Txn over it is
// sent as built, so that the daemon refuses it as it would unmerged.
const maxMergeMutations = 100_000

// counterRun is the open run of adds to one namespace and key.
type counterRun struct {
	at       int // index in the merged list
	ttl      int64
	pos, neg bool // a positive, a negative delta is in the run
	copied   bool // merged[at] is the run's own copy
}

// mergeCounterAdds returns muts with runs of counter adds merged, and for
// each merged mutation the index in muts it stands for; origin is nil when
// nothing was merged (muts is returned as it is).
func mergeCounterAdds(muts []*statedv1.Mutation) (merged []*statedv1.Mutation, origin []int) {
	adds := 0
	for _, m := range muts {
		if m.GetKind() == statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD {
			adds++
		}
	}
	if adds < 2 || len(muts) > maxMergeMutations {
		return muts, nil
	}
	// runs is keyed by namespace, then key: looking a key up converts its
	// bytes without allocating.
	runs := make(map[string]map[string]*counterRun, 1)
	merged = make([]*statedv1.Mutation, 0, len(muts))
	origin = make([]int, 0, len(muts))
	for i, m := range muts {
		ns, key := m.GetNamespace(), m.GetKey()
		switch m.GetKind() {
		case statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD:
			inNS := runs[ns]
			if r := inNS[string(key)]; r != nil && r.extend(merged, m) {
				continue
			}
			if inNS == nil {
				inNS = make(map[string]*counterRun)
				runs[ns] = inNS
			}
			inNS[string(key)] = &counterRun{at: len(merged), ttl: m.GetTtlMillis(), pos: m.GetDelta() > 0, neg: m.GetDelta() < 0}
		case statedv1.MutationKind_MUTATION_KIND_PUT, statedv1.MutationKind_MUTATION_KIND_DELETE,
			statedv1.MutationKind_MUTATION_KIND_MAP_PUT, statedv1.MutationKind_MUTATION_KIND_MAP_DELETE,
			statedv1.MutationKind_MUTATION_KIND_LIST_APPEND:
			delete(runs[ns], string(key))
		case statedv1.MutationKind_MUTATION_KIND_DELETE_PREFIX:
			for rk := range runs[ns] {
				if strings.HasPrefix(rk, string(key)) {
					delete(runs[ns], rk)
				}
			}
		default: // a kind this SDK does not know: merge nothing across it
			clear(runs)
		}
		merged = append(merged, m)
		origin = append(origin, i)
	}
	if len(merged) == len(muts) {
		return muts, nil
	}
	return merged, origin
}

// extend adds m to the run whose add is merged[r.at] and reports whether
// it could: same TTL, same sign, and a sum that fits in an int64.
func (r *counterRun) extend(merged []*statedv1.Mutation, m *statedv1.Mutation) bool {
	d := m.GetDelta()
	if m.GetTtlMillis() != r.ttl || (d > 0 && r.neg) || (d < 0 && r.pos) {
		return false
	}
	sum := merged[r.at].GetDelta()
	if (d > 0 && sum > math.MaxInt64-d) || (d < 0 && sum < math.MinInt64-d) {
		return false
	}
	if !r.copied {
		// The Txn's own mutation stays as built; the run's add is a copy
		// from its second member on.
		f := merged[r.at]
		merged[r.at] = &statedv1.Mutation{Kind: f.GetKind(), Namespace: f.GetNamespace(), Key: f.GetKey(), Delta: sum, TtlMillis: f.GetTtlMillis()}
		r.copied = true
	}
	merged[r.at].Delta = sum + d
	r.pos, r.neg = r.pos || d > 0, r.neg || d < 0
	return true
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
