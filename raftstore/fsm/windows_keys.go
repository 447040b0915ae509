package fsm

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/statedhq/stated/raftstore/command"
)

// Window state's keys (prefixes 0x09 to 0x0F; see keys.go) and the
// encoding of its records. Times are order-preserving int64s (the sign bit
// flipped, big-endian), so that Pebble's byte order is time order.
//
//	prefixWindowSpec,   ns                       -> command.EncodeWindowSpec
//	prefixWindowMeta,   ns                       -> windowMeta
//	prefixWindowSource, ns, source               -> sourceState
//	prefixWindowData,   ns, segment, key, start  -> aggState
//	prefixWindowData,   ns, segment, key, start, last -> aggState (a closed session, displaced)
//	prefixWindowIndex,  ns, close time, key, start -> segment
//	prefixWindowOutbox, ns, id                   -> emission
//	prefixWindowTimer,  ns, time, key            -> nothing
//
// A data key without the trailing last event time is the only form of
// tumbling windows and hopping slices, and the form every session is
// written in, open or closed. A closed session is retained for queries
// until its segment is dropped, and a later session of the same key can
// start where it starts and end in the same segment: a record at the
// closed session's start is on time when it bridges into an open session
// (lateness is judged on the merged session). Before the new session is
// written under that key, addSession moves the closed one to the key with
// its last event time appended, which is unique: every later session with
// its start ends after it. So an open session is always under the short
// key, where the close index's (key, start, segment) finds it; the long
// key holds closed sessions only, sorts right after the short key, and
// lies in the same segment's range, so retention drops it with the rest.
// State written before the long form existed has short keys only, and
// reads the same.

func appendTime(dst []byte, t int64) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(t)^(1<<63))
}

func readTime(b []byte) (int64, []byte, error) {
	if len(b) < 8 {
		return 0, nil, fmt.Errorf("%w: short time in a window key", ErrCorrupt)
	}
	return int64(binary.BigEndian.Uint64(b) ^ (1 << 63)), b[8:], nil
}

func windowNSKey(prefix byte, ns string) []byte {
	return appendComponent([]byte{prefix}, []byte(ns))
}

func windowSpecKey(ns string) []byte { return windowNSKey(prefixWindowSpec, ns) }
func windowMetaKey(ns string) []byte { return windowNSKey(prefixWindowMeta, ns) }

func windowSourceKey(ns, source string) []byte {
	return appendComponent(windowNSKey(prefixWindowSource, ns), []byte(source))
}

// appendWindowDataKey appends the data key of the window (or slice, or
// session) of key starting at start, stored in segment seg.
func appendWindowDataKey(dst []byte, ns string, seg uint64, key []byte, start int64) []byte {
	dst = appendComponent(append(dst, prefixWindowData), []byte(ns))
	dst = binary.BigEndian.AppendUint64(dst, seg)
	dst = appendComponent(dst, key)
	return appendTime(dst, start)
}

// appendDisplacedSessionKey appends the data key of a closed session that
// a later session with the same start took the short key from: the short
// key with the session's last event time appended.
func appendDisplacedSessionKey(dst []byte, ns string, seg uint64, key []byte, start, last int64) []byte {
	return appendTime(appendWindowDataKey(dst, ns, seg, key, start), last)
}

// decodeWindowDataKey splits a data key after its namespace prefix;
// displaced reports the long form of a closed session.
func decodeWindowDataKey(rest []byte) (seg uint64, key []byte, start int64, displaced bool, err error) {
	if len(rest) < 8 {
		return 0, nil, 0, false, fmt.Errorf("%w: short window data key", ErrCorrupt)
	}
	seg = binary.BigEndian.Uint64(rest)
	key, rest, err = readComponent(rest[8:])
	if err != nil {
		return 0, nil, 0, false, err
	}
	if start, rest, err = readTime(rest); err != nil {
		return 0, nil, 0, false, err
	}
	switch len(rest) {
	case 0:
	case 8:
		displaced = true
	default:
		err = fmt.Errorf("%w: window data key with %d trailing bytes", ErrCorrupt, len(rest))
	}
	return seg, key, start, displaced, err
}

func appendWindowIndexKey(dst []byte, ns string, closeMs int64, key []byte, start int64) []byte {
	dst = appendComponent(append(dst, prefixWindowIndex), []byte(ns))
	dst = appendTime(dst, closeMs)
	dst = appendComponent(dst, key)
	return appendTime(dst, start)
}

