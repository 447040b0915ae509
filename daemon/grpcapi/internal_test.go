package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/fsm"
)

func TestEveryMutationKindMapsToTheCommandOpOfTheSameName(t *testing.T) {
	for v, name := range statedv1.MutationKind_name {
		kind := statedv1.MutationKind(v)
		if kind == statedv1.MutationKind_MUTATION_KIND_UNSPECIFIED {
			continue
		}
		op := command.Op(kind)
		want := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, "MUTATION_KIND_"), "_", "-"))
		if !op.Valid() || op.String() != want {
			t.Errorf("%s maps to op %d %q, want %q", name, op, op, want)
		}
		if _, ok := rulesByKind[kind]; !ok {
			t.Errorf("%s has no validation rules", name)
		}
	}
}

func TestTTLConvertsMillisecondsToNanosecondsWithoutOverflow(t *testing.T) {
	c := toCommand(&statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, TtlMillis: MaxTTLMillis}}})
	if got, want := c.Mutations[0].TTL, int64(MaxTTLMillis)*1_000_000; got != want || got <= 0 {
		t.Errorf("TTL = %d, want %d", got, want)
	}
}

func TestNamespaceMustBeValidUTF8(t *testing.T) {
	// gRPC refuses invalid UTF-8 in string fields while decoding, so this
	// rule is only reachable in-process.
	err := validateNamespace("namespace", "a\xffb")
	if err == nil || err.Error() != "namespace: not valid UTF-8" {
		t.Errorf("err = %v", err)
	}
}

func TestToStatusMapsEachErrorToItsCode(t *testing.T) {
	s := New(nil, WithLogger(slog.New(slog.DiscardHandler)))
	cases := []struct {
		err  error
		code codes.Code
		msg  string
	}{
		{invalid("mutations[3].key", "empty"), codes.InvalidArgument, "mutations[3].key: empty"},
		{fmt.Errorf("raftstore: %w", &fsm.RejectError{Field: "offsets[2].offset", Reason: "5 is lower than the stored 6"}), codes.InvalidArgument, "offsets[2].offset: 5 is lower than the stored 6"},
		{fmt.Errorf("%w: leadership lost", raftstore.ErrNotLeader), codes.Unavailable, "not the raft leader"},
		{raftstore.ErrClosed, codes.Unavailable, "shutting down"},
		{&notLeaderError{leaderID: "n2", reason: "a forwarded call is not forwarded again"}, codes.Unavailable, "not leader; leader is n2"},
		{&notLeaderError{}, codes.Unavailable, "no leader is known"},
		{fmt.Errorf("%w: node id \"n2\" is already a member at 10.0.0.2:7421", raftstore.ErrMemberConflict), codes.FailedPrecondition, `node id "n2" is already a member`},
		{fmt.Errorf("%w: node \"n4\" has data of cluster a, this is cluster b", raftstore.ErrClusterMismatch), codes.FailedPrecondition, "data of cluster a"},
		{fmt.Errorf("%w: \"n9\"", raftstore.ErrUnknownMember), codes.NotFound, `"n9"`},
		{fmt.Errorf("%w: %w", raftstore.ErrOutcomeUnknown, context.DeadlineExceeded), codes.DeadlineExceeded, "outcome unknown"},
		{fmt.Errorf("%w: %w", raftstore.ErrOutcomeUnknown, raftstore.ErrClosed), codes.Unavailable, "shutting down; the commit's outcome is unknown"},
		{context.Canceled, codes.Canceled, "canceled"},
		{status.Error(codes.Unavailable, "transport closing"), codes.Unavailable, "transport closing"},
		{errors.New("pebble: disk on fire"), codes.Internal, "disk on fire"},
	}
	for _, tc := range cases {
		st, _ := status.FromError(s.toStatus(context.Background(), tc.err))
		if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
			t.Errorf("toStatus(%v) = %s %q, want %s containing %q", tc.err, st.Code(), st.Message(), tc.code, tc.msg)
		}
	}
}

// A large commit's mutations come from a pool and go back cleared, so
// that the pool keeps no request's bytes alive; a small commit's are its
// own.
func TestALargeCommitsMutationsGoBackToThePoolCleared(t *testing.T) {
	request := func(n int) *statedv1.CommitRequest {
		r := &statedv1.CommitRequest{}
		for i := range n {
			r.Mutations = append(r.Mutations, &statedv1.Mutation{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "ns", Key: fmt.Appendf(nil, "k%d", i), Value: []byte("v")})
		}
		return r
	}
	for _, n := range []int{pooledMutations - 1, pooledMutations, 1000, maxPooledMutations + 1} {
		c := toCommand(request(n))
		if len(c.Mutations) != n || string(c.Mutations[n-1].Key) != fmt.Sprint("k", n-1) || c.Mutations[n-1].Namespace != "ns" {
			t.Fatalf("%d mutations converted to %d, the last %+v", n, len(c.Mutations), c.Mutations[len(c.Mutations)-1])
		}
		m := c.Mutations
		releaseMutations(c)
		if c.Mutations != nil {
			t.Fatalf("%d mutations: the commit keeps them after their release", n)
		}
		pooled := n >= pooledMutations && n <= maxPooledMutations
		for i := range m {
			if cleared := m[i].Key == nil && m[i].Namespace == ""; cleared != pooled {
				t.Fatalf("%d mutations: mutation %d cleared %v at release, want %v", n, i, cleared, pooled)
			}
		}
	}
}
