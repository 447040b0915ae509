package grpcapi_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// diskFullDetail returns err's DiskFull detail, nil if it has none.
func diskFullDetail(err error) *statedv1.DiskFull {
	for _, d := range status.Convert(err).Details() {
		if df, ok := d.(*statedv1.DiskFull); ok {
			return df
		}
	}
	return nil
}

// TestCommitsBelowMinFreeDiskAreRefusedWithTheDetailAndApplyNothing: a
// leader whose data dir's disk has less free space than MinFreeDiskBytes
// (here 1 PiB, more than any disk has) refuses Commit and every commit of
// a CommitBatch with RESOURCE_EXHAUSTED and a DiskFull detail, through a
// follower too, and applies nothing; reads and session opens go on.
func TestCommitsBelowMinFreeDiskAreRefusedWithTheDetailAndApplyNothing(t *testing.T) {
	t.Parallel()
	const pib = 1 << 50
	nodes := daemontest.StartCluster(t, 2, func(c *daemon.Config) { c.MinFreeDiskBytes = pib })
	ctx := testContext(t)
	// Each call is sent again while it is answered Unavailable: two
	// voters elect again if the leader misses its lease (under -race on
	// a loaded machine), and the refusal is the leader's, whichever it is.
	// lead is the leader when the call was sent, with its term and
	// applied index then.
	var lead *daemon.Daemon
	var term, before uint64
	send := func(call func() error) {
		daemontest.WhileUnavailable(ctx, func() error {
			lead = nil
			for lead == nil && ctx.Err() == nil {
				for _, d := range nodes {
					if d.Store().IsLeader() {
						lead = d
					}
				}
				time.Sleep(10 * time.Millisecond)
			}
			if lead == nil {
				t.Fatal("no leader")
			}
			term, before = lead.Store().Term(), lead.Store().AppliedIndex()
			return call()
		})
	}
	for _, via := range nodes {
		c := dial(t, "unix://"+via.SocketPath())
		var err error
		send(func() error {
			_, err = c.Commit(ctx, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{put("ns", "a", "1")}})
			return err
		})
		wantStatus(t, err, codes.ResourceExhausted, "below --min-free-disk 1073741824.0 MiB")
		df := diskFullDetail(err)
		if df == nil || df.GetNodeId() != lead.NodeID() || df.GetMinFreeBytes() != pib || df.GetFreeBytes() <= 0 || df.GetFreeBytes() >= pib {
			t.Fatalf("commit through %s: detail %v; want the leader's, %s, with its free bytes and 1 PiB", via.NodeID(), df, lead.NodeID())
		}
		var resp *statedv1.CommitBatchResponse
		send(func() error {
			resp, err = c.CommitBatch(ctx, &statedv1.CommitBatchRequest{Commits: []*statedv1.CommitRequest{
				{Mutations: []*statedv1.Mutation{put("ns", "b", "1")}},
				{Mutations: []*statedv1.Mutation{put("ns", "c", "1")}},
			}})
			if err == nil && codes.Code(resp.GetResults()[0].GetError().GetCode()) == codes.Unavailable {
				return status.Error(codes.Unavailable, "the batch's first commit was answered Unavailable")
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range resp.GetResults() {
			e := r.GetError()
			var df statedv1.DiskFull
			found := false
			for _, d := range e.GetDetails() {
				if d.MessageIs(&df) && d.UnmarshalTo(&df) == nil {
					found = true
				}
			}
			if codes.Code(e.GetCode()) != codes.ResourceExhausted || !found {
				t.Errorf("batch commit %d through %s: %v %q (DiskFull detail %v); want RESOURCE_EXHAUSTED with a DiskFull detail", i, via.NodeID(), codes.Code(e.GetCode()), e.GetMessage(), found)
			}
		}
		// A new term's leader appends an entry of its own: the index is
		// compared within one term.
		if after := lead.Store().AppliedIndex(); after != before && lead.Store().Term() == term {
			t.Errorf("through %s: applied index moved from %d to %d", via.NodeID(), before, after)
		}
		for _, key := range []string{"a", "b", "c"} {
			if r := get(t, c, "ns", key); r.GetFound() {
				t.Errorf("key %q was written by a refused commit", key)
			}
		}
		if err := daemontest.WhileUnavailable(ctx, func() error {
			_, err := c.OpenSession(ctx, &statedv1.OpenSessionRequest{ClientId: "reader-" + via.NodeID()})
			return err
		}); err != nil {
			t.Errorf("session open while commits are refused: %v", err)
		}
	}
}