func decodeWindowIndexKey(rest []byte) (closeMs int64, key []byte, start int64, err error) {
	if closeMs, rest, err = readTime(rest); err != nil {
		return 0, nil, 0, err
	}
	if key, rest, err = readComponent(rest); err != nil {
		return 0, nil, 0, err
	}
	start, rest, err = readTime(rest)
	if err == nil && len(rest) != 0 {
		err = fmt.Errorf("%w: window index key with %d trailing bytes", ErrCorrupt, len(rest))
	}
	return closeMs, key, start, err
}

func outboxKey(ns string, id uint64) []byte {
	return binary.BigEndian.AppendUint64(windowNSKey(prefixWindowOutbox, ns), id)
}

func timerKey(ns string, t int64, key []byte) []byte {
	return appendComponent(appendTime(windowNSKey(prefixWindowTimer, ns), t), key)
}

// windowMeta is a namespace's bookkeeping.
type windowMeta struct {
	Watermark      int64
	MaxEventTime   int64
	NextEmissionID uint64
	Pending        int64
	OpenWindows    int64
	LateDropped    int64
	LateReturned   int64
	Adds           int64
	// LowestSegment is the lowest data segment not yet dropped.
	LowestSegment uint64
	// Sources names the namespace's sources, sorted. Each entry reads
	// their records by these names, point reads: iterating the source
	// prefix instead steps over every overwritten version of a source
	// record still in the memtable, one per commit since the last flush,
	// and made each commit slower than the one before.
	Sources []string
}

// MinWatermark is the watermark of a source or a namespace that has seen
// nothing: no window closes.
const MinWatermark = -1

func newWindowMeta() windowMeta {
	return windowMeta{Watermark: MinWatermark, MaxEventTime: MinWatermark, NextEmissionID: 1}
}

func (m *windowMeta) encode() []byte {
	b := make([]byte, 0, 64)
	for _, v := range []int64{m.Watermark, m.MaxEventTime, m.Pending, m.OpenWindows, m.LateDropped, m.LateReturned, m.Adds} {
		b = binary.AppendVarint(b, v)
	}
	b = binary.AppendUvarint(b, m.NextEmissionID)
	b = binary.AppendUvarint(b, m.LowestSegment)
	b = binary.AppendUvarint(b, uint64(len(m.Sources)))
	for _, s := range m.Sources {
		b = appendLenBytes(b, []byte(s))
	}
	return b
}

func decodeWindowMeta(b []byte) (windowMeta, error) {
	d := &wdec{b: b}
	var m windowMeta
	for _, p := range []*int64{&m.Watermark, &m.MaxEventTime, &m.Pending, &m.OpenWindows, &m.LateDropped, &m.LateReturned, &m.Adds} {
		*p = d.varint()
	}
	m.NextEmissionID, m.LowestSegment = d.uvarint(), d.uvarint()
	if n := d.uvarint(); d.err == nil {
		if n > uint64(len(d.b)) {
			d.fail("source count")
		} else {
			m.Sources = make([]string, 0, n)
			for range n {
				m.Sources = append(m.Sources, string(d.bytes()))
			}
		}
	}
	return m, d.done("window namespace meta")
}

// sourceState is one source's progress in a namespace.
type sourceState struct {
	Watermark    int64
	MaxEventTime int64
	// LastActive is the leader's clock (Unix ns) of its last add or hint,
	// or SourceRestored.
	LastActive int64
}

// SourceRestored is the last activity of a source whose state a restore
// brought back (PrepareRestore) and that no entry has recomputed since.
// The clock of the cluster that took the checkpoint says nothing of how
// long the source has been silent in the new one: such a source is not
// idle, and the first entry that recomputes its namespace (a commit that
// names it, or the tick the leader proposes for it, see WindowTickDue)
// sets its last activity to that entry's time, from which its idle
// timeout runs. Otherwise a checkpoint older than the idle timeout would
// make every restored source idle at once, and the namespace's watermark
// would jump past the windows a lagging partition's replayed records still
// belong to, judging them late where the first run did not.
const SourceRestored = math.MinInt64

func (s *sourceState) encode() []byte {
	b := binary.AppendVarint(nil, s.Watermark)
	b = binary.AppendVarint(b, s.MaxEventTime)
	return binary.AppendVarint(b, s.LastActive)
}

func decodeSourceState(b []byte) (sourceState, error) {
	d := &wdec{b: b}
	s := sourceState{Watermark: d.varint(), MaxEventTime: d.varint(), LastActive: d.varint()}
	return s, d.done("window source")
}

