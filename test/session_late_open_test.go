package test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestALateOpenOfAnEndedSessionIsRefusedAndItsRetriedCommitAppliesOnce is
// a review's reproduction over the raw gRPC API: a session opens, a
// commit applies (its answer taken for lost), the session expires and
// the leader's sweep deletes it, an attempt of the session's open with
// the same id arrives late, and the commit is sent again. The late open
// used to open the session again with empty lanes, and the commit applied
// a second time, not as a duplicate. Now the open is refused, naming
// session.id, and the counter stays at 1.
func TestALateOpenOfAnEndedSessionIsRefusedAndItsRetriedCommitAppliesOnce(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := newNode(t)
	n.args = []string{"--session-idle-timeout", "2s", "--expiry-interval", "1s"}
	n.start(ctx)
	st, done := n.client()
	defer done()

	const client, session = "reopen-raw", 777
	open := &statedv1.OpenSessionRequest{ClientId: client, SessionId: session}
	if resp, err := st.OpenSession(ctx, open); err != nil || resp.GetSessionId() != session {
		t.Fatalf("open: %v, %v", resp, err)
	}
	commit := &statedv1.CommitRequest{ClientId: client, SessionId: session, Lane: 0, Sequence: 1,
		Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD,
			Namespace: "ns", Key: []byte("c"), Delta: 1}}}
	if resp, err := st.Commit(ctx, commit); err != nil || resp.GetDuplicate() {
		t.Fatalf("first commit: %v, %v", resp, err)
	}
	// Past the idle timeout and a sweep of the leader's expiry loop.
	time.Sleep(4 * time.Second)

	_, openErr := st.OpenSession(ctx, open)
	resp, commitErr := st.Commit(ctx, commit)
	got, err := st.Get(ctx, &statedv1.GetRequest{Namespace: "ns", Key: []byte("c"), Kind: statedv1.Kind_KIND_COUNTER})
	if err != nil || got.GetCounter() != 1 {
		t.Fatalf("counter = %d, %v; want 1 (late open: %v; retried commit: %v, %v)", got.GetCounter(), err, openErr, resp, commitErr)
	}
	if status.Code(openErr) != codes.InvalidArgument || !strings.Contains(openErr.Error(), "session.id") {
		t.Fatalf("late open: %v; want InvalidArgument naming session.id", openErr)
	}
	if commitErr == nil && !resp.GetDuplicate() {
		t.Fatalf("the retried commit applied again: %v", resp)
	}
	t.Logf("late open: %v; retried commit: %v", openErr, commitErr)
	// The client opens a new session and commits there.
	if _, err := st.OpenSession(ctx, &statedv1.OpenSessionRequest{ClientId: client, SessionId: session + 1}); err != nil {
		t.Fatalf("new session: %v", err)
	}
}
