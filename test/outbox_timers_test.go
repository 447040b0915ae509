package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestTimersOnAFullOutboxAreRefused: max_pending_emissions "caps the
// outbox" (stated.proto, WindowSpec), and adds and hints to a namespace
// whose outbox is full are refused. A commit that registers timers at or
// below the watermark fires them in its own entry, each writing a TIMER
// emission to the outbox; such a commit was not checked against the cap,
// so a client that never acknowledged grew the outbox without bound
// (100,000 emissions with a cap of 10). It is refused like an add.
func TestTimersOnAFullOutboxAreRefused(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	n.start(ctx)
	st, done := n.client()
	defer done()
	conn := n.dial()
	defer conn.Close()
	win := statedv1.NewWindowsClient(conn)

	const maxPending = 10
	spec := &statedv1.WindowSpec{
		Namespace: "t", Shape: statedv1.WindowShape_WINDOW_SHAPE_TUMBLING, SizeMs: 60_000,
		GraceMs: proto.Int64(0), MaxOutOfOrderMs: proto.Int64(0),
		Aggregate: statedv1.WindowAggregate_WINDOW_AGGREGATE_COUNT,
		Emit:      statedv1.WindowEmit_WINDOW_EMIT_FINAL, Late: statedv1.LatePolicy_LATE_POLICY_DROP,
		MaxPendingEmissions: maxPending,
	}
	_, err := win.Define(ctx, &statedv1.DefineWindowsRequest{Spec: spec})
	must(t, err)
	wm := time.Now().Add(-time.Hour).UnixMilli()
	_, err = st.Commit(ctx, &statedv1.CommitRequest{
		WindowAdds: []*statedv1.WindowAdd{{Namespace: "t", Source: "s", Key: []byte("u"), EventTimeMs: wm}},
	})
	must(t, err)

	const perCommit, commits = 10_000, 10
	accepted := 0
	for c := range commits {
		req := &statedv1.CommitRequest{}
		for i := range perCommit {
			req.Timers = append(req.Timers, &statedv1.TimerOp{Namespace: "t",
				Key: fmt.Appendf(nil, "c%d-k%d", c, i), TimeMs: wm - int64(i)})
		}
		_, err := st.Commit(ctx, req)
		if status.Code(err) == codes.ResourceExhausted {
			break
		}
		must(t, err)
		accepted++
	}
	// The cap still binds adds: the outbox is full.
	_, addErr := st.Commit(ctx, &statedv1.CommitRequest{
		WindowAdds: []*statedv1.WindowAdd{{Namespace: "t", Source: "s", Key: []byte("u"), EventTimeMs: wm}},
	})
	ws, err := win.Status(ctx, &statedv1.WindowStatusRequest{})
	must(t, err)
	var pending int64
	for _, ns := range ws.GetNamespaces() {
		if ns.GetSpec().GetNamespace() == "t" {
			pending = ns.GetPending()
		}
	}
	t.Logf("max_pending_emissions %d; timer-only commits accepted on a full outbox: %d of %d; pending emissions now %d; an add now: %v",
		maxPending, accepted, commits, pending, status.Code(addErr))
	// At most one accepted commit's worth may take the outbox past the cap
	// (the docs allow an accepted commit's closings to); the next one,
	// finding it full, must be refused.
	if pending > maxPending+perCommit {
		t.Fatalf("outbox holds %d pending emissions with max_pending_emissions %d: timer commits are not refused on a full outbox (%d accepted)",
			pending, maxPending, accepted)
	}
}
