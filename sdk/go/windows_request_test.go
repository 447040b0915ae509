package stated

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

func TestWindowPartsOfATxnGoInTheRequestInOrderAndCopyCallerBuffers(t *testing.T) {
	c := newFakeClient(&fakeState{})
	key, val := []byte("ann"), []byte("/cart")
	at := time.UnixMilli(1_500).Add(700 * time.Microsecond) // sent truncated to whole milliseconds
	txn := c.Txn().
		AddWindow("pages", key, at, BytesValue(val), FromSource("clicks/3")).
		AddWindow("revenue", key, at, Int(-7)).
		AddWindow("latency", key, at, Float(0.5)).
		AddWindow("clicks", key, at, NoValue()).
		AdvanceWatermark("clicks", "clicks/3", time.UnixMilli(9_000)).
		Ack(Emission{Namespace: "clicks", ID: 4}, Emission{Namespace: "pages", ID: 9}).
		RegisterTimer("clicks", key, time.UnixMilli(10_000)).
		DeleteTimer("clicks", key, time.UnixMilli(11_000))
	copy(key, "XXX")
	copy(val, "YYYYY")
	if n := txn.Len(); n != 9 {
		t.Errorf("Len = %d, want 9", n)
	}
	got := sentRequest(t, txn, &lane{session: 1, next: 1})
	want := &statedv1.CommitRequest{
		ClientId: "test-client", SessionId: 1, Sequence: 1,
		WindowAdds: []*statedv1.WindowAdd{
			{Namespace: "pages", Source: "clicks/3", Key: []byte("ann"), EventTimeMs: 1_500, BytesValue: []byte("/cart")},
			{Namespace: "revenue", Key: []byte("ann"), EventTimeMs: 1_500, IntValue: -7},
			{Namespace: "latency", Key: []byte("ann"), EventTimeMs: 1_500, FloatValue: 0.5},
			{Namespace: "clicks", Key: []byte("ann"), EventTimeMs: 1_500},
		},
		WatermarkHints: []*statedv1.WatermarkHint{{Namespace: "clicks", Source: "clicks/3", TimeMs: 9_000}},
		Acks:           []*statedv1.EmissionAck{{Namespace: "clicks", Id: 4}, {Namespace: "pages", Id: 9}},
		Timers: []*statedv1.TimerOp{
			{Namespace: "clicks", Key: []byte("ann"), TimeMs: 10_000},
			{Namespace: "clicks", Key: []byte("ann"), TimeMs: 11_000, Delete: true},
		},
	}
	if !proto.Equal(got, want) {
		t.Errorf("request\n %v\nwant\n %v", got, want)
	}
}

func TestAddResultsPairTheDaemonsStatusesWithTheTxnsRecords(t *testing.T) {
	c := newFakeClient(&fakeState{})
	txn := c.Txn().
		AddWindow("clicks", []byte("a"), time.UnixMilli(1), NoValue()).
		AddWindow("clicks", []byte("b"), time.UnixMilli(2), Int(5), FromSource("s")).
		AddWindow("clicks", []byte("c"), time.UnixMilli(3), NoValue())
	got := txn.addResults([]*statedv1.AddResult{
		{Status: statedv1.AddStatus_ADD_STATUS_ON_TIME},
		{Status: statedv1.AddStatus_ADD_STATUS_LATE_RETURNED},
		{Status: statedv1.AddStatus_ADD_STATUS_LATE_DROPPED},
	})
	if len(got) != 3 || got[0].Late || !got[1].Late || !got[1].Returned || string(got[1].Key) != "b" ||
		got[1].Value.Int != 5 || got[1].Source != "s" || !got[1].EventTime.Equal(time.UnixMilli(2)) || !got[2].Late || got[2].Returned {
		t.Errorf("add results = %+v", got)
	}
}

