package command

import (
	"encoding/binary"
	"fmt"
	"math"
	"unicode/utf8"
)

// Window state: namespaces of event-time windows that the state machine
// assigns, aggregates, closes and hands out as emissions. Event times and
// durations are int64 milliseconds.

// MaxEventTime is the greatest event time a window add or a watermark may
// carry (2^53-1 ms, about 285,000 years: exact in a float64 and in JSON).
const MaxEventTime = 1<<53 - 1

// MaxDuration bounds every duration of a window spec (100 years), so that
// sums of an event time and durations never overflow.
const MaxDuration = 100 * 365 * 24 * 3600 * 1000

// DefaultIdleTimeoutMs is how long a source may stay silent, by the
// leader's clock, before it stops holding its namespace's watermark back.
const DefaultIdleTimeoutMs = 60_000

// DefaultMaxPendingEmissions caps a namespace's unacknowledged emissions.
const DefaultMaxPendingEmissions = 100_000

// MaxListValues bounds the values an AggList window keeps.
const MaxListValues = 10_000

// MaxWindowsPerRecord bounds size_ms / advance_ms of a hopping namespace
// defined from now on: the windows one record belongs to, each of which
// an add may have to index within one Raft entry on every replica (about
// a microsecond each). ValidateNewWindowSpec checks it.
const MaxWindowsPerRecord = 10_000

// MaxNamespaceLen bounds a window namespace's name, in bytes.
const MaxNamespaceLen = 256

// Shape is how a window namespace cuts event time into windows.
type Shape uint8

const (
	ShapeTumbling Shape = 1 // fixed, adjacent windows of SizeMs
	ShapeHopping  Shape = 2 // windows of SizeMs starting every AdvanceMs
	ShapeSession  Shape = 3 // per key, activity separated by less than GapMs
)

// Aggregate is what a window computes over the values added to it.
type Aggregate uint8

const (
	AggCount    Aggregate = 1  // number of records
	AggSumInt   Aggregate = 2  // sum of WindowAdd.Int
	AggSumFloat Aggregate = 3  // sum of WindowAdd.Float
	AggMinInt   Aggregate = 4  // least WindowAdd.Int
	AggMaxInt   Aggregate = 5  // greatest WindowAdd.Int
	AggMinFloat Aggregate = 6  // least WindowAdd.Float
	AggMaxFloat Aggregate = 7  // greatest WindowAdd.Float
	AggLast     Aggregate = 8  // WindowAdd.Bytes of the latest event time
	AggList     Aggregate = 9  // WindowAdd.Bytes in event-time order, at most MaxListValues
	AggOpaque   Aggregate = 10 // bytes the application computes: each add replaces them
	aggMax                = AggOpaque
)

// EmitMode says which emissions a namespace writes.
type EmitMode uint8

const (
	EmitFinal   EmitMode = 1 // one emission per window, when it closes
	EmitUpdates EmitMode = 2 // also one per change of a window by an on-time add
)

// LatePolicy says what becomes of a record whose windows have closed.
type LatePolicy uint8

const (
	LateDrop   LatePolicy = 1 // drop it and count it
	LateReturn LatePolicy = 2 // count it and return it to the caller in the add's result
)

// WindowSpec defines a window namespace. It is immutable once defined.
type WindowSpec struct {
	Namespace       string
	Shape           Shape
	SizeMs          int64 // tumbling and hopping
	AdvanceMs       int64 // hopping: 0 < AdvanceMs <= SizeMs
	GapMs           int64 // session
	GraceMs         int64 // >= 0; 0 means no lateness
	MaxOutOfOrderMs int64 // >= 0
	// RetentionMs is how long, from a window's start (a session's last
	// event), its data stays queryable; 0 means the least allowed, size +
	// grace (session: gap + grace).
	RetentionMs         int64
	IdleTimeoutMs       int64 // 0 means DefaultIdleTimeoutMs
	Aggregate           Aggregate
	MaxListValues       int32 // AggList only, 1..MaxListValues
	Emit                EmitMode
	Late                LatePolicy
	MaxPendingEmissions int64 // 0 means DefaultMaxPendingEmissions
}

// FieldError names the field of a request or command that is invalid,
// by its name in the wire contract (e.g. "size_ms").
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// MinRetention is the least retention s allows: size + grace, or gap +
// grace for sessions.
func (s *WindowSpec) MinRetention() int64 {
	if s.Shape == ShapeSession {
		return s.GapMs + s.GraceMs
	}
	return s.SizeMs + s.GraceMs
}

