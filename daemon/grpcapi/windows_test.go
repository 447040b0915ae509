package grpcapi_test

import (
	"context"
	"math"
	"strconv"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// windowClients dials d's State and Windows services.
func windowClients(t *testing.T, d *daemon.Daemon) (statedv1.StateClient, statedv1.WindowsClient) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+d.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return statedv1.NewStateClient(conn), statedv1.NewWindowsClient(conn)
}

func i64(v int64) *int64 { return &v }

// tumblingCount is a tumbling 60 s window namespace counting records, with
// 10 s grace and no out-of-orderness.
func tumblingCount(ns string) *statedv1.WindowSpec {
	return &statedv1.WindowSpec{
		Namespace: ns, Shape: statedv1.WindowShape_WINDOW_SHAPE_TUMBLING, SizeMs: 60_000,
		GraceMs: i64(10_000), MaxOutOfOrderMs: i64(0),
		Aggregate: statedv1.WindowAggregate_WINDOW_AGGREGATE_COUNT,
		Emit:      statedv1.WindowEmit_WINDOW_EMIT_FINAL, Late: statedv1.LatePolicy_LATE_POLICY_DROP,
	}
}

func define(t *testing.T, w statedv1.WindowsClient, spec *statedv1.WindowSpec) *statedv1.DefineWindowsResponse {
	t.Helper()
	resp, err := w.Define(testContext(t), &statedv1.DefineWindowsRequest{Spec: spec})
	if err != nil {
		t.Fatalf("define %s: %v", spec.GetNamespace(), err)
	}
	return resp
}

func add(ns, key string, tMs int64) *statedv1.WindowAdd {
	return &statedv1.WindowAdd{Namespace: ns, Key: []byte(key), EventTimeMs: tMs}
}

func windowStatus(t *testing.T, w statedv1.WindowsClient) *statedv1.WindowStatusResponse {
	t.Helper()
	st, err := w.Status(testContext(t), &statedv1.WindowStatusRequest{})
	if err != nil {
		t.Fatalf("window status: %v", err)
	}
	st.AppliedIndex = 0 // moves with every entry; the state is what counts
	for _, n := range st.GetNamespaces() {
		for _, s := range n.GetSources() {
			s.LastActiveUnixMillis = 0
		}
	}
	return st
}