func TestWindowSpecDurationsMustBeWholeMilliseconds(t *testing.T) {
	for _, tc := range []struct {
		spec  WindowSpec
		field string
	}{
		{WindowSpec{Size: time.Minute + time.Microsecond}, "spec.size_ms"},
		{WindowSpec{Size: time.Minute, Grace: time.Nanosecond}, "spec.grace_ms"},
		{WindowSpec{Gap: time.Second, IdleTimeout: 1500 * time.Microsecond}, "spec.idle_timeout_ms"},
	} {
		_, err := tc.spec.toWire()
		if err == nil || !strings.Contains(err.Error(), tc.field+": ") {
			t.Errorf("%+v: err = %v, want one naming %s", tc.spec, err, tc.field)
		}
	}
	w, err := WindowSpec{Namespace: "n", Shape: Hopping, Size: time.Minute, Advance: 10 * time.Second, Aggregate: CollectList, MaxListValues: 7,
		Emit: EmitUpdates, Late: LateReturn, Retention: time.Hour, IdleTimeout: time.Second, MaxPendingEmissions: 5}.toWire()
	if err != nil {
		t.Fatal(err)
	}
	want := &statedv1.WindowSpec{Namespace: "n", Shape: statedv1.WindowShape_WINDOW_SHAPE_HOPPING, SizeMs: 60_000, AdvanceMs: 10_000,
		GraceMs: proto.Int64(0), MaxOutOfOrderMs: proto.Int64(0), RetentionMs: 3_600_000, IdleTimeoutMs: 1000,
		Aggregate: statedv1.WindowAggregate_WINDOW_AGGREGATE_LIST, MaxListValues: 7, Emit: statedv1.WindowEmit_WINDOW_EMIT_UPDATES,
		Late: statedv1.LatePolicy_LATE_POLICY_RETURN, MaxPendingEmissions: 5}
	if !proto.Equal(w, want) {
		t.Errorf("wire spec %v\nwant %v", w, want)
	}
}

func TestWindowEnumsMirrorTheWireEnums(t *testing.T) {
	for v, name := range statedv1.WindowAggregate_name {
		if v == 0 {
			continue
		}
		a := Aggregate(v)
		p, ok := ParseAggregate(a.String())
		if !ok || p != a {
			t.Errorf("%s: String %q does not parse back", name, a)
		}
	}
	if len(aggregateNames) != len(statedv1.WindowAggregate_name)-1 {
		t.Errorf("%d aggregates, the wire has %d", len(aggregateNames), len(statedv1.WindowAggregate_name)-1)
	}
	for _, p := range []struct {
		sdk  int
		wire int32
	}{
		{int(Tumbling), int32(statedv1.WindowShape_WINDOW_SHAPE_TUMBLING)}, {int(Hopping), int32(statedv1.WindowShape_WINDOW_SHAPE_HOPPING)},
		{int(Session), int32(statedv1.WindowShape_WINDOW_SHAPE_SESSION)},
		{int(SumInt), int32(statedv1.WindowAggregate_WINDOW_AGGREGATE_SUM_INT)}, {int(CollectList), int32(statedv1.WindowAggregate_WINDOW_AGGREGATE_LIST)},
		{int(Opaque), int32(statedv1.WindowAggregate_WINDOW_AGGREGATE_OPAQUE)},
		{int(EmitUpdates), int32(statedv1.WindowEmit_WINDOW_EMIT_UPDATES)}, {int(LateReturn), int32(statedv1.LatePolicy_LATE_POLICY_RETURN)},
		{int(EmissionTimer), int32(statedv1.EmissionKind_EMISSION_KIND_TIMER)},
	} {
		if p.sdk != int(p.wire) {
			t.Errorf("SDK value %d, wire %d", p.sdk, p.wire)
		}
	}
}

func TestAddWindowTakesTheTxnsDefaultSourceUnlessFromSourceNamesOne(t *testing.T) {
	var txn Txn
	txn.AddWindow("w", []byte("a"), time.UnixMilli(1), NoValue())
	txn.SetDefaultSource("clicks/3")
	txn.AddWindow("w", []byte("b"), time.UnixMilli(2), NoValue())
	txn.AddWindow("w", []byte("c"), time.UnixMilli(3), NoValue(), FromSource(""))
	txn.AddWindow("w", []byte("d"), time.UnixMilli(4), NoValue(), FromSource("clicks/4"))
	var got []string
	for _, a := range txn.windowAdds {
		got = append(got, a.GetSource())
	}
	if want := []string{"", "clicks/3", "", "clicks/4"}; !slices.Equal(got, want) {
		t.Fatalf("sources = %q, want %q", got, want)
	}
}
