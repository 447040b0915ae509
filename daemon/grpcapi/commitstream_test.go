package grpcapi_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon/grpcapi"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

func streamRequest(id uint64, commits ...*statedv1.CommitRequest) *statedv1.CommitStreamRequest {
	return &statedv1.CommitStreamRequest{Id: id, Batch: &statedv1.CommitBatchRequest{Commits: commits}}
}

func putCommit(ns, key string) *statedv1.CommitRequest {
	return &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{put(ns, key, "v")}}
}

// TestCommitStreamServesEachRequestAsACommitBatchCall: each request of a
// CommitStream is answered with its id as a CommitBatch call would be:
// each commit with its own outcome (one refused, naming the field, leaves
// the other applied), a request refused as a whole with the call's error,
// and a request with a timeout that has run out with DEADLINE_EXCEEDED;
// the stream serves the next request after each, and ends without an
// error when the client closes its side.
func TestCommitStreamServesEachRequestAsACommitBatchCall(t *testing.T) {
	t.Parallel()
	_, c := startClient(t)
	ctx := testContext(t)
	s, err := c.CommitStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip := func(req *statedv1.CommitStreamRequest) *statedv1.CommitStreamResponse {
		t.Helper()
		if err := s.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetId() != req.GetId() {
			t.Fatalf("answer with id %d to request %d", resp.GetId(), req.GetId())
		}
		return resp
	}

	resp := roundTrip(streamRequest(7, putCommit("ns", "a"), putCommit("", "b")))
	res := resp.GetBatch().GetResults()
	if resp.GetError() != nil || len(res) != 2 {
		t.Fatalf("request 7: %v", resp)
	}
	if res[0].GetError() != nil || res[0].GetResponse().GetIndex() == 0 {
		t.Fatalf("the good commit: %v", res[0])
	}
	if e := res[1].GetError(); codes.Code(e.GetCode()) != codes.InvalidArgument || !containsAll(e.GetMessage(), "namespace") {
		t.Fatalf("the commit without a namespace: %v, want INVALID_ARGUMENT naming the field", e)
	}
	if got := get(t, c, "ns", "a"); !got.GetFound() {
		t.Fatal("the good commit of request 7 was not applied")
	}

	many := make([]*statedv1.CommitRequest, grpcapi.MaxCommitsPerBatch+1)
	for i := range many {
		many[i] = putCommit("ns", "many")
	}
	resp = roundTrip(streamRequest(8, many...))
	if e := resp.GetError(); resp.GetBatch() != nil || codes.Code(e.GetCode()) != codes.InvalidArgument || !containsAll(e.GetMessage(), "commits", "1024") {
		t.Fatalf("request 8 of %d commits: %v, want the call's INVALID_ARGUMENT naming commits", len(many), resp)
	}
	if got := get(t, c, "ns", "many"); got.GetFound() {
		t.Fatal("a request refused as a whole applied a commit")
	}

	late := streamRequest(9, putCommit("ns", "late"))
	late.TimeoutMicros = 1
	resp = roundTrip(late)
	code := codes.Code(resp.GetError().GetCode())
	if rs := resp.GetBatch().GetResults(); len(rs) == 1 {
		code = codes.Code(rs[0].GetError().GetCode())
	}
	if code != codes.DeadlineExceeded {
		t.Fatalf("request 9, whose 1 µs timeout ran out: %v, want DEADLINE_EXCEEDED", resp)
	}

	resp = roundTrip(streamRequest(10, putCommit("ns", "after")))
	if rs := resp.GetBatch().GetResults(); len(rs) != 1 || rs[0].GetError() != nil {
		t.Fatalf("request 10: %v", resp)
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("after the client closed its side: %v, want the stream's end (io.EOF)", err)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestDrainAnswersTheRequestInServiceThenEndsTheStream: a server that
// drains (as the daemon does before its graceful stop) answers the
// request it is serving, then ends the stream with UNAVAILABLE, and ends
// at once the idle streams and those opened later, so that the graceful
// stop does not wait for clients to hang up.
func TestDrainAnswersTheRequestInServiceThenEndsTheStream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, api, c := serveHeld(t, ctx)

	busy, err := c.CommitStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	idle, err := c.CommitStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := busy.Send(streamRequest(1, putCommit("ns", "held"))); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); store.arrived.Load() != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the request did not reach the store")
		}
	}
	api.Drain()
	if _, err := idle.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("an idle stream after Drain: %v, want UNAVAILABLE", err)
	}
	later, err := c.CommitStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := later.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("a stream opened after Drain: %v, want UNAVAILABLE", err)
	}
	close(store.held)
	resp, err := busy.Recv()
	if err != nil {
		t.Fatalf("the request in service when the server drained was not answered: %v", err)
	}
	if rs := resp.GetBatch().GetResults(); resp.GetId() != 1 || len(rs) != 1 || rs[0].GetError() != nil {
		t.Fatalf("the request in service: %v", resp)
	}
	if _, err := busy.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("the busy stream after its answer: %v, want UNAVAILABLE", err)
	}
	if got := get(t, c, "ns", "held"); !got.GetFound() {
		t.Fatal("the answered commit is not in the state")
	}
}