func TestWindowsCloseByAHintReturnTheEmissionInTheCommitAndKeepItInTheOutboxUntilAcked(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	s, w := windowClients(t, d)
	ctx := testContext(t)
	if resp := define(t, w, tumblingCount("clicks")); !resp.GetCreated() || resp.GetIndex() == 0 {
		t.Fatalf("define = %v, want created at an index", resp)
	}
	if resp := define(t, w, tumblingCount("clicks")); resp.GetCreated() {
		t.Fatalf("defining it again identically = %v, want created false", resp)
	}

	resp, err := s.Commit(ctx, &statedv1.CommitRequest{WindowAdds: []*statedv1.WindowAdd{
		add("clicks", "ann", 1_000), add("clicks", "ann", 59_999), add("clicks", "bob", 61_000),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetAddResults()) != 3 || len(resp.GetEmissions()) != 0 {
		t.Fatalf("commit = %v, want three add results and no emission", resp)
	}
	for i, r := range resp.GetAddResults() {
		if r.GetStatus() != statedv1.AddStatus_ADD_STATUS_ON_TIME {
			t.Errorf("add %d: %s, want on time", i, r.GetStatus())
		}
	}
	got, err := w.Get(ctx, &statedv1.GetWindowsRequest{Namespace: "clicks", Key: []byte("ann")})
	if err != nil || len(got.GetWindows()) != 1 || got.GetWindows()[0].GetCount() != 2 || got.GetWindows()[0].GetClosed() ||
		got.GetWindows()[0].GetEndMs() != 60_000 || got.GetWindows()[0].GetCloseMs() != 70_000 {
		t.Fatalf("windows of ann = %v, %v; want one open window [0, 60000) of 2 closing at 70000", got, err)
	}

	// The hint moves the watermark to 70 s: ann's window [0, 60 s) closes
	// (end + grace = 70 s), bob's [60 s, 120 s) stays open.
	resp, err = s.Commit(ctx, &statedv1.CommitRequest{WatermarkHints: []*statedv1.WatermarkHint{{Namespace: "clicks", TimeMs: 70_000}}})
	if err != nil {
		t.Fatal(err)
	}
	want := &statedv1.Emission{Namespace: "clicks", Id: 1, Kind: statedv1.EmissionKind_EMISSION_KIND_FINAL, Key: []byte("ann"),
		StartMs: 0, EndMs: 60_000, Count: 2, Watermark: 70_000}
	if len(resp.GetEmissions()) != 1 || !proto.Equal(resp.GetEmissions()[0], want) {
		t.Fatalf("emissions = %v, want %v", resp.GetEmissions(), want)
	}
	outbox, err := w.Emissions(ctx, &statedv1.ReadEmissionsRequest{Namespace: "clicks"})
	if err != nil || len(outbox.GetEmissions()) != 1 || !proto.Equal(outbox.GetEmissions()[0], want) || outbox.GetMore() {
		t.Fatalf("outbox = %v, %v; want the same emission", outbox, err)
	}
	open, err := w.ListOpen(ctx, &statedv1.ListOpenWindowsRequest{Namespace: "clicks"})
	if err != nil || len(open.GetWindows()) != 1 || string(open.GetWindows()[0].GetKey()) != "bob" {
		t.Fatalf("open windows = %v, %v; want bob's only", open, err)
	}

	// The ack goes in a later commit, with what the application did.
	if _, err := s.Commit(ctx, &statedv1.CommitRequest{
		Mutations: []*statedv1.Mutation{put("out", "ann/0", "2")},
		Acks:      []*statedv1.EmissionAck{{Namespace: "clicks", Id: 1}},
	}); err != nil {
		t.Fatal(err)
	}
	outbox, err = w.Emissions(ctx, &statedv1.ReadEmissionsRequest{Namespace: "clicks"})
	if err != nil || len(outbox.GetEmissions()) != 0 {
		t.Fatalf("outbox after the ack = %v, %v; want empty", outbox, err)
	}
	st := windowStatus(t, w)
	if n := st.GetNamespaces(); len(n) != 1 || n[0].GetWatermark() != 70_000 || n[0].GetPending() != 0 || n[0].GetOpenWindows() != 1 || n[0].GetAdds() != 3 {
		t.Fatalf("status = %v", st)
	}
	// Acknowledging it again refuses the whole commit.
	_, err = s.Commit(ctx, &statedv1.CommitRequest{
		Mutations: []*statedv1.Mutation{put("out", "again", "x")},
		Acks:      []*statedv1.EmissionAck{{Namespace: "clicks", Id: 1}},
	})
	wantStatus(t, err, codes.InvalidArgument, "acks[0].id: emission 1 of \"clicks\" is not pending")
	if get(t, s, "out", "again").GetFound() {
		t.Fatal("the refused commit's mutation applied")
	}
}

// TestWindowsBadInputIsRefusedNamingTheFieldAndChangesNothing runs every
// bad input of issue 12 (and the API's own rules) against a daemon whose
// namespace holds a window and a pending emission, and checks that the
// window state and the keyed state are the same afterwards.
func TestWindowsBadInputIsRefusedNamingTheFieldAndChangesNothing(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	s, w := windowClients(t, d)
	ctx := testContext(t)
	define(t, w, tumblingCount("clicks"))
	mustCommit(t, s, &statedv1.CommitRequest{WindowAdds: []*statedv1.WindowAdd{add("clicks", "ann", 1_000), add("clicks", "bob", 100_000)},
		WatermarkHints: []*statedv1.WatermarkHint{{Namespace: "clicks", TimeMs: 70_000}}})

	spec := func(edit func(*statedv1.WindowSpec)) *statedv1.WindowSpec {
		sp := tumblingCount("new")
		edit(sp)
		return sp
	}
	hopping := func(sp *statedv1.WindowSpec) {
		sp.Shape, sp.SizeMs, sp.AdvanceMs = statedv1.WindowShape_WINDOW_SHAPE_HOPPING, 60_000, 10_000
	}
	defines := []struct {
		name string
		spec *statedv1.WindowSpec
		msg  string
	}{
		{"zero size", spec(func(sp *statedv1.WindowSpec) { sp.SizeMs = 0 }), "spec.size_ms: must be positive, got 0"},
		{"negative size", spec(func(sp *statedv1.WindowSpec) { sp.SizeMs = -5 }), "spec.size_ms: must be positive, got -5"},
		{"zero gap", spec(func(sp *statedv1.WindowSpec) {
			sp.Shape, sp.SizeMs, sp.GapMs = statedv1.WindowShape_WINDOW_SHAPE_SESSION, 0, 0
		}), "spec.gap_ms: must be positive"},
		{"negative gap", spec(func(sp *statedv1.WindowSpec) {
			sp.Shape, sp.SizeMs, sp.GapMs = statedv1.WindowShape_WINDOW_SHAPE_SESSION, 0, -1
		}), "spec.gap_ms: must be positive"},
		{"negative grace", spec(func(sp *statedv1.WindowSpec) { sp.GraceMs = i64(-1) }), "spec.grace_ms: must not be negative"},
		{"grace unset", spec(func(sp *statedv1.WindowSpec) { sp.GraceMs = nil }), "spec.grace_ms: required; 0 means no lateness"},
		{"out-of-order unset", spec(func(sp *statedv1.WindowSpec) { sp.MaxOutOfOrderMs = nil }), "spec.max_out_of_order_ms: required; 0 means no lateness"},
		{"advance above size", spec(func(sp *statedv1.WindowSpec) { hopping(sp); sp.AdvanceMs = 61_000 }), "spec.advance_ms: 61000 ms is larger than size_ms"},
		{"retention below size + grace", spec(func(sp *statedv1.WindowSpec) { sp.RetentionMs = 1000 }), "spec.retention_ms: 1000 ms is below size + grace = 70000 ms"},
		{"opaque hopping", spec(func(sp *statedv1.WindowSpec) {
			hopping(sp)
			sp.Aggregate = statedv1.WindowAggregate_WINDOW_AGGREGATE_OPAQUE
		}), "spec.aggregate: opaque works with tumbling windows only"},
		{"list without a bound", spec(func(sp *statedv1.WindowSpec) { sp.Aggregate = statedv1.WindowAggregate_WINDOW_AGGREGATE_LIST }), "spec.max_list_values"},
		{"unspecified emit", spec(func(sp *statedv1.WindowSpec) { sp.Emit = 0 }), "spec.emit"},
		{"no namespace", spec(func(sp *statedv1.WindowSpec) { sp.Namespace = "" }), "spec.namespace"},
		{"redefined differently", func() *statedv1.WindowSpec { sp := tumblingCount("clicks"); sp.SizeMs = 30_000; return sp }(),
			`spec.size_ms: redefining window namespace "clicks": size_ms is 60000, not 30000`},
	}
	commits := []struct {
		name string
		req  *statedv1.CommitRequest
		msg  string
	}{
		{"add to an undefined namespace", &statedv1.CommitRequest{WindowAdds: []*statedv1.WindowAdd{add("clicks", "ann", 90_000), add("nope", "ann", 1)}},
			`window_adds[1].namespace: window namespace "nope" is not defined`},
		{"negative event time", &statedv1.CommitRequest{WindowAdds: []*statedv1.WindowAdd{add("clicks", "ann", -1)}}, "window_adds[0].event_time_ms: -1 is outside"},
		{"event time past 2^53-1", &statedv1.CommitRequest{WindowAdds: []*statedv1.WindowAdd{add("clicks", "ann", 1<<53)}}, "window_adds[0].event_time_ms"},
		{"empty key", &statedv1.CommitRequest{WindowAdds: []*statedv1.WindowAdd{add("clicks", "", 1)}}, "window_adds[0].key: empty"},
		{"NaN", &statedv1.CommitRequest{WindowAdds: []*statedv1.WindowAdd{{Namespace: "clicks", Key: []byte("k"), EventTimeMs: 90_000, FloatValue: math.NaN()}}},
			"window_adds[0].float_value: NaN is not a finite number"},
		{"hint past 2^53-1", &statedv1.CommitRequest{WatermarkHints: []*statedv1.WatermarkHint{{Namespace: "clicks", TimeMs: math.MaxInt64}}}, "watermark_hints[0].time_ms"},
		{"hint to an undefined namespace", &statedv1.CommitRequest{WatermarkHints: []*statedv1.WatermarkHint{{Namespace: "nope", TimeMs: 1}}}, "watermark_hints[0].namespace"},
		{"ack of an emission never emitted", &statedv1.CommitRequest{Acks: []*statedv1.EmissionAck{{Namespace: "clicks", Id: 17}}},
			`acks[0].id: emission 17 of "clicks" is not pending (never emitted or already acknowledged)`},
		{"ack of id 0", &statedv1.CommitRequest{Acks: []*statedv1.EmissionAck{{Namespace: "clicks", Id: 0}}}, "acks[0].id: 0; emission ids start at 1"},
		{"the same ack twice", &statedv1.CommitRequest{Acks: []*statedv1.EmissionAck{{Namespace: "clicks", Id: 1}, {Namespace: "clicks", Id: 1}}}, "acks[1]: duplicate of acks[0]"},
		{"timer without a key", &statedv1.CommitRequest{Timers: []*statedv1.TimerOp{{Namespace: "clicks", TimeMs: 5}}}, "timers[0].key: empty"},
		{"timer before 0", &statedv1.CommitRequest{Timers: []*statedv1.TimerOp{{Namespace: "clicks", Key: []byte("k"), TimeMs: -3}}}, "timers[0].time_ms"},
	}

	before := windowStatus(t, w)
	if n := before.GetNamespaces(); len(n) != 1 || n[0].GetPending() != 1 || n[0].GetOpenWindows() != 1 {
		t.Fatalf("setup: status = %v, want one pending emission and one open window", before)
	}
	for _, tc := range defines {
		t.Run("define/"+tc.name, func(t *testing.T) {
			_, err := w.Define(ctx, &statedv1.DefineWindowsRequest{Spec: tc.spec})
			wantStatus(t, err, codes.InvalidArgument, tc.msg)
		})
	}
	for _, tc := range commits {
		t.Run("commit/"+tc.name, func(t *testing.T) {
			// Every refused commit carries a keyed write too, which must not
			// apply either.
			tc.req.Mutations = []*statedv1.Mutation{put("out", tc.name, "x")}
			_, err := s.Commit(ctx, tc.req)
			wantStatus(t, err, codes.InvalidArgument, tc.msg)
			if get(t, s, "out", tc.name).GetFound() {
				t.Fatal("the refused commit's mutation applied")
			}
		})
	}
	if after := windowStatus(t, w); !proto.Equal(before, after) {
		t.Fatalf("window state changed:\nbefore %v\nafter  %v", before, after)
	}
	got, err := w.Get(ctx, &statedv1.GetWindowsRequest{Namespace: "clicks", Key: []byte("ann")})
	if err != nil || len(got.GetWindows()) != 1 || got.GetWindows()[0].GetCount() != 1 {
		t.Fatalf("ann's windows = %v, %v; want the one window of 1 record", got, err)
	}
	for _, r := range []struct {
		name string
		call func() error
		msg  string
	}{
		{"get of an undefined namespace", func() error {
			_, err := w.Get(ctx, &statedv1.GetWindowsRequest{Namespace: "nope", Key: []byte("k")})
			return err
		}, `window namespace "nope" is not defined`},
		{"get without a key", func() error {
			_, err := w.Get(ctx, &statedv1.GetWindowsRequest{Namespace: "clicks"})
			return err
		}, "key: empty"},
		{"get with to before from", func() error {
			_, err := w.Get(ctx, &statedv1.GetWindowsRequest{Namespace: "clicks", Key: []byte("k"), FromMs: 10, ToMs: 5})
			return err
		}, "to_ms: 5 is before from_ms 10"},
		{"emissions page too large", func() error {
			_, err := w.Emissions(ctx, &statedv1.ReadEmissionsRequest{Namespace: "clicks", Limit: 10_001})
			return err
		}, "limit: 10001, limit 10000"},
		{"status of an undefined namespace", func() error {
			_, err := w.Status(ctx, &statedv1.WindowStatusRequest{Namespace: "nope"})
			return err
		}, `namespace: window namespace "nope" is not defined`},
	} {
		t.Run("read/"+r.name, func(t *testing.T) { wantStatus(t, r.call(), codes.InvalidArgument, r.msg) })
	}
}

func TestWindowsDefineThroughAFollowerIsForwardedAndLinearizableReadsToo(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 3)
	_, leaderW := windowClients(t, nodes[0])
	fs, followerW := windowClients(t, nodes[2])
	ctx := testContext(t)
	resp := define(t, followerW, tumblingCount("clicks"))
	if !resp.GetCreated() {
		t.Fatalf("define through the follower = %v", resp)
	}
	st, err := leaderW.Status(ctx, &statedv1.WindowStatusRequest{Namespace: "clicks"})
	if err != nil || len(st.GetNamespaces()) != 1 || st.GetNamespaces()[0].GetSpec().GetRetentionMs() != 70_000 {
		t.Fatalf("leader's status = %v, %v; want clicks with its derived retention", st, err)
	}
	// A different spec through the follower is refused by the leader, and
	// the refusal comes back unchanged.
	other := tumblingCount("clicks")
	other.GraceMs = i64(0)
	_, err = followerW.Define(ctx, &statedv1.DefineWindowsRequest{Spec: other})
	wantStatus(t, err, codes.InvalidArgument, `spec.grace_ms: redefining window namespace "clicks": grace_ms is 10000, not 0`)

	// A commit through the follower gets the leader's add results and
	// emissions back.
	cr, err := fs.Commit(ctx, &statedv1.CommitRequest{WindowAdds: []*statedv1.WindowAdd{add("clicks", "ann", 5)},
		WatermarkHints: []*statedv1.WatermarkHint{{Namespace: "clicks", TimeMs: 70_000}}})
	if err != nil || len(cr.GetAddResults()) != 1 || cr.GetAddResults()[0].GetStatus() != statedv1.AddStatus_ADD_STATUS_ON_TIME ||
		len(cr.GetEmissions()) != 1 || cr.GetEmissions()[0].GetCount() != 1 {
		t.Fatalf("commit through the follower = %v, %v; want an on-time add and ann's window closed", cr, err)
	}
	lin := &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_LINEARIZABLE}
	got, err := followerW.Get(ctx, &statedv1.GetWindowsRequest{Namespace: "clicks", Key: []byte("ann"), Read: lin})
	if err != nil || len(got.GetWindows()) != 1 || got.GetWindows()[0].GetCount() != 1 || !got.GetWindows()[0].GetClosed() {
		t.Fatalf("linearizable get through the follower = %v, %v", got, err)
	}
}

