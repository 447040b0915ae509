package grpcapi_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

func sessionDetail(t *testing.T, err error) *statedv1.SessionRefused {
	t.Helper()
	for _, d := range status.Convert(err).Details() {
		if v, ok := d.(*statedv1.SessionRefused); ok {
			return v
		}
	}
	t.Fatalf("%v carries no SessionRefused detail", err)
	return nil
}

// TestSessionsWorkThroughAFollower opens sessions and commits in them
// through a follower, so that every call and every refusal crosses the
// forwarding path with its details.
func TestSessionsWorkThroughAFollower(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 3)
	leader, follower := dial(t, "unix://"+nodes[0].SocketPath()), dial(t, "unix://"+nodes[2].SocketPath())
	ctx := testContext(t)

	// An open that finds no leader (an election on a loaded machine, seen
	// in CI right after the cluster started) is tried again: an open
	// that did not reach the leader opened nothing, and one that did is
	// superseded by the next.
	open := func(c statedv1.StateClient) *statedv1.OpenSessionResponse {
		t.Helper()
		var r *statedv1.OpenSessionResponse
		var err error
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			r, err = c.OpenSession(ctx, &statedv1.OpenSessionRequest{ClientId: "svc"})
			if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		if r.GetSessionId() == 0 || r.GetIndex() == 0 || r.GetIdleTimeoutMillis() != 3600_000 {
			t.Fatalf("open = %v", r)
		}
		return r
	}
	s1 := open(follower)
	commit := func(session uint64, seq uint64, key string) *statedv1.CommitRequest {
		return &statedv1.CommitRequest{ClientId: "svc", SessionId: session, Lane: 2, Sequence: seq,
			Mutations: []*statedv1.Mutation{put("ns", key, "v")}}
	}
	// The session's commits are sent again while Unavailable, as the SDK
	// does: one that applied before its answer was lost comes back a
	// duplicate.
	var first *statedv1.CommitResponse
	lost := false
	err := daemontest.WhileUnavailable(ctx, func() (err error) {
		first, err = follower.Commit(ctx, commit(s1.GetSessionId(), 1, "a"))
		lost = lost || status.Code(err) == codes.Unavailable
		return err
	})
	if err != nil || first.GetDuplicate() && !lost {
		t.Fatalf("commit: %v, %v", first, err)
	}
	var retry *statedv1.CommitResponse
	err = daemontest.WhileUnavailable(ctx, func() (err error) {
		retry, err = leader.Commit(ctx, commit(s1.GetSessionId(), 1, "a"))
		return err
	})
	if err != nil || !retry.GetDuplicate() || retry.GetIndex() != first.GetIndex() {
		t.Fatalf("retry = %v, %v; want a duplicate of index %d", retry, err, first.GetIndex())
	}
	err = daemontest.WhileUnavailable(ctx, func() error { _, err := follower.Commit(ctx, commit(s1.GetSessionId(), 1, "other")); return err })
	wantStatus(t, err, codes.FailedPrecondition, "was applied at index")
	if d := sessionDetail(t, err); d.GetReason() != statedv1.SessionRefused_REASON_SEQUENCE_REUSED || d.GetHighestSequence() != 1 || d.GetLane() != 2 {
		t.Fatalf("detail = %v", d)
	}

	s2 := open(leader)
	err = daemontest.WhileUnavailable(ctx, func() error { _, err := follower.Commit(ctx, commit(s1.GetSessionId(), 2, "zombie")); return err })
	wantStatus(t, err, codes.FailedPrecondition, "is fenced")
	if d := sessionDetail(t, err); d.GetReason() != statedv1.SessionRefused_REASON_SUPERSEDED || d.GetCurrentSessionId() != s2.GetSessionId() || d.GetClientId() != "svc" {
		t.Fatalf("detail = %v", d)
	}
	if r := get(t, leader, "ns", "zombie"); r.GetFound() {
		t.Fatal("the fenced commit applied")
	}
	_, err = follower.OpenSession(ctx, &statedv1.OpenSessionRequest{})
	wantStatus(t, err, codes.InvalidArgument, "client_id: empty")
}