// WithDefaults returns s with its zero-means-default fields filled in.
func (s WindowSpec) WithDefaults() WindowSpec {
	if s.RetentionMs == 0 {
		s.RetentionMs = s.MinRetention()
	}
	if s.IdleTimeoutMs == 0 {
		s.IdleTimeoutMs = DefaultIdleTimeoutMs
	}
	if s.MaxPendingEmissions == 0 {
		s.MaxPendingEmissions = DefaultMaxPendingEmissions
	}
	return s
}

// ValidateNewWindowSpec is ValidateWindowSpec for a definition the
// daemon is about to propose: it also refuses a hopping spec whose
// records would each belong to more than MaxWindowsPerRecord windows.
// The state machine does not check that when it applies a definition: a
// replica of an older release, which accepts such a spec, must apply the
// same log to the same state.
func ValidateNewWindowSpec(s *WindowSpec) error {
	if err := ValidateWindowSpec(s); err != nil {
		return err
	}
	if s.Shape != ShapeHopping {
		return nil
	}
	// A record is in ceil(size / advance) windows (some in one fewer).
	if n := (s.SizeMs + s.AdvanceMs - 1) / s.AdvanceMs; n > MaxWindowsPerRecord {
		return fieldErr("advance_ms", "%d ms puts records in up to %d windows (size_ms %d / advance_ms, rounded up), more than the maximum of %d, each indexed as the record is added: advance by at least %d ms",
			s.AdvanceMs, n, s.SizeMs, MaxWindowsPerRecord, (s.SizeMs+MaxWindowsPerRecord-1)/MaxWindowsPerRecord)
	}
	return nil
}

// ValidateWindowSpec checks s; the error is a *FieldError. The daemon runs
// it before proposing a definition (as part of ValidateNewWindowSpec) and
// the state machine again when it applies one.
func ValidateWindowSpec(s *WindowSpec) error {
	if err := ValidateWindowNamespace("namespace", s.Namespace); err != nil {
		return err
	}
	dur := func(field string, v int64, positive bool) error {
		switch {
		case positive && v <= 0:
			return fieldErr(field, "must be positive, got %d", v)
		case v < 0:
			return fieldErr(field, "must not be negative, got %d", v)
		case v > MaxDuration:
			return fieldErr(field, "%d ms is more than the maximum of %d ms (100 years)", v, int64(MaxDuration))
		}
		return nil
	}
	unused := func(field string, v int64, shape string) error {
		if v != 0 {
			return fieldErr(field, "is not used by %s windows; leave it 0", shape)
		}
		return nil
	}
	var err error
	switch s.Shape {
	case ShapeTumbling:
		err = firstErr(dur("size_ms", s.SizeMs, true), unused("advance_ms", s.AdvanceMs, "tumbling"), unused("gap_ms", s.GapMs, "tumbling"))
	case ShapeHopping:
		err = firstErr(dur("size_ms", s.SizeMs, true), dur("advance_ms", s.AdvanceMs, true), unused("gap_ms", s.GapMs, "hopping"))
		if err == nil && s.AdvanceMs > s.SizeMs {
			err = fieldErr("advance_ms", "%d ms is larger than size_ms %d ms: windows would leave gaps", s.AdvanceMs, s.SizeMs)
		}
	case ShapeSession:
		err = firstErr(dur("gap_ms", s.GapMs, true), unused("size_ms", s.SizeMs, "session"), unused("advance_ms", s.AdvanceMs, "session"))
	default:
		err = fieldErr("shape", "must be tumbling, hopping or session, got %d", s.Shape)
	}
	if err != nil {
		return err
	}
	if err := firstErr(dur("grace_ms", s.GraceMs, false), dur("max_out_of_order_ms", s.MaxOutOfOrderMs, false),
		dur("retention_ms", s.RetentionMs, false), dur("idle_timeout_ms", s.IdleTimeoutMs, false)); err != nil {
		return err
	}
	if s.RetentionMs != 0 && s.RetentionMs < s.MinRetention() {
		what := "size + grace"
		if s.Shape == ShapeSession {
			what = "gap + grace"
		}
		return fieldErr("retention_ms", "%d ms is below %s = %d ms: windows would be dropped before they close", s.RetentionMs, what, s.MinRetention())
	}
	switch {
	case s.Aggregate < AggCount || s.Aggregate > aggMax:
		return fieldErr("aggregate", "unknown aggregate %d", s.Aggregate)
	case s.Aggregate == AggOpaque && s.Shape != ShapeTumbling:
		return fieldErr("aggregate", "opaque works with tumbling windows only: hopping and session windows combine aggregates, which the daemon cannot do with opaque bytes")
	case s.Aggregate == AggList && (s.MaxListValues < 1 || s.MaxListValues > MaxListValues):
		return fieldErr("max_list_values", "a list aggregate needs 1 to %d values, got %d", MaxListValues, s.MaxListValues)
	case s.Aggregate != AggList && s.MaxListValues != 0:
		return fieldErr("max_list_values", "is for the list aggregate only; leave it 0")
	}
	if s.Emit != EmitFinal && s.Emit != EmitUpdates {
		return fieldErr("emit", "must be final or updates, got %d", s.Emit)
	}
	if s.Late != LateDrop && s.Late != LateReturn {
		return fieldErr("late", "must be drop or return, got %d", s.Late)
	}
	if s.MaxPendingEmissions < 0 {
		return fieldErr("max_pending_emissions", "must not be negative, got %d", s.MaxPendingEmissions)
	}
	return nil
}

