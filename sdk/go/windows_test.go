package stated_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon/daemontest"
	stated "github.com/statedhq/stated/sdk/go"
)

// These tests run the window API against a real daemon.

func dialDaemon(t *testing.T) *stated.Client {
	t.Helper()
	d := daemontest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := stated.Dial(ctx, d.SocketPath(), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxFor(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func ms(v int64) time.Time { return time.UnixMilli(v) }

func clicksSpec() stated.WindowSpec {
	return stated.WindowSpec{
		Namespace: "clicks", Shape: stated.Tumbling, Size: time.Minute, Grace: 10 * time.Second,
		Aggregate: stated.Count, Emit: stated.EmitFinal, Late: stated.LateReturn,
	}
}

func TestWindowsAddCloseByWatermarkRedeliverFromTheOutboxAndAckInALaterTxn(t *testing.T) {
	t.Parallel()
	c := dialDaemon(t)
	ctx := ctxFor(t)
	if err := c.DefineWindows(ctx, clicksSpec()); err != nil {
		t.Fatal(err)
	}
	// Defining it again at the next start of the service is harmless.
	if err := c.DefineWindows(ctx, clicksSpec()); err != nil {
		t.Fatalf("identical redefinition: %v", err)
	}

	res, err := c.Update(ctx, func(t *stated.Txn) error {
		t.AddWindow("clicks", []byte("ann"), ms(1_000), stated.NoValue(), stated.FromSource("clicks/0"))
		t.AddWindow("clicks", []byte("ann"), ms(2_000), stated.NoValue(), stated.FromSource("clicks/0"))
		t.AddWindow("clicks", []byte("bob"), ms(65_000), stated.NoValue(), stated.FromSource("clicks/0"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Adds) != 3 || len(res.Emissions) != 0 {
		t.Fatalf("result = %+v, want three on-time adds and no emission", res)
	}
	for i, a := range res.Adds {
		if a.Late || a.Returned {
			t.Errorf("add %d = %+v, want on time", i, a)
		}
	}

	// The source's hint passes ann's window's end + grace (70 s).
	res, err = c.Update(ctx, func(t *stated.Txn) error {
		t.AdvanceWatermark("clicks", "clicks/0", ms(70_000))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Emissions) != 1 {
		t.Fatalf("emissions = %+v, want ann's window", res.Emissions)
	}
	e := res.Emissions[0]
	if e.Namespace != "clicks" || e.ID != 1 || e.Kind != stated.EmissionFinal || string(e.Key) != "ann" ||
		!e.Start.Equal(ms(0)) || !e.End.Equal(ms(60_000)) || e.Count != 2 || !e.Watermark.Equal(ms(70_000)) {
		t.Fatalf("emission = %+v", e)
	}

	// A processor that crashed now finds it again in the outbox.
	pending, err := c.Emissions(ctx, "clicks", 0, 0)
	if err != nil || len(pending) != 1 || !reflect.DeepEqual(pending[0], e) {
		t.Fatalf("outbox = %+v, %v; want %+v", pending, err, e)
	}
	ws, err := c.Windows(ctx, "clicks", []byte("ann"), time.Time{}, time.Time{})
	if err != nil || len(ws) != 1 || !ws[0].Closed || ws[0].Count != 2 || !ws[0].Close.Equal(ms(70_000)) {
		t.Fatalf("ann's windows = %+v, %v; want the closed, retained window", ws, err)
	}
	var open []string
	for w, err := range c.OpenWindows(ctx, "clicks") {
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, string(w.Key))
	}
	if !reflect.DeepEqual(open, []string{"bob"}) {
		t.Fatalf("open windows = %v, want bob's", open)
	}

	// The application writes its output and acknowledges, atomically.
	if _, err := c.Update(ctx, func(t *stated.Txn) error {
		t.Put("per-minute", []byte("ann/0"), []byte("2"))
		t.Ack(pending...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if pending, err := c.Emissions(ctx, "clicks", 0, 0); err != nil || len(pending) != 0 {
		t.Fatalf("outbox after the ack = %+v, %v", pending, err)
	}
	_, err = c.Update(ctx, func(t *stated.Txn) error { t.Ack(e); return nil })
	if !errors.Is(err, stated.ErrInvalidArgument) || !strings.Contains(err.Error(), "acks[0].id: emission 1 of \"clicks\" is not pending") {
		t.Fatalf("acking twice: %v, want ErrInvalidArgument naming acks[0].id", err)
	}

	all, err := c.WindowStatus(ctx)
	if err != nil || len(all) != 1 {
		t.Fatalf("status = %+v, %v", all, err)
	}
	st := all[0]
	if !reflect.DeepEqual(st.Spec, withDefaults(clicksSpec())) || !st.HasWatermark || !st.Watermark.Equal(ms(70_000)) ||
		st.OpenWindows != 1 || st.Pending != 0 || st.Adds != 3 || len(st.Sources) != 1 || st.Sources[0].Source != "clicks/0" {
		t.Fatalf("status = %+v", st)
	}
}

// withDefaults is s as the daemon fills it in.
func withDefaults(s stated.WindowSpec) stated.WindowSpec {
	if s.Retention == 0 {
		s.Retention = s.Size + s.Gap + s.Grace
	}
	if s.IdleTimeout == 0 {
		s.IdleTimeout = time.Minute
	}
	if s.MaxPendingEmissions == 0 {
		s.MaxPendingEmissions = 100_000
	}
	return s
}

func TestWindowsALateRecordIsReturnedWithItsValue(t *testing.T) {
	t.Parallel()
	c := dialDaemon(t)
	ctx := ctxFor(t)
	spec := clicksSpec()
	spec.Namespace, spec.Aggregate = "last-page", stated.Last
	if err := c.DefineWindows(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Update(ctx, func(t *stated.Txn) error {
		t.AdvanceWatermark("last-page", "", ms(200_000))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	res, err := c.Update(ctx, func(t *stated.Txn) error {
		t.AddWindow("last-page", []byte("ann"), ms(5_000), stated.BytesValue([]byte("/cart")))
		t.AddWindow("last-page", []byte("ann"), ms(250_000), stated.BytesValue([]byte("/home")))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := stated.AddResult{Late: true, Returned: true, Namespace: "last-page", Key: []byte("ann"), EventTime: ms(5_000),
		Value: stated.WindowValue{Bytes: []byte("/cart")}}
	if len(res.Adds) != 2 || !reflect.DeepEqual(res.Adds[0], want) || res.Adds[1].Late {
		t.Fatalf("adds = %+v, want the first late and returned with its record", res.Adds)
	}
	st, err := c.WindowStatus(ctx)
	if err != nil || st[0].LateReturned != 1 || st[0].LateDropped != 0 {
		t.Fatalf("status = %+v, %v; want one late record returned", st, err)
	}
}

func TestWindowsAggregatesAndTimersCarryTheirValues(t *testing.T) {
	t.Parallel()
	c := dialDaemon(t)
	ctx := ctxFor(t)
	for _, s := range []stated.WindowSpec{
		{Namespace: "revenue", Shape: stated.Hopping, Size: 2 * time.Minute, Advance: time.Minute, Aggregate: stated.SumInt},
		{Namespace: "latency", Shape: stated.Tumbling, Size: time.Minute, Aggregate: stated.MaxFloat},
		{Namespace: "pages", Shape: stated.Session, Gap: 30 * time.Second, Aggregate: stated.CollectList, MaxListValues: 2},
	} {
		s.Emit, s.Late = stated.EmitFinal, stated.LateDrop
		if err := c.DefineWindows(ctx, s); err != nil {
			t.Fatalf("define %s: %v", s.Namespace, err)
		}
	}
	if _, err := c.Update(ctx, func(t *stated.Txn) error {
		t.AddWindow("revenue", []byte("shop"), ms(10_000), stated.Int(250))
		t.AddWindow("revenue", []byte("shop"), ms(70_000), stated.Int(100))
		t.AddWindow("latency", []byte("api"), ms(1_000), stated.Float(0.25))
		t.AddWindow("latency", []byte("api"), ms(2_000), stated.Float(1.5))
		for i, p := range []string{"/a", "/b", "/c"} {
			t.AddWindow("pages", []byte("ann"), ms(int64(i)*10_000), stated.BytesValue([]byte(p)))
		}
		t.RegisterTimer("pages", []byte("ann"), ms(50_000))
		t.RegisterTimer("pages", []byte("bob"), ms(55_000))
		t.DeleteTimer("pages", []byte("bob"), ms(55_000))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	res, err := c.Update(ctx, func(t *stated.Txn) error {
		for _, ns := range []string{"revenue", "latency", "pages"} {
			t.AdvanceWatermark(ns, "", ms(120_000))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	type got struct {
		ns, kind   string
		start, end int64
		count, i   int64
		f          float64
		values     string
		truncated  bool
	}
	var gots []got
	for _, e := range res.Emissions {
		var vs []string
		for _, v := range e.Values {
			vs = append(vs, string(v))
		}
		gots = append(gots, got{e.Namespace, e.Kind.String(), e.Start.UnixMilli(), e.End.UnixMilli(), e.Count, e.Int, e.Float, strings.Join(vs, ","), e.Truncated})
	}
	want := []got{
		// Hopping windows start at 0 or later: [0, 120 s) holds both
		// records and closes at 120 s; [60 s, 180 s) stays open.
		{"revenue", "final", 0, 120_000, 2, 350, 0, "", false},
		{"latency", "final", 0, 60_000, 2, 0, 1.5, "", false},
		// The session [0, 20 s] closes at 20 s + 30 s gap = 50 s, before the
		// timer at 50 s fires (windows close before timers).
		{"pages", "final", 0, 20_001, 3, 0, 0, "/a,/b", true},
		{"pages", "timer", 50_000, 50_000, 0, 0, 0, "", false},
	}
	if len(gots) != len(want) {
		t.Fatalf("emissions = %+v\nwant %+v", gots, want)
	}
	for _, w := range want {
		found := false
		for _, g := range gots {
			found = found || reflect.DeepEqual(g, w)
		}
		if !found {
			t.Errorf("missing emission %+v in %+v", w, gots)
		}
	}
}

func TestWindowsAFullOutboxIsErrOutboxFull(t *testing.T) {
	t.Parallel()
	c := dialDaemon(t)
	ctx := ctxFor(t)
	spec := clicksSpec()
	spec.Grace, spec.MaxPendingEmissions = 0, 1
	if err := c.DefineWindows(ctx, spec); err != nil {
		t.Fatal(err)
	}
	res, err := c.Update(ctx, func(t *stated.Txn) error {
		t.AddWindow("clicks", []byte("ann"), ms(1), stated.NoValue())
		t.AdvanceWatermark("clicks", "", ms(60_000))
		return nil
	})
	if err != nil || len(res.Emissions) != 1 {
		t.Fatalf("commit = %+v, %v", res, err)
	}
	_, err = c.Update(ctx, func(t *stated.Txn) error {
		t.AddWindow("clicks", []byte("bob"), ms(61_000), stated.NoValue())
		return nil
	})
	if !errors.Is(err, stated.ErrOutboxFull) || !errors.Is(err, stated.ErrResourceExhausted) {
		t.Fatalf("err = %v, want ErrOutboxFull", err)
	}
	if _, err := c.Update(ctx, func(t *stated.Txn) error { t.Ack(res.Emissions...); return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Update(ctx, func(t *stated.Txn) error {
		t.AddWindow("clicks", []byte("bob"), ms(61_000), stated.NoValue())
		return nil
	}); err != nil {
		t.Fatalf("after the ack: %v", err)
	}
}

func TestDefineWindowsRefusesBadSpecsNamingTheField(t *testing.T) {
	t.Parallel()
	c := dialDaemon(t)
	ctx := ctxFor(t)
	if err := c.DefineWindows(ctx, clicksSpec()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*stated.WindowSpec)
		msg  string
	}{
		{"a size that is not whole milliseconds", func(s *stated.WindowSpec) { s.Namespace, s.Size = "x", 1500*time.Microsecond },
			"spec.size_ms: 1.5ms is not a whole number of milliseconds"},
		{"no size", func(s *stated.WindowSpec) { s.Namespace, s.Size = "x", 0 }, "spec.size_ms: must be positive"},
		{"negative grace", func(s *stated.WindowSpec) { s.Namespace, s.Grace = "x", -time.Second }, "spec.grace_ms: must not be negative"},
		{"advance above size", func(s *stated.WindowSpec) { s.Namespace, s.Shape, s.Advance = "x", stated.Hopping, 2*time.Minute }, "spec.advance_ms"},
		{"retention below size + grace", func(s *stated.WindowSpec) { s.Namespace, s.Retention = "x", time.Second }, "spec.retention_ms: 1000 ms is below size + grace = 70000 ms"},
		{"a different spec for clicks", func(s *stated.WindowSpec) { s.Size = 30 * time.Second },
			`spec.size_ms: redefining window namespace "clicks": size_ms is 60000, not 30000`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := clicksSpec()
			tc.edit(&s)
			err := c.DefineWindows(ctx, s)
			if !errors.Is(err, stated.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want ErrInvalidArgument containing %q", err, tc.msg)
			}
		})
	}
	all, err := c.WindowStatus(ctx)
	if err != nil || len(all) != 1 || all[0].Spec.Size != time.Minute {
		t.Fatalf("status = %+v, %v; want clicks alone, unchanged", all, err)
	}
}

// The wire's to_ms 0 means no upper bound; a to at the Unix epoch is an
// empty range, not an unbounded one.
func TestWindowsToAtTheEpochIsAnEmptyRange(t *testing.T) {
	t.Parallel()
	c := dialDaemon(t)
	ctx := ctxFor(t)
	if err := c.DefineWindows(ctx, clicksSpec()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Update(ctx, func(t *stated.Txn) error {
		t.AddWindow("clicks", []byte("ann"), ms(1_000), stated.NoValue())
		t.AddWindow("clicks", []byte("ann"), ms(61_000), stated.NoValue())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ws, err := c.Windows(ctx, "clicks", []byte("ann"), time.Time{}, ms(0))
	if err != nil || len(ws) != 0 {
		t.Fatalf("windows starting in [0, 0) = %+v, %v; want none", ws, err)
	}
	if _, err := c.Windows(ctx, "clicks", []byte("ann"), ms(60_000), ms(0)); !errors.Is(err, stated.ErrInvalidArgument) || !strings.Contains(err.Error(), "to_ms") {
		t.Fatalf("windows starting in [60 s, 0): %v, want ErrInvalidArgument naming to_ms", err)
	}
	if _, err := c.Windows(ctx, "nope", []byte("ann"), time.Time{}, ms(0)); !errors.Is(err, stated.ErrInvalidArgument) {
		t.Fatalf("an undefined namespace with to at the epoch: %v, want ErrInvalidArgument", err)
	}
	if ws, err := c.Windows(ctx, "clicks", []byte("ann"), time.Time{}, ms(60_000)); err != nil || len(ws) != 1 {
		t.Fatalf("windows starting in [0, 60 s) = %+v, %v; want one", ws, err)
	}
}
