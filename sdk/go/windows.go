package stated

import (
	"bytes"
	"context"
	"fmt"
	"iter"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// Window state (see "Windows" in the package documentation): the daemon
// assigns records to event-time windows, closes a window once the
// namespace's watermark passes its end plus its grace, and hands its
// result over as an Emission that stays in the namespace's outbox until a
// Txn acknowledges it. Event times travel as whole milliseconds since the
// Unix epoch (0 to 2^53-1); durations as whole milliseconds.

// WindowShape is how a window namespace cuts event time into windows. The
// values mirror statedv1.WindowShape.
type WindowShape int

const (
	// Tumbling windows are adjacent and of one Size: [0, Size), [Size,
	// 2*Size), ...
	Tumbling WindowShape = 1
	// Hopping windows are of one Size and start every Advance, so they
	// overlap when Advance < Size; a record counts in Size/Advance of them.
	Hopping WindowShape = 2
	// Session windows gather a key's records that are at most Gap apart;
	// a record that bridges two sessions merges them. A session is
	// reported as [first event, last event + 1ms).
	Session WindowShape = 3
)

// String returns "tumbling", "hopping" or "session".
func (s WindowShape) String() string {
	switch s {
	case Tumbling:
		return "tumbling"
	case Hopping:
		return "hopping"
	case Session:
		return "session"
	}
	return "WindowShape(" + strconv.Itoa(int(s)) + ")"
}

// Aggregate is what a window computes over the values added to it. The
// values mirror statedv1.WindowAggregate. Whatever the aggregate, every
// window also counts its records (Window.Count, Emission.Count).
type Aggregate int

const (
	// Count counts records; adds carry NoValue.
	Count Aggregate = 1
	// SumInt sums Int values. A sum that would overflow int64 refuses the
	// commit (ErrInvalidArgument naming the add).
	SumInt Aggregate = 2
	// SumFloat sums Float values.
	SumFloat Aggregate = 3
	// MinInt and MaxInt keep the least and the greatest Int value.
	MinInt Aggregate = 4
	MaxInt Aggregate = 5
	// MinFloat and MaxFloat keep the least and the greatest Float value.
	MinFloat Aggregate = 6
	MaxFloat Aggregate = 7
	// Last keeps the BytesValue of the record with the greatest event
	// time (of equal times, the one added later).
	Last Aggregate = 8
	// CollectList keeps the BytesValues of the first MaxListValues
	// records in event-time order (ties in add order); Truncated says
	// that more arrived.
	CollectList Aggregate = 9
	// Opaque keeps bytes the application computes: each add's BytesValue
	// replaces the window's bytes. Read the current bytes with
	// Client.Windows first. Tumbling windows only, since the daemon cannot
	// combine opaque bytes of hopping slices or merged sessions.
	Opaque Aggregate = 10
)

var aggregateNames = map[Aggregate]string{
	Count: "count", SumInt: "sum-int", SumFloat: "sum-float", MinInt: "min-int", MaxInt: "max-int",
	MinFloat: "min-float", MaxFloat: "max-float", Last: "last", CollectList: "list", Opaque: "opaque",
}

// String returns the aggregate's name as the CLI spells it: "count",
// "sum-int", "sum-float", "min-int", "max-int", "min-float", "max-float",
// "last", "list" or "opaque".
func (a Aggregate) String() string {
	if n, ok := aggregateNames[a]; ok {
		return n
	}
	return "Aggregate(" + strconv.Itoa(int(a)) + ")"
}

// ParseAggregate returns the Aggregate that String names.
func ParseAggregate(s string) (Aggregate, bool) {
	for a, n := range aggregateNames {
		if n == s {
			return a, true
		}
	}
	return 0, false
}

// EmitMode says which emissions a window namespace writes. The values
// mirror statedv1.WindowEmit.
type EmitMode int

const (
	// EmitFinal writes one emission per window, when it closes.
	EmitFinal EmitMode = 1
	// EmitUpdates also writes an update of every window that an on-time
	// add changed (for hopping windows each window of the record; for
	// sessions the merged session).
	EmitUpdates EmitMode = 2
)

// String returns "final" or "updates".
func (m EmitMode) String() string {
	switch m {
	case EmitFinal:
		return "final"
	case EmitUpdates:
		return "updates"
	}
	return "EmitMode(" + strconv.Itoa(int(m)) + ")"
}

// LatePolicy says what becomes of a record whose windows have closed. The
// values mirror statedv1.LatePolicy.
type LatePolicy int

const (
	// LateDrop drops a late record and counts it.
	LateDrop LatePolicy = 1
	// LateReturn counts a late record and returns it in the commit's
	// AddResult (Late and Returned set), for the caller to handle.
	LateReturn LatePolicy = 2
)

// String returns "drop" or "return".
func (p LatePolicy) String() string {
	switch p {
	case LateDrop:
		return "drop"
	case LateReturn:
		return "return"
	}
	return "LatePolicy(" + strconv.Itoa(int(p)) + ")"
}

// WindowSpec defines a window namespace. Durations must be whole
// milliseconds. A namespace is immutable once defined.
type WindowSpec struct {
	// Namespace names the window namespace; window namespaces are apart
	// from keyed-state namespaces.
	Namespace string
	Shape     WindowShape
	// Size is the length of tumbling and hopping windows; Advance how far
	// apart hopping windows start (0 < Advance <= Size, and Size/Advance,
	// the windows a record is in, at most 10000); Gap the idle time
	// that ends a session. Leave the ones the shape does not use zero.
	Size, Advance, Gap time.Duration
	// Grace is how long after its end a window still accepts records: it
	// closes when the watermark reaches end + Grace (a session: last event
	// + Gap + Grace). Zero means no lateness.
	Grace time.Duration
	// MaxOutOfOrder is how far a source's watermark trails the greatest
	// event time it has sent. Zero means records arrive in order.
	MaxOutOfOrder time.Duration
	// Retention is how long, from a window's start, its data stays
	// readable with Client.Windows; zero means the least allowed, Size +
	// Grace (sessions: Gap + Grace). A lower one is refused.
	Retention time.Duration
	// IdleTimeout is how long a source may send nothing before it stops
	// holding the namespace's watermark back, by the daemon leader's clock;
	// zero means one minute.
	IdleTimeout time.Duration
	Aggregate   Aggregate
	// MaxListValues bounds a CollectList window's values, 1 to 10000;
	// leave it zero for other aggregates.
	MaxListValues int
	Emit          EmitMode
	Late          LatePolicy
	// MaxPendingEmissions caps the namespace's outbox: a commit that adds
	// to or hints it while it holds this many unacknowledged emissions
	// fails with ErrOutboxFull. Zero means 100000.
	MaxPendingEmissions int64
}

// wireMillis converts a spec duration to the wire's milliseconds; one
// that is not a whole number of milliseconds is refused naming field.
func wireMillis(field string, d time.Duration) (int64, error) {
	if d%time.Millisecond != 0 {
		return 0, localError("define windows", codes.InvalidArgument, "spec.%s: %s is not a whole number of milliseconds", field, d)
	}
	return d.Milliseconds(), nil
}

// toWire converts s to the wire's spec.
func (s WindowSpec) toWire() (*statedv1.WindowSpec, error) {
	w := &statedv1.WindowSpec{
		Namespace:           s.Namespace,
		Shape:               statedv1.WindowShape(s.Shape),
		Aggregate:           statedv1.WindowAggregate(s.Aggregate),
		MaxListValues:       int32(min(max(s.MaxListValues, -1), 1<<31-1)),
		Emit:                statedv1.WindowEmit(s.Emit),
		Late:                statedv1.LatePolicy(s.Late),
		MaxPendingEmissions: s.MaxPendingEmissions,
	}
	var grace, ooo int64
	for _, f := range []struct {
		name string
		d    time.Duration
		dst  *int64
	}{
		{"size_ms", s.Size, &w.SizeMs}, {"advance_ms", s.Advance, &w.AdvanceMs}, {"gap_ms", s.Gap, &w.GapMs},
		{"grace_ms", s.Grace, &grace}, {"max_out_of_order_ms", s.MaxOutOfOrder, &ooo},
		{"retention_ms", s.Retention, &w.RetentionMs}, {"idle_timeout_ms", s.IdleTimeout, &w.IdleTimeoutMs},
	} {
		ms, err := wireMillis(f.name, f.d)
		if err != nil {
			return nil, err
		}
		*f.dst = ms
	}
	w.GraceMs, w.MaxOutOfOrderMs = &grace, &ooo
	return w, nil
}

// windowSpecOf converts the wire's spec.
func windowSpecOf(w *statedv1.WindowSpec) WindowSpec {
	ms := func(v int64) time.Duration { return time.Duration(v) * time.Millisecond }
	return WindowSpec{
		Namespace: w.GetNamespace(), Shape: WindowShape(w.GetShape()),
		Size: ms(w.GetSizeMs()), Advance: ms(w.GetAdvanceMs()), Gap: ms(w.GetGapMs()),
		Grace: ms(w.GetGraceMs()), MaxOutOfOrder: ms(w.GetMaxOutOfOrderMs()),
		Retention: ms(w.GetRetentionMs()), IdleTimeout: ms(w.GetIdleTimeoutMs()),
		Aggregate: Aggregate(w.GetAggregate()), MaxListValues: int(w.GetMaxListValues()),
		Emit: EmitMode(w.GetEmit()), Late: LatePolicy(w.GetLate()),
		MaxPendingEmissions: w.GetMaxPendingEmissions(),
	}
}

// DefineWindows defines the window namespace spec.Namespace. Defining a
// namespace that exists with the same spec (once defaults are filled in)
// succeeds and changes nothing, so a service may define its namespaces
// at every start; a different spec fails with ErrInvalidArgument naming
// the first field that differs (e.g. `spec.size_ms`), as does an invalid
// one. The daemon forwards the definition to the leader.
func (c *Client) DefineWindows(ctx context.Context, spec WindowSpec) error {
	if err := c.checkOpen("define windows"); err != nil {
		return err
	}
	w, err := spec.toWire()
	if err != nil {
		return err
	}
	req := &statedv1.DefineWindowsRequest{Spec: w}
	var resp *statedv1.DefineWindowsResponse
	err = c.withRetries(ctx, func(ctx context.Context) error {
		var err error
		resp, err = c.windows.Define(ctx, req)
		return err
	})
	if err != nil {
		return c.rpcErr("define windows", err)
	}
	c.observeIndex(resp.GetIndex())
	return nil
}

// WindowValue is the value of a record added to windows: Int for the int
// aggregates, Float for the float ones, BytesValue for Last, CollectList
// and Opaque, NoValue for Count.
type WindowValue struct {
	Int   int64
	Float float64
	Bytes []byte
}

// Int is an int64 value, for SumInt, MinInt and MaxInt.
func Int(v int64) WindowValue { return WindowValue{Int: v} }

// Float is a float64 value, for SumFloat, MinFloat and MaxFloat.
func Float(v float64) WindowValue { return WindowValue{Float: v} }

// BytesValue is a bytes value, for Last, CollectList and Opaque. It is
// copied.
func BytesValue(b []byte) WindowValue { return WindowValue{Bytes: bytes.Clone(b)} }

// NoValue is the value of a record that is only counted (Count).
func NoValue() WindowValue { return WindowValue{} }

// AddOption adjusts one AddWindow.
type AddOption func(*addOptions)

type addOptions struct {
	source    string
	sourceSet bool
}

// FromSource names the source partition the record comes from, e.g.
// "clicks/3" (the Kafka processor's "topic/partition"). Each source has
// its own watermark, and the namespace's watermark is the least of its
// active sources', so that one partition that lags holds the windows
// open. Without it a record belongs to the default source "".
func FromSource(source string) AddOption {
	return func(o *addOptions) { o.source, o.sourceSet = source, true }
}

// AddWindow adds a record with event time eventTime (sent in whole
// milliseconds, truncated) to the windows of key in the window namespace
// ns; the daemon assigns the windows. The commit's CommitResult.Adds says,
// in the order of the AddWindow calls, whether each record was on time or
// late. It also moves the source's watermark to the greatest event time
// it has sent minus the namespace's MaxOutOfOrder.
func (t *Txn) AddWindow(ns string, key []byte, eventTime time.Time, v WindowValue, opts ...AddOption) *Txn {
	var o addOptions
	for _, opt := range opts {
		opt(&o)
	}
	src := t.source
	if o.sourceSet {
		src = o.source
	}
	t.windowAdds = append(t.windowAdds, &statedv1.WindowAdd{
		Namespace: ns, Source: src, Key: bytes.Clone(key), EventTimeMs: eventTime.UnixMilli(),
		IntValue: v.Int, FloatValue: v.Float, BytesValue: bytes.Clone(v.Bytes),
	})
	return t
}

// SetDefaultSource makes source the source of the AddWindow calls that
// follow without FromSource. The Kafka processor sets it to the record's
// "topic/partition" before it calls its Handler with each record, so that
// a handler's adds feed that partition's watermark without naming it.
func (t *Txn) SetDefaultSource(source string) *Txn {
	t.source = source
	return t
}

// AdvanceWatermark raises the watermark of source in ns to at (it never
// goes back): the source promises no record older than at. The Kafka
// processor uses it for partitions that are caught up. Windows it lets
// close are closed in this commit, and their emissions come back in its
// CommitResult.
func (t *Txn) AdvanceWatermark(ns, source string, at time.Time) *Txn {
	t.hints = append(t.hints, &statedv1.WatermarkHint{Namespace: ns, Source: source, TimeMs: at.UnixMilli()})
	return t
}

// Ack acknowledges emissions: they leave their namespaces' outboxes with
// this commit, atomically with whatever else the Txn does (the output it
// produced from them, its offsets). Acknowledging an emission that is not
// pending (never emitted, or acknowledged already) fails the whole commit
// with ErrInvalidArgument.
func (t *Txn) Ack(ems ...Emission) *Txn {
	for _, e := range ems {
		t.acks = append(t.acks, &statedv1.EmissionAck{Namespace: e.Namespace, Id: e.ID})
	}
	return t
}

// RegisterTimer registers an event-time timer of key in ns: once the
// namespace's watermark reaches at, an Emission of kind EmissionTimer
// (Start and End at) goes to the outbox. Registering a timer that exists
// changes nothing.
func (t *Txn) RegisterTimer(ns string, key []byte, at time.Time) *Txn {
	t.timers = append(t.timers, &statedv1.TimerOp{Namespace: ns, Key: bytes.Clone(key), TimeMs: at.UnixMilli()})
	return t
}

// DeleteTimer deletes the timer of key in ns at at; deleting a timer that
// does not exist (or has fired) changes nothing.
func (t *Txn) DeleteTimer(ns string, key []byte, at time.Time) *Txn {
	t.timers = append(t.timers, &statedv1.TimerOp{Namespace: ns, Key: bytes.Clone(key), TimeMs: at.UnixMilli(), Delete: true})
	return t
}

// AddResult is what became of one AddWindow of a Txn. It carries the
// record back, so that a late record under LateReturn can be handled (sent
// to a side output, say) without bookkeeping by the caller.
type AddResult struct {
	// Late is set when the record's windows had closed; Returned too when
	// the namespace's policy is LateReturn (else it was dropped).
	Late, Returned bool
	// The record as AddWindow was given it (EventTime in milliseconds).
	Namespace string
	Source    string
	Key       []byte
	EventTime time.Time
	Value     WindowValue
}

// addResults pairs the daemon's results with the Txn's adds.
func (t *Txn) addResults(rs []*statedv1.AddResult) []AddResult {
	if len(rs) == 0 {
		return nil
	}
	out := make([]AddResult, len(rs))
	for i, r := range rs {
		switch r.GetStatus() {
		case statedv1.AddStatus_ADD_STATUS_LATE_DROPPED:
			out[i].Late = true
		case statedv1.AddStatus_ADD_STATUS_LATE_RETURNED:
			out[i].Late, out[i].Returned = true, true
		}
		if i < len(t.windowAdds) {
			a := t.windowAdds[i]
			out[i].Namespace, out[i].Source, out[i].Key = a.GetNamespace(), a.GetSource(), a.GetKey()
			out[i].EventTime = time.UnixMilli(a.GetEventTimeMs())
			out[i].Value = WindowValue{Int: a.GetIntValue(), Float: a.GetFloatValue(), Bytes: a.GetBytesValue()}
		}
	}
	return out
}

// EmissionKind tells a window's final result from an update and a fired
// timer. The values mirror statedv1.EmissionKind.
type EmissionKind int

const (
	// EmissionFinal is a closed window's result.
	EmissionFinal EmissionKind = 1
	// EmissionUpdate is an open window's result after an on-time add
	// changed it (EmitUpdates).
	EmissionUpdate EmissionKind = 2
	// EmissionTimer is a fired timer: Start and End are its time.
	EmissionTimer EmissionKind = 3
)

// String returns "final", "update" or "timer".
func (k EmissionKind) String() string {
	switch k {
	case EmissionFinal:
		return "final"
	case EmissionUpdate:
		return "update"
	case EmissionTimer:
		return "timer"
	}
	return "EmissionKind(" + strconv.Itoa(int(k)) + ")"
}

// Emission is a closed window's result, an update of an open window or a
// fired timer. It stays in its namespace's outbox, and is delivered again
// (Client.Emissions), until a Txn acknowledges it with Ack.
type Emission struct {
	Namespace string
	// ID numbers the namespace's emissions from 1 in the order the daemon
	// wrote them; it is the same after any crash, replay or restore, so
	// it identifies the emission to the application too.
	ID   uint64
	Kind EmissionKind
	Key  []byte
	// Start and End bound the window, [Start, End) in milliseconds; a
	// session's End is its last event + 1ms.
	Start, End time.Time
	// Count is the window's number of records; Int, Float, Bytes, Values
	// and Truncated its aggregate's result (see Aggregate).
	Count     int64
	Int       int64
	Float     float64
	Bytes     []byte
	Values    [][]byte
	Truncated bool
	// Watermark is the namespace's watermark when it was written.
	Watermark time.Time
}

func emissionOf(e *statedv1.Emission) Emission {
	return Emission{
		Namespace: e.GetNamespace(), ID: e.GetId(), Kind: EmissionKind(e.GetKind()), Key: e.GetKey(),
		Start: time.UnixMilli(e.GetStartMs()), End: time.UnixMilli(e.GetEndMs()),
		Count: e.GetCount(), Int: e.GetIntValue(), Float: e.GetFloatValue(), Bytes: e.GetBytesValue(),
		Values: e.GetValues(), Truncated: e.GetTruncated(), Watermark: time.UnixMilli(e.GetWatermark()),
	}
}

func emissionsOf(es []*statedv1.Emission) []Emission {
	if len(es) == 0 {
		return nil
	}
	out := make([]Emission, len(es))
	for i, e := range es {
		out[i] = emissionOf(e)
	}
	return out
}

// Window is a window as stored: open, or closed and still retained.
type Window struct {
	Key []byte
	// Start and End bound the window, [Start, End); a session's End is
	// its last event + 1ms.
	Start, End time.Time
	// Close is the watermark at which it closes (or closed): End + Grace,
	// a session's last event + Gap + Grace.
	Close  time.Time
	Closed bool
	// Count is the number of records; Int, Float, Bytes, Values and
	// Truncated the aggregate's result so far.
	Count     int64
	Int       int64
	Float     float64
	Bytes     []byte
	Values    [][]byte
	Truncated bool
}

func windowOf(w *statedv1.Window) Window {
	return Window{
		Key: w.GetKey(), Start: time.UnixMilli(w.GetStartMs()), End: time.UnixMilli(w.GetEndMs()),
		Close: time.UnixMilli(w.GetCloseMs()), Closed: w.GetClosed(),
		Count: w.GetCount(), Int: w.GetIntValue(), Float: w.GetFloatValue(), Bytes: w.GetBytesValue(),
		Values: w.GetValues(), Truncated: w.GetTruncated(),
	}
}

// Windows returns the windows of key in ns whose start is in [from, to),
// in start order: open ones, and closed ones the namespace still retains
// (Closed set). A zero to means no upper bound; a zero from means the
// beginning.
func (c *Client) Windows(ctx context.Context, ns string, key []byte, from, to time.Time, opts ...ReadOption) ([]Window, error) {
	if err := c.checkOpen("windows"); err != nil {
		return nil, err
	}
	req := &statedv1.GetWindowsRequest{Namespace: ns, Key: key}
	if !from.IsZero() {
		req.FromMs = from.UnixMilli()
	}
	// The wire's to_ms 0 means no upper bound, so a to at the Unix epoch
	// (an empty range: event times start there) is asked as [from, 1ms),
	// which the daemon still judges (namespace, key, from), and whatever
	// that returns is dropped.
	empty := false
	if !to.IsZero() {
		req.ToMs = to.UnixMilli()
		if req.ToMs == 0 {
			if req.FromMs > 0 {
				return nil, localError("windows", codes.InvalidArgument, "to_ms: 0 is before from_ms %d", req.FromMs)
			}
			req.ToMs, empty = 1, true
		}
	}
	var resp *statedv1.GetWindowsResponse
	err := c.withRetries(ctx, func(ctx context.Context) error {
		req.Read = c.readOptions(opts)
		var err error
		resp, err = c.windows.Get(ctx, req)
		return err
	})
	if err != nil {
		return nil, c.rpcErr("windows", err)
	}
	if empty {
		return []Window{}, nil
	}
	out := make([]Window, 0, len(resp.GetWindows()))
	for _, w := range resp.GetWindows() {
		out = append(out, windowOf(w))
	}
	return out, nil
}

// openWindowsPage is the page size OpenWindows asks for.
const openWindowsPage = 1000

// OpenWindows yields the open windows of ns in (key, start) order, a page
// at a time from the daemon. Each page is a read of its own, so windows
// that close or open meanwhile may or may not appear. It yields an error
// at most once, and then stops.
func (c *Client) OpenWindows(ctx context.Context, ns string, opts ...ReadOption) iter.Seq2[Window, error] {
	return func(yield func(Window, error) bool) {
		if err := c.checkOpen("open windows"); err != nil {
			yield(Window{}, err)
			return
		}
		req := &statedv1.ListOpenWindowsRequest{Namespace: ns, Limit: openWindowsPage}
		for {
			var resp *statedv1.ListOpenWindowsResponse
			err := c.withRetries(ctx, func(ctx context.Context) error {
				req.Read = c.readOptions(opts)
				var err error
				resp, err = c.windows.ListOpen(ctx, req)
				return err
			})
			if err != nil {
				yield(Window{}, c.rpcErr("open windows", err))
				return
			}
			ws := resp.GetWindows()
			for _, w := range ws {
				if !yield(windowOf(w), nil) {
					return
				}
			}
			if !resp.GetMore() || len(ws) == 0 {
				return
			}
			last := ws[len(ws)-1]
			req.AfterKey, req.AfterStartMs = last.GetKey(), last.GetStartMs()
		}
	}
}

// Emissions returns up to limit (1 to 10000; 0 means 1000) of the pending
// emissions of ns with an id greater than afterID, in id order: windows
// closed, updates and timers fired that no commit has acknowledged yet.
// A processor reads them at start (afterID 0) to deliver again what a
// crash left unacknowledged.
func (c *Client) Emissions(ctx context.Context, ns string, afterID uint64, limit int, opts ...ReadOption) ([]Emission, error) {
	if err := c.checkOpen("emissions"); err != nil {
		return nil, err
	}
	if limit < 0 || limit > 1<<31 {
		return nil, localError("emissions", codes.InvalidArgument, "limit: %d is outside 0 to 10000", limit)
	}
	req := &statedv1.ReadEmissionsRequest{Namespace: ns, AfterId: afterID, Limit: uint32(limit)}
	var resp *statedv1.ReadEmissionsResponse
	err := c.withRetries(ctx, func(ctx context.Context) error {
		req.Read = c.readOptions(opts)
		var err error
		resp, err = c.windows.Emissions(ctx, req)
		return err
	})
	if err != nil {
		return nil, c.rpcErr("emissions", err)
	}
	return emissionsOf(resp.GetEmissions()), nil
}

// WindowStatus is the state of one window namespace.
type WindowStatus struct {
	// Spec is the namespace's definition, defaults filled in.
	Spec WindowSpec
	// Watermark is the namespace's watermark: windows that close at or
	// before it are closed. HasWatermark is false until a record or a hint
	// moved it (then Watermark is zero).
	Watermark    time.Time
	HasWatermark bool
	// MaxEventTime is the greatest event time added; zero before the
	// first record.
	MaxEventTime time.Time
	// Lag is how far the watermark trails MaxEventTime: what holds windows
	// open (out-of-orderness, a lagging source). Zero without a watermark.
	Lag time.Duration
	// OpenWindows counts windows not closed yet; Pending the emissions not
	// acknowledged yet.
	OpenWindows, Pending int64
	// LateDropped and LateReturned count late records under each policy;
	// Adds every record added.
	LateDropped, LateReturned, Adds int64
	// Sources are the namespace's sources, by name.
	Sources []SourceStatus
}

// SourceStatus is the state of one source of a window namespace.
type SourceStatus struct {
	Source string
	// Watermark is the source's own watermark; HasWatermark is false until
	// a record or a hint moved it.
	Watermark    time.Time
	HasWatermark bool
	// MaxEventTime is the greatest event time it sent; zero before its
	// first record.
	MaxEventTime time.Time
	// LastActive is when it last sent a record or a hint, by the daemon
	// leader's clock; after a restore, when the restored cluster's leader
	// first saw it (the Unix epoch for the moment before that, about a
	// second after the leader starts).
	LastActive time.Time
}

// watermarkOf converts a wire watermark or greatest event time, -1
// before anything moved it.
func watermarkOf(ms int64) (time.Time, bool) {
	if ms < 0 {
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
}

// eventTimeOf converts a wire greatest event time: zero when -1.
func eventTimeOf(ms int64) time.Time {
	t, _ := watermarkOf(ms)
	return t
}

func windowStatusOf(n *statedv1.WindowNamespaceStatus) WindowStatus {
	s := WindowStatus{
		Spec: windowSpecOf(n.GetSpec()), MaxEventTime: eventTimeOf(n.GetMaxEventTime()),
		OpenWindows: n.GetOpenWindows(), Pending: n.GetPending(),
		LateDropped: n.GetLateDropped(), LateReturned: n.GetLateReturned(), Adds: n.GetAdds(),
	}
	s.Watermark, s.HasWatermark = watermarkOf(n.GetWatermark())
	if s.HasWatermark && n.GetMaxEventTime() > n.GetWatermark() {
		s.Lag = time.Duration(n.GetMaxEventTime()-n.GetWatermark()) * time.Millisecond
	}
	for _, src := range n.GetSources() {
		ss := SourceStatus{
			Source: src.GetSource(), MaxEventTime: eventTimeOf(src.GetMaxEventTime()),
			LastActive: time.UnixMilli(src.GetLastActiveUnixMillis()),
		}
		ss.Watermark, ss.HasWatermark = watermarkOf(src.GetWatermark())
		s.Sources = append(s.Sources, ss)
	}
	return s
}

// WindowStatus reports every window namespace, by name: its spec,
// watermark, open windows, pending emissions and late-record counts.
// Against a daemon with a token file it reports those the client's token
// may read (all of them with read on "*").
func (c *Client) WindowStatus(ctx context.Context, opts ...ReadOption) ([]WindowStatus, error) {
	if err := c.checkOpen("window status"); err != nil {
		return nil, err
	}
	req := &statedv1.WindowStatusRequest{}
	var resp *statedv1.WindowStatusResponse
	err := c.withRetries(ctx, func(ctx context.Context) error {
		req.Read = c.readOptions(opts)
		var err error
		resp, err = c.windows.Status(ctx, req)
		return err
	})
	if err != nil {
		return nil, c.rpcErr("window status", err)
	}
	out := make([]WindowStatus, 0, len(resp.GetNamespaces()))
	for _, n := range resp.GetNamespaces() {
		out = append(out, windowStatusOf(n))
	}
	return out, nil
}

// String describes the spec as the CLI's flags would, e.g. "tumbling 1m0s
// grace 10s out-of-order 5s count emit final late drop".
func (s WindowSpec) String() string {
	var shape string
	switch s.Shape {
	case Tumbling:
		shape = fmt.Sprintf("tumbling %s", s.Size)
	case Hopping:
		shape = fmt.Sprintf("hopping %s advance %s", s.Size, s.Advance)
	case Session:
		shape = fmt.Sprintf("session gap %s", s.Gap)
	default:
		shape = s.Shape.String()
	}
	agg := s.Aggregate.String()
	if s.Aggregate == CollectList {
		agg = fmt.Sprintf("list of %d", s.MaxListValues)
	}
	return fmt.Sprintf("%s grace %s out-of-order %s %s emit %s late %s", shape, s.Grace, s.MaxOutOfOrder, agg, s.Emit, s.Late)
}