// ValidateWindowNamespace checks a window namespace's name.
func ValidateWindowNamespace(field, ns string) error {
	switch {
	case ns == "":
		return fieldErr(field, "a window namespace is required")
	case len(ns) > MaxNamespaceLen:
		return fieldErr(field, "%d bytes is more than the maximum of %d", len(ns), MaxNamespaceLen)
	case !utf8.ValidString(ns):
		return fieldErr(field, "is not valid UTF-8")
	}
	return nil
}

// ValidateEventTime checks an event time or a watermark hint.
func ValidateEventTime(field string, t int64) error {
	if t < 0 || t > MaxEventTime {
		return fieldErr(field, "%d is outside the event times stated represents (0 to %d ms since the Unix epoch)", t, int64(MaxEventTime))
	}
	return nil
}

// DiffWindowSpecs names the first field in which two specs (with their
// defaults filled in) differ, and the two values; "" when they are equal.
func DiffWindowSpecs(was, now WindowSpec) (field, wasV, nowV string) {
	a, b := was.WithDefaults(), now.WithDefaults()
	for _, f := range []struct {
		name string
		x, y any
	}{
		{"shape", a.Shape, b.Shape}, {"size_ms", a.SizeMs, b.SizeMs}, {"advance_ms", a.AdvanceMs, b.AdvanceMs},
		{"gap_ms", a.GapMs, b.GapMs}, {"grace_ms", a.GraceMs, b.GraceMs},
		{"max_out_of_order_ms", a.MaxOutOfOrderMs, b.MaxOutOfOrderMs}, {"retention_ms", a.RetentionMs, b.RetentionMs},
		{"idle_timeout_ms", a.IdleTimeoutMs, b.IdleTimeoutMs}, {"aggregate", a.Aggregate, b.Aggregate},
		{"max_list_values", a.MaxListValues, b.MaxListValues}, {"emit", a.Emit, b.Emit}, {"late", a.Late, b.Late},
		{"max_pending_emissions", a.MaxPendingEmissions, b.MaxPendingEmissions},
	} {
		if f.x != f.y {
			return f.name, fmt.Sprint(f.x), fmt.Sprint(f.y)
		}
	}
	return "", "", ""
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// WindowAdd adds one record to the windows of Key that contain
// EventTimeMs. Which value field counts depends on the namespace's
// aggregate: Int for the int aggregates, Float for the float ones, Bytes
// for last, list and opaque; count uses none.
type WindowAdd struct {
	Namespace   string
	Source      string // the record's source partition, e.g. "clicks/3"
	Key         []byte
	EventTimeMs int64
	Int         int64
	Float       float64
	Bytes       []byte
}

// WatermarkHint raises a source's watermark explicitly.
type WatermarkHint struct {
	Namespace string
	Source    string
	TimeMs    int64
}

// EmissionAck acknowledges a pending emission: the state machine deletes
// it from the outbox.
type EmissionAck struct {
	Namespace string
	ID        uint64
}

// TimerOp registers (or, with Delete, removes) an event-time timer of a
// key, which fires into the outbox once the namespace's watermark reaches
// TimeMs.
type TimerOp struct {
	Namespace string
	Key       []byte
	TimeMs    int64
	Delete    bool
}

// AddStatus is what became of one WindowAdd.
type AddStatus uint8

const (
	AddOnTime       AddStatus = 1
	AddLateDropped  AddStatus = 2
	AddLateReturned AddStatus = 3
)

// EmissionKind tells a window's final result from an update and a timer.
type EmissionKind uint8

const (
	EmissionFinal  EmissionKind = 1
	EmissionUpdate EmissionKind = 2
	EmissionTimer  EmissionKind = 3
)

// Emission is a closed window's result, an update of an open one, or a
// fired timer, in a namespace's outbox until acknowledged.
type Emission struct {
	Namespace string
	// ID numbers the namespace's emissions from 1 in the order the state
	// machine wrote them: the same on every replica and after any replay.
	ID        uint64
	Kind      EmissionKind
	Key       []byte
	StartMs   int64 // a timer: its time
	EndMs     int64 // exclusive; a timer: its time
	Count     int64 // records in the window
	Int       int64
	Float     float64
	Bytes     []byte
	Values    [][]byte
	Truncated bool  // a list window received more than MaxListValues values
	Watermark int64 // the namespace's watermark when it was written
}

// appendWindowSpec appends the encoding of s.
func appendWindowSpec(dst []byte, s *WindowSpec) []byte {
	if s == nil {
		s = &WindowSpec{}
	}
	dst = appendBytes(dst, []byte(s.Namespace))
	dst = append(dst, byte(s.Shape), byte(s.Aggregate), byte(s.Emit), byte(s.Late))
	for _, v := range []int64{s.SizeMs, s.AdvanceMs, s.GapMs, s.GraceMs, s.MaxOutOfOrderMs, s.RetentionMs,
		s.IdleTimeoutMs, int64(s.MaxListValues), s.MaxPendingEmissions} {
		dst = binary.AppendVarint(dst, v)
	}
	return dst
}

func (d *decoder) windowSpec() *WindowSpec {
	s := &WindowSpec{Namespace: string(d.bytes())}
	s.Shape, s.Aggregate, s.Emit, s.Late = Shape(d.byte()), Aggregate(d.byte()), EmitMode(d.byte()), LatePolicy(d.byte())
	s.SizeMs, s.AdvanceMs, s.GapMs, s.GraceMs = d.varint(), d.varint(), d.varint(), d.varint()
	s.MaxOutOfOrderMs, s.RetentionMs, s.IdleTimeoutMs = d.varint(), d.varint(), d.varint()
	s.MaxListValues, s.MaxPendingEmissions = int32(d.varint()), d.varint()
	return s
}

// EncodeWindowSpec and DecodeWindowSpec store a spec (the state machine
// keeps its namespaces' specs in this form).
func EncodeWindowSpec(s *WindowSpec) []byte { return appendWindowSpec(nil, s) }

func DecodeWindowSpec(b []byte) (*WindowSpec, error) {
	d := decoder{buf: b, version: version}
	s := d.windowSpec()
	if d.err == nil && len(d.buf) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes after a window spec", ErrCorrupt, len(d.buf))
	}
	return s, d.err
}

