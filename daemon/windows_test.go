package daemon_test

import (
	"testing"
	"time"

	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestWindowsOfIdleSourcesCloseWithoutFurtherCommits checks the leader's
// window tick: once every source has been silent for the idle timeout, the
// namespace's watermark follows the sources' greatest one and the window
// that the laggard held open closes, with no commit from the application.
func TestWindowsOfIdleSourcesCloseWithoutFurtherCommits(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	conn := dial(t, "unix://"+d.SocketPath())
	state, windows := statedv1.NewStateClient(conn), statedv1.NewWindowsClient(conn)
	ctx := testContext(t)
	zero := int64(0)
	if _, err := windows.Define(ctx, &statedv1.DefineWindowsRequest{Spec: &statedv1.WindowSpec{
		Namespace: "clicks", Shape: statedv1.WindowShape_WINDOW_SHAPE_TUMBLING, SizeMs: 60_000,
		GraceMs: &zero, MaxOutOfOrderMs: &zero, IdleTimeoutMs: 1000,
		Aggregate: statedv1.WindowAggregate_WINDOW_AGGREGATE_COUNT,
		Emit:      statedv1.WindowEmit_WINDOW_EMIT_FINAL, Late: statedv1.LatePolicy_LATE_POLICY_DROP,
	}}); err != nil {
		t.Fatal(err)
	}
	// Source p0 is at 1 s, p1 at 200 s: the namespace's watermark is p0's,
	// and ann's window [0, 60 s) stays open while p0 counts.
	resp, err := state.Commit(ctx, &statedv1.CommitRequest{WindowAdds: []*statedv1.WindowAdd{
		{Namespace: "clicks", Source: "p0", Key: []byte("ann"), EventTimeMs: 1_000},
		{Namespace: "clicks", Source: "p1", Key: []byte("bob"), EventTimeMs: 200_000},
	}})
	if err != nil || len(resp.GetEmissions()) != 0 {
		t.Fatalf("commit = %v, %v; want no emission yet", resp, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := windows.Emissions(ctx, &statedv1.ReadEmissionsRequest{Namespace: "clicks"})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.GetEmissions()) > 0 {
			e := out.GetEmissions()[0]
			if len(out.GetEmissions()) != 1 || string(e.GetKey()) != "ann" || e.GetEndMs() != 60_000 || e.GetWatermark() != 200_000 {
				t.Fatalf("emissions = %v, want ann's window closed at watermark 200000", out.GetEmissions())
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("ann's window did not close within 15 s of its sources going idle (1 s idle timeout)")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