func TestWindowsAFullOutboxRefusesAddsWithResourceExhaustedUntilAcked(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	s, w := windowClients(t, d)
	ctx := testContext(t)
	sp := tumblingCount("clicks")
	sp.GraceMs, sp.MaxPendingEmissions = i64(0), 1
	define(t, w, sp)
	resp, err := s.Commit(ctx, &statedv1.CommitRequest{WindowAdds: []*statedv1.WindowAdd{add("clicks", "ann", 1)},
		WatermarkHints: []*statedv1.WatermarkHint{{Namespace: "clicks", TimeMs: 60_000}}})
	if err != nil || len(resp.GetEmissions()) != 1 {
		t.Fatalf("commit = %v, %v; want one emission", resp, err)
	}
	_, err = s.Commit(ctx, &statedv1.CommitRequest{WindowAdds: []*statedv1.WindowAdd{add("clicks", "bob", 70_000)},
		Mutations: []*statedv1.Mutation{put("out", "k", "v")}})
	wantStatus(t, err, codes.ResourceExhausted, `namespace "clicks" has 1 unacknowledged emissions; acknowledge them first`)
	var detail *statedv1.OutboxFull
	for _, dt := range status.Convert(err).Details() {
		if v, ok := dt.(*statedv1.OutboxFull); ok {
			detail = v
		}
	}
	if detail == nil || detail.GetNamespace() != "clicks" || detail.GetPending() != 1 || detail.GetMaxPendingEmissions() != 1 {
		t.Fatalf("detail = %v", detail)
	}
	if get(t, s, "out", "k").GetFound() {
		t.Fatal("the refused commit's mutation applied")
	}
	// Acknowledging the emission makes room.
	mustCommit(t, s, &statedv1.CommitRequest{Acks: []*statedv1.EmissionAck{{Namespace: "clicks", Id: 1}}})
	resp, err = s.Commit(ctx, &statedv1.CommitRequest{WindowAdds: []*statedv1.WindowAdd{add("clicks", "bob", 70_000)}})
	if err != nil || len(resp.GetAddResults()) != 1 || resp.GetAddResults()[0].GetStatus() != statedv1.AddStatus_ADD_STATUS_ON_TIME {
		t.Fatalf("add after the ack = %v, %v", resp, err)
	}
}