// appendWindowPayload appends a commit's window parts (format version 4).
func appendWindowPayload(dst []byte, m *Commit) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(m.WindowAdds)))
	for i := range m.WindowAdds {
		a := &m.WindowAdds[i]
		dst = appendBytes(dst, []byte(a.Namespace))
		dst = appendBytes(dst, []byte(a.Source))
		dst = appendBytes(dst, a.Key)
		dst = binary.AppendVarint(dst, a.EventTimeMs)
		dst = binary.AppendVarint(dst, a.Int)
		dst = binary.BigEndian.AppendUint64(dst, math.Float64bits(a.Float))
		dst = appendBytes(dst, a.Bytes)
	}
	dst = binary.AppendUvarint(dst, uint64(len(m.WatermarkHints)))
	for i := range m.WatermarkHints {
		h := &m.WatermarkHints[i]
		dst = appendBytes(dst, []byte(h.Namespace))
		dst = appendBytes(dst, []byte(h.Source))
		dst = binary.AppendVarint(dst, h.TimeMs)
	}
	dst = binary.AppendUvarint(dst, uint64(len(m.Acks)))
	for i := range m.Acks {
		dst = appendBytes(dst, []byte(m.Acks[i].Namespace))
		dst = binary.AppendUvarint(dst, m.Acks[i].ID)
	}
	dst = binary.AppendUvarint(dst, uint64(len(m.Timers)))
	for i := range m.Timers {
		t := &m.Timers[i]
		dst = appendBytes(dst, []byte(t.Namespace))
		dst = appendBytes(dst, t.Key)
		dst = binary.AppendVarint(dst, t.TimeMs)
		del := byte(0)
		if t.Delete {
			del = 1
		}
		dst = append(dst, del)
	}
	return dst
}

