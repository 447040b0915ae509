package daemon_test

import (
	"strings"
	"testing"

	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestADelayedRetryOfASessionsOpenDoesNotFenceItsClient: an attempt of
// OpenSession that the client gave up on can apply after the retry that
// succeeded (a partitioned follower forwarded it to the leader late). The
// SDK sends one session id with every attempt of an open, so the late
// attempt is an open of the client's current session: it answers that
// session as opened, and changes nothing. The session is not fenced, and
// its lane still knows the commit made in it, so a retry of that commit
// is a duplicate and the counter moves once. A different id fences it.
func TestADelayedRetryOfASessionsOpenDoesNotFenceItsClient(t *testing.T) {
	d := daemontest.Start(t)
	ctx := testContext(t)
	state := statedv1.NewStateClient(dial(t, "unix://"+d.SocketPath()))
	const id = 0x1234_5678_9abc
	open := func() *statedv1.OpenSessionResponse {
		t.Helper()
		resp, err := state.OpenSession(ctx, &statedv1.OpenSessionRequest{ClientId: "svc", SessionId: id})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	add := &statedv1.CommitRequest{ClientId: "svc", SessionId: id, Lane: 0, Sequence: 1,
		Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, Namespace: "n", Key: []byte("k"), Delta: 5}}}

	first := open()
	if first.GetSessionId() != id {
		t.Fatalf("opened session %d, want the proposed %d", first.GetSessionId(), id)
	}
	c1, err := state.Commit(ctx, add)
	if err != nil || c1.GetDuplicate() {
		t.Fatalf("commit in the session: %v, %v", c1, err)
	}
	late := open() // the attempt given up on, applied after the commit
	if late.GetSessionId() != id || late.GetIndex() != first.GetIndex() {
		t.Fatalf("the late open answered session %d at index %d, want %d at %d (the open session, unchanged)",
			late.GetSessionId(), late.GetIndex(), id, first.GetIndex())
	}
	c2, err := state.Commit(ctx, add) // a retry of the commit
	if err != nil || !c2.GetDuplicate() || c2.GetIndex() != c1.GetIndex() {
		t.Fatalf("retried commit after the late open: %v, %v; want a duplicate of index %d", c2, err, c1.GetIndex())
	}
	got, err := state.Get(ctx, &statedv1.GetRequest{Namespace: "n", Key: []byte("k"), Kind: statedv1.Kind_KIND_COUNTER,
		Read: &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_LINEARIZABLE}})
	if err != nil || got.GetCounter() != 5 {
		t.Fatalf("counter = %d (%v), want 5: the commit applied once", got.GetCounter(), err)
	}

	// Another id is another open: it fences the session.
	if _, err := state.OpenSession(ctx, &statedv1.OpenSessionRequest{ClientId: "svc", SessionId: id + 1}); err != nil {
		t.Fatal(err)
	}
	add.Sequence = 2
	if _, err := state.Commit(ctx, add); err == nil {
		t.Fatal("a commit of the session after another open of its client id succeeded, want it fenced")
	}
	// A proposed id above 2^63-1 is refused, naming the field.
	if _, err := state.OpenSession(ctx, &statedv1.OpenSessionRequest{ClientId: "svc", SessionId: 1 << 63}); err == nil || !strings.Contains(err.Error(), "session_id") {
		t.Fatalf("session_id 2^63: %v, want InvalidArgument naming session_id", err)
	}
}