// aggState is the aggregate of a window, a hopping slice or a session.
type aggState struct {
	Count    int64
	Int      int64
	Float    float64
	Bytes    []byte
	LastTime int64 // AggLast: the event time of Bytes
	// Values are AggList's values with their event times, in event-time
	// order (ties in add order), at most the spec's MaxListValues.
	Values    []timedValue
	Truncated bool
	// SessionLast is a session's last event time.
	SessionLast int64
	// over counts the wraps of Int past the int64 range while combine
	// adds up int sums (see addSum); it is never stored: a stored sum is
	// in range.
	over int64
}

type timedValue struct {
	T int64
	V []byte
}

func (s *aggState) encode(dst []byte) []byte {
	dst = binary.AppendVarint(dst, s.Count)
	dst = binary.AppendVarint(dst, s.Int)
	dst = binary.BigEndian.AppendUint64(dst, math.Float64bits(s.Float))
	dst = appendLenBytes(dst, s.Bytes)
	dst = binary.AppendVarint(dst, s.LastTime)
	dst = binary.AppendUvarint(dst, uint64(len(s.Values)))
	for _, v := range s.Values {
		dst = binary.AppendVarint(dst, v.T)
		dst = appendLenBytes(dst, v.V)
	}
	tr := byte(0)
	if s.Truncated {
		tr = 1
	}
	dst = append(dst, tr)
	return binary.AppendVarint(dst, s.SessionLast)
}

func decodeAggState(b []byte) (aggState, error) {
	d := &wdec{b: b}
	var s aggState
	s.Count, s.Int, s.Float = d.varint(), d.varint(), d.float()
	s.Bytes, s.LastTime = d.bytes(), d.varint()
	if n := d.uvarint(); d.err == nil && n > 0 {
		if n > uint64(len(d.b)) {
			d.fail("list length")
		} else {
			s.Values = make([]timedValue, n)
			for i := range s.Values {
				s.Values[i] = timedValue{T: d.varint(), V: d.bytes()}
			}
		}
	}
	s.Truncated = d.byte() == 1
	s.SessionLast = d.varint()
	return s, d.done("window aggregate")
}

func encodeEmission(e *command.Emission) []byte {
	b := append(make([]byte, 0, 48+len(e.Key)+len(e.Bytes)), byte(e.Kind))
	b = appendLenBytes(b, e.Key)
	for _, v := range []int64{e.StartMs, e.EndMs, e.Count, e.Int} {
		b = binary.AppendVarint(b, v)
	}
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(e.Float))
	b = appendLenBytes(b, e.Bytes)
	b = binary.AppendUvarint(b, uint64(len(e.Values)))
	for _, v := range e.Values {
		b = appendLenBytes(b, v)
	}
	tr := byte(0)
	if e.Truncated {
		tr = 1
	}
	b = append(b, tr)
	return binary.AppendVarint(b, e.Watermark)
}

func decodeEmission(ns string, id uint64, b []byte) (command.Emission, error) {
	d := &wdec{b: b}
	e := command.Emission{Namespace: ns, ID: id}
	e.Kind = command.EmissionKind(d.byte())
	e.Key = d.bytes()
	e.StartMs, e.EndMs, e.Count, e.Int = d.varint(), d.varint(), d.varint(), d.varint()
	e.Float, e.Bytes = d.float(), d.bytes()
	if n := d.uvarint(); d.err == nil && n > 0 {
		if n > uint64(len(d.b)) {
			d.fail("list length")
		} else {
			e.Values = make([][]byte, n)
			for i := range e.Values {
				e.Values[i] = d.bytes()
			}
		}
	}
	e.Truncated = d.byte() == 1
	e.Watermark = d.varint()
	return e, d.done("emission")
}

func appendLenBytes(dst, b []byte) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(b))), b...)
}

// wdec decodes window records; the first error sticks.
type wdec struct {
	b   []byte
	err error
}

func (d *wdec) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: window record: bad %s", ErrCorrupt, what)
	}
	d.b = nil
}

func (d *wdec) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *wdec) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *wdec) byte() byte {
	if len(d.b) < 1 {
		d.fail("byte")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *wdec) float() float64 {
	if len(d.b) < 8 {
		d.fail("float")
		return 0
	}
	v := math.Float64frombits(binary.BigEndian.Uint64(d.b))
	d.b = d.b[8:]
	return v
}

func (d *wdec) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("length")
		return nil
	}
	v := slices.Clone(d.b[:n])
	d.b = d.b[n:]
	return v
}

func (d *wdec) done(what string) error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %s with %d trailing bytes", ErrCorrupt, what, len(d.b))
	}
	return d.err
}
