package grpcapi_test

import (
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// proto/statedv1/stated.proto, WindowSpec: "advance_ms: hopping, 0 <
// advance <= size, and size / advance at most 10000 (the windows a record
// is in)"; README.md, Limits: "a hopping size / advance (the windows each
// record is in) up to 10,000".
//
// The check divided in integers (size_ms / advance_ms > 10000), so size
// 20001 and advance 2 (a ratio of 10000.5) was accepted, and a record then
// landed in 10001 windows.
func TestAHoppingSpecWhoseRecordsLandInMoreThan10000WindowsIsRefused(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	_, w := windowClients(t, d)
	ctx := testContext(t)
	sp := tumblingCount("hop")
	sp.Shape, sp.SizeMs, sp.AdvanceMs = statedv1.WindowShape_WINDOW_SHAPE_HOPPING, 20_001, 2
	_, err := w.Define(ctx, &statedv1.DefineWindowsRequest{Spec: sp})
	wantStatus(t, err, codes.InvalidArgument, "spec.advance_ms")
	st, err := w.Status(ctx, &statedv1.WindowStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(st.GetNamespaces()); n != 0 {
		t.Errorf("the refused definition defined %d namespaces", n)
	}
}