func (d *decoder) windowPayload(m *Commit) {
	// An add takes at least 13 bytes, a hint 3, an ack 2, a timer 4.
	if n := d.count(13); n > 0 {
		m.WindowAdds = make([]WindowAdd, n)
		for i := range m.WindowAdds {
			a := &m.WindowAdds[i]
			a.Namespace = string(d.bytes())
			a.Source = string(d.bytes())
			a.Key = d.bytes()
			a.EventTimeMs = d.varint()
			a.Int = d.varint()
			if len(d.buf) < 8 {
				d.fail("float")
				return
			}
			a.Float = math.Float64frombits(binary.BigEndian.Uint64(d.buf))
			d.buf = d.buf[8:]
			a.Bytes = d.bytes()
		}
	}
	if n := d.count(3); n > 0 {
		m.WatermarkHints = make([]WatermarkHint, n)
		for i := range m.WatermarkHints {
			m.WatermarkHints[i] = WatermarkHint{Namespace: string(d.bytes()), Source: string(d.bytes()), TimeMs: d.varint()}
		}
	}
	if n := d.count(2); n > 0 {
		m.Acks = make([]EmissionAck, n)
		for i := range m.Acks {
			m.Acks[i] = EmissionAck{Namespace: string(d.bytes()), ID: d.uvarint()}
		}
	}
	if n := d.count(4); n > 0 {
		m.Timers = make([]TimerOp, n)
		for i := range m.Timers {
			t := &m.Timers[i]
			t.Namespace = string(d.bytes())
			t.Key = d.bytes()
			t.TimeMs = d.varint()
			switch d.byte() {
			case 0:
			case 1:
				t.Delete = true
			default:
				if d.err == nil {
					d.err = fmt.Errorf("%w: timer flag", ErrCorrupt)
				}
			}
		}
	}
}

// windowSizeHint is an upper bound of the encoded size of m's window parts.
func windowSizeHint(m *Commit) int {
	n := 4 * binary.MaxVarintLen64
	for i := range m.WindowAdds {
		a := &m.WindowAdds[i]
		n += len(a.Namespace) + len(a.Source) + len(a.Key) + len(a.Bytes) + 6*binary.MaxVarintLen64 + 8
	}
	for i := range m.WatermarkHints {
		n += len(m.WatermarkHints[i].Namespace) + len(m.WatermarkHints[i].Source) + 3*binary.MaxVarintLen64
	}
	for i := range m.Acks {
		n += len(m.Acks[i].Namespace) + 2*binary.MaxVarintLen64
	}
	for i := range m.Timers {
		n += len(m.Timers[i].Namespace) + len(m.Timers[i].Key) + 3*binary.MaxVarintLen64 + 1
	}
	return n
}

func (s Shape) String() string {
	switch s {
	case ShapeTumbling:
		return "tumbling"
	case ShapeHopping:
		return "hopping"
	case ShapeSession:
		return "session"
	}
	return fmt.Sprintf("shape(%d)", uint8(s))
}

var aggNames = [...]string{AggCount: "count", AggSumInt: "sum-int", AggSumFloat: "sum-float", AggMinInt: "min-int",
	AggMaxInt: "max-int", AggMinFloat: "min-float", AggMaxFloat: "max-float", AggLast: "last", AggList: "list", AggOpaque: "opaque"}

func (a Aggregate) String() string {
	if a >= AggCount && a <= aggMax {
		return aggNames[a]
	}
	return fmt.Sprintf("aggregate(%d)", uint8(a))
}

func (e EmitMode) String() string {
	switch e {
	case EmitFinal:
		return "final"
	case EmitUpdates:
		return "updates"
	}
	return fmt.Sprintf("emit(%d)", uint8(e))
}

func (l LatePolicy) String() string {
	switch l {
	case LateDrop:
		return "drop"
	case LateReturn:
		return "return"
	}
	return fmt.Sprintf("late(%d)", uint8(l))
}