func TestWindowsARetriedCommitIsADuplicateWithoutAddResultsOrEmissions(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	s, w := windowClients(t, d)
	ctx := testContext(t)
	define(t, w, tumblingCount("clicks"))
	sess, err := s.OpenSession(ctx, &statedv1.OpenSessionRequest{ClientId: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	req := &statedv1.CommitRequest{ClientId: "svc", SessionId: sess.GetSessionId(), Lane: 1, Sequence: 1,
		WindowAdds:     []*statedv1.WindowAdd{add("clicks", "ann", 1)},
		WatermarkHints: []*statedv1.WatermarkHint{{Namespace: "clicks", TimeMs: 70_000}}}
	first, err := s.Commit(ctx, req)
	if err != nil || first.GetDuplicate() || len(first.GetAddResults()) != 1 || len(first.GetEmissions()) != 1 {
		t.Fatalf("first = %v, %v; want one add result and one emission", first, err)
	}
	retry, err := s.Commit(ctx, req)
	if err != nil || !retry.GetDuplicate() || retry.GetIndex() != first.GetIndex() || len(retry.GetAddResults()) != 0 || len(retry.GetEmissions()) != 0 {
		t.Fatalf("retry = %v, %v; want a duplicate of index %d without add results or emissions", retry, err, first.GetIndex())
	}
	outbox, err := w.Emissions(ctx, &statedv1.ReadEmissionsRequest{Namespace: "clicks"})
	if err != nil || len(outbox.GetEmissions()) != 1 || !proto.Equal(outbox.GetEmissions()[0], first.GetEmissions()[0]) {
		t.Fatalf("outbox = %v, %v; want the first attempt's emission, once", outbox, err)
	}
	if st := windowStatus(t, w); st.GetNamespaces()[0].GetAdds() != 1 {
		t.Fatalf("adds = %d, want 1: the retry applied again", st.GetNamespaces()[0].GetAdds())
	}
}

func TestWindowsListOpenPagesInKeyAndStartOrder(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	s, w := windowClients(t, d)
	ctx := context.Background()
	sp := tumblingCount("clicks")
	sp.MaxOutOfOrderMs = i64(1_000_000) // every window stays open
	define(t, w, sp)
	var adds []*statedv1.WindowAdd
	for _, k := range []string{"c", "a", "b"} {
		for _, tm := range []int64{120_000, 0, 60_000} {
			adds = append(adds, add("clicks", k, tm))
		}
	}
	mustCommit(t, s, &statedv1.CommitRequest{WindowAdds: adds})
	var got []string
	req := &statedv1.ListOpenWindowsRequest{Namespace: "clicks", Limit: 4}
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatalf("more than 3 pages of 4 for 9 windows: %v", got)
		}
		resp, err := w.ListOpen(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, win := range resp.GetWindows() {
			got = append(got, string(win.GetKey())+"@"+strconv.FormatInt(win.GetStartMs(), 10))
		}
		if !resp.GetMore() {
			break
		}
		last := resp.GetWindows()[len(resp.GetWindows())-1]
		req.AfterKey, req.AfterStartMs = last.GetKey(), last.GetStartMs()
	}
	want := []string{"a@0", "a@60000", "a@120000", "b@0", "b@60000", "b@120000", "c@0", "c@60000", "c@120000"}
	if len(got) != len(want) {
		t.Fatalf("open windows = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("open windows = %v, want %v", got, want)
		}
	}
}

func TestWindowsASumThatWouldOverflowRefusesTheCommitNamingTheAdd(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	s, w := windowClients(t, d)
	ctx := testContext(t)
	sp := tumblingCount("revenue")
	sp.Aggregate = statedv1.WindowAggregate_WINDOW_AGGREGATE_SUM_INT
	define(t, w, sp)
	mustCommit(t, s, &statedv1.CommitRequest{WindowAdds: []*statedv1.WindowAdd{{Namespace: "revenue", Key: []byte("shop"), EventTimeMs: 1, IntValue: math.MaxInt64 - 1}}})
	before := windowStatus(t, w)
	_, err := s.Commit(ctx, &statedv1.CommitRequest{
		Mutations: []*statedv1.Mutation{put("out", "k", "v")},
		WindowAdds: []*statedv1.WindowAdd{
			{Namespace: "revenue", Key: []byte("other"), EventTimeMs: 2, IntValue: 5},
			{Namespace: "revenue", Key: []byte("shop"), EventTimeMs: 2, IntValue: 2},
		}})
	wantStatus(t, err, codes.InvalidArgument, "window_adds[1]")
	wantStatus(t, err, codes.InvalidArgument, "would overflow int64")
	if after := windowStatus(t, w); !proto.Equal(before, after) || get(t, s, "out", "k").GetFound() {
		t.Fatalf("the refused commit applied: before %v after %v", before, after)
	}
	got, err := w.Get(ctx, &statedv1.GetWindowsRequest{Namespace: "revenue", Key: []byte("shop")})
	if err != nil || len(got.GetWindows()) != 1 || got.GetWindows()[0].GetIntValue() != math.MaxInt64-1 {
		t.Fatalf("shop's window = %v, %v; want the sum unchanged", got, err)
	}
}
