package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/statedhq/stated/raftstore/command"
)

// winNS is one window namespace as an entry sees it: its spec, and its
// bookkeeping and sources as the entry changes them; written back when the
// entry finishes.
type winNS struct {
	name string
	spec command.WindowSpec // defaults filled in
	meta windowMeta
	// wm0 is the watermark at the start of the entry: lateness is judged
	// against it.
	wm0     int64
	sources map[string]*sourceState // read or written by this entry
	dirty   map[string]bool
	// indexedLow and timerLow are the least close time this entry
	// indexed a window at and the least time it set a timer at
	// (math.MaxInt64: none). Every close index record and timer at or
	// below wm0 went when the watermark reached wm0, so what is due at
	// the entry's end lies at or above the lesser of wm0+1 and these
	// (dueFrom).
	indexedLow, timerLow int64
}

// dueFrom is the least time a close index record (timers: a timer) of n
// may have at the entry's end. The scans for what is due start there: the
// records the watermark passed before are deleted, one point deletion
// each, and a scan from the namespace's first key would step over every
// such deletion still in the memtable, on every entry.
func (n *winNS) dueFrom(low int64) int64 { return min(n.wm0+1, low) }

// segment is the data segment of an anchor time (see windows_keys.go).
func (n *winNS) segment(t int64) uint64 { return uint64(t / segmentWidth(&n.spec)) }

// segmentWidth is the time span of a data segment: half the retention, so
// that a segment is dropped at most 1.5 retentions after its first window
// starts, and at least a second, so that fine windows share segments.
func segmentWidth(s *command.WindowSpec) int64 { return max(s.RetentionMs/2, 1000) }

func (n *winNS) late() command.AddStatus {
	if n.spec.Late == command.LateReturn {
		n.meta.LateReturned++
		return command.AddLateReturned
	}
	n.meta.LateDropped++
	return command.AddLateDropped
}

// windowApply is the window part of one entry.
type windowApply struct {
	a       *applier
	nss     map[string]*winNS
	adds    []command.AddStatus
	emitted []command.Emission
}

func (a *applier) windows() *windowApply {
	if a.win == nil {
		a.win = &windowApply{a: a, nss: map[string]*winNS{}}
	}
	return a.win
}

// fieldReject turns a command.FieldError into the state machine's refusal.
func fieldReject(err error) error {
	var fe *command.FieldError
	if errors.As(err, &fe) {
		return &RejectError{Field: fe.Field, Reason: fe.Reason}
	}
	return err
}

func hasWindowParts(c *command.Commit) bool {
	return c != nil && len(c.WindowAdds)+len(c.WatermarkHints)+len(c.Acks)+len(c.Timers) > 0
}

// ns returns the namespace named in field, or refuses the entry when it is
// not defined.
func (w *windowApply) ns(field, name string) (*winNS, error) {
	if n, ok := w.nss[name]; ok {
		return n, nil
	}
	// The spec and the bookkeeping come from the record cache: the spec
	// is written once, so a read through Pebble would look for it in
	// every level above the one holding it, on every commit.
	v, ok, err := w.a.record(windowSpecKey(name))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, reject(field, "window namespace %q is not defined", name)
	}
	spec, err := command.DecodeWindowSpec(v)
	if err != nil {
		return nil, fmt.Errorf("%w: window spec of %q: %v", ErrCorrupt, name, err)
	}
	mv, ok, err := w.a.record(windowMetaKey(name))
	if err != nil {
		return nil, err
	}
	meta := newWindowMeta()
	if ok {
		if meta, err = decodeWindowMeta(mv); err != nil {
			return nil, err
		}
	}
	n := &winNS{name: name, spec: spec.WithDefaults(), meta: meta, wm0: meta.Watermark,
		sources: map[string]*sourceState{}, dirty: map[string]bool{},
		indexedLow: math.MaxInt64, timerLow: math.MaxInt64}
	w.nss[name] = n
	return n, nil
}

// defineWindows records a window namespace, or does nothing when it exists
// with the same spec. It reports whether it created the namespace.
func (a *applier) defineWindows(s *command.WindowSpec) (bool, error) {
	if s == nil {
		return false, reject("windows", "a window spec is required")
	}
	if err := command.ValidateWindowSpec(s); err != nil {
		return false, fieldReject(err)
	}
	spec := s.WithDefaults()
	v, ok, err := a.record(windowSpecKey(spec.Namespace))
	if err != nil {
		return false, err
	}
	if ok {
		was, err := command.DecodeWindowSpec(v)
		if err != nil {
			return false, fmt.Errorf("%w: window spec of %q: %v", ErrCorrupt, spec.Namespace, err)
		}
		if field, wasV, nowV := command.DiffWindowSpecs(*was, spec); field != "" {
			return false, reject(field, "redefining window namespace %q: %s is %s, not %s", spec.Namespace, field, wasV, nowV)
		}
		return false, nil
	}
	if err := a.setRecord(windowSpecKey(spec.Namespace), command.EncodeWindowSpec(&spec)); err != nil {
		return false, err
	}
	m := newWindowMeta()
	return true, a.setRecord(windowMetaKey(spec.Namespace), m.encode())
}

// windowCommit applies a commit's window parts: acknowledgements first
// (so that a commit may make room in a full outbox), then adds, hints and
// timers in order; then every namespace the commit names recomputes its
// watermark and closes what became due.
func (a *applier) windowCommit(c *command.Commit) error {
	if !hasWindowParts(c) {
		return nil
	}
	w := a.windows()
	for i := range c.WindowAdds {
		ad := &c.WindowAdds[i]
		if _, err := w.ns(fmt.Sprintf("window_adds[%d].namespace", i), ad.Namespace); err != nil {
			return err
		}
		if err := command.ValidateEventTime(fmt.Sprintf("window_adds[%d].event_time_ms", i), ad.EventTimeMs); err != nil {
			return fieldReject(err)
		}
	}
	for i := range c.WatermarkHints {
		h := &c.WatermarkHints[i]
		if _, err := w.ns(fmt.Sprintf("watermark_hints[%d].namespace", i), h.Namespace); err != nil {
			return err
		}
		if err := command.ValidateEventTime(fmt.Sprintf("watermark_hints[%d].time_ms", i), h.TimeMs); err != nil {
			return fieldReject(err)
		}
	}
	for i := range c.Acks {
		if _, err := w.ns(fmt.Sprintf("acks[%d].namespace", i), c.Acks[i].Namespace); err != nil {
			return err
		}
	}
	for i := range c.Timers {
		t := &c.Timers[i]
		if _, err := w.ns(fmt.Sprintf("timers[%d].namespace", i), t.Namespace); err != nil {
			return err
		}
		if err := command.ValidateEventTime(fmt.Sprintf("timers[%d].time_ms", i), t.TimeMs); err != nil {
			return fieldReject(err)
		}
	}
	for i := range c.Acks {
		if err := w.ack(i, &c.Acks[i]); err != nil {
			return err
		}
	}
	if err := w.checkOutbox(c); err != nil {
		return err
	}
	for i := range c.WindowAdds {
		if err := w.add(i, &c.WindowAdds[i]); err != nil {
			return err
		}
	}
	for i := range c.WatermarkHints {
		h := &c.WatermarkHints[i]
		n := w.nss[h.Namespace]
		src, err := w.source(n, h.Source)
		if err != nil {
			return err
		}
		src.Watermark = max(src.Watermark, h.TimeMs)
		src.LastActive = a.now
	}
	for i := range c.Timers {
		t := &c.Timers[i]
		k := timerKey(t.Namespace, t.TimeMs, t.Key)
		var err error
		if t.Delete {
			err = a.b.Delete(k, nil)
		} else {
			n := w.nss[t.Namespace]
			n.timerLow = min(n.timerLow, t.TimeMs)
			err = a.b.Set(k, nil, nil)
		}
		if err != nil {
			return err
		}
	}
	return w.finish(slices.Sorted(maps.Keys(w.nss)))
}

func (w *windowApply) ack(i int, ack *command.EmissionAck) error {
	n := w.nss[ack.Namespace]
	k := outboxKey(ack.Namespace, ack.ID)
	_, ok, err := w.a.get(k)
	if err != nil {
		return err
	}
	if !ok {
		return reject(fmt.Sprintf("acks[%d].id", i), "emission %d of %q is not pending (never emitted or already acknowledged)", ack.ID, ack.Namespace)
	}
	n.meta.Pending--
	return w.a.b.Delete(k, nil)
}

// checkOutbox refuses a commit that adds to or hints a namespace whose
// outbox is full.
func (w *windowApply) checkOutbox(c *command.Commit) error {
	check := func(ns string) error {
		n := w.nss[ns]
		if n.meta.Pending >= n.spec.MaxPendingEmissions {
			return &OutboxFullError{Namespace: ns, Pending: n.meta.Pending}
		}
		return nil
	}
	for i := range c.WindowAdds {
		if err := check(c.WindowAdds[i].Namespace); err != nil {
			return err
		}
	}
	for i := range c.WatermarkHints {
		if err := check(c.WatermarkHints[i].Namespace); err != nil {
			return err
		}
	}
	return nil
}

// source returns a source's state, to read or change; it is written when
// the entry finishes.
func (w *windowApply) source(n *winNS, name string) (*sourceState, error) {
	if s, ok := n.sources[name]; ok {
		n.dirty[name] = true
		return s, nil
	}
	s := &sourceState{Watermark: MinWatermark, MaxEventTime: MinWatermark}
	v, ok, err := w.a.get(windowSourceKey(n.name, name))
	if err != nil {
		return nil, err
	}
	if ok {
		if *s, err = decodeSourceState(v); err != nil {
			return nil, err
		}
	} else if i, found := slices.BinarySearch(n.meta.Sources, name); !found {
		n.meta.Sources = slices.Insert(n.meta.Sources, i, name)
	}
	n.sources[name], n.dirty[name] = s, true
	return s, nil
}

func (w *windowApply) add(i int, ad *command.WindowAdd) error {
	n := w.nss[ad.Namespace]
	t := ad.EventTimeMs
	src, err := w.source(n, ad.Source)
	if err != nil {
		return err
	}
	src.MaxEventTime = max(src.MaxEventTime, t)
	src.Watermark = max(src.Watermark, src.MaxEventTime-n.spec.MaxOutOfOrderMs)
	src.LastActive = w.a.now
	n.meta.MaxEventTime = max(n.meta.MaxEventTime, t)
	n.meta.Adds++
	var st command.AddStatus
	switch n.spec.Shape {
	case command.ShapeTumbling:
		st, err = w.addTumbling(i, n, ad)
	case command.ShapeHopping:
		st, err = w.addHopping(i, n, ad)
	default:
		st, err = w.addSession(i, n, ad)
	}
	if err != nil {
		return err
	}
	w.adds = append(w.adds, st)
	return nil
}

func overflowReject(i int, key []byte, start, end int64) error {
	return reject(fmt.Sprintf("window_adds[%d].int_value", i), "the sum of window [%d, %d) of key %q would overflow int64", start, end, key)
}

// getAgg reads the aggregate under k, through the window cache.
func (w *windowApply) getAgg(k []byte) (aggState, bool, error) {
	v, ok, err := w.a.rec.aggs.get(w.a.r, k)
	if err != nil || !ok {
		return aggState{}, false, err
	}
	s, err := decodeAggState(v)
	return s, true, err
}

// setAgg writes the aggregate under k, which getAgg reads back.
func (w *windowApply) setAgg(k []byte, s *aggState) error {
	w.a.vbuf = s.encode(w.a.vbuf[:0])
	w.a.rec.aggs.set(k, w.a.vbuf)
	return w.a.b.Set(k, w.a.vbuf, nil)
}

// setSessionAgg writes a session's aggregate under k. Sessions are read
// by scans, never through the window cache, which only forgets k.
func (w *windowApply) setSessionAgg(k []byte, s *aggState) error {
	w.a.vbuf = s.encode(w.a.vbuf[:0])
	w.a.rec.aggs.forget(k)
	return w.a.b.Set(k, w.a.vbuf, nil)
}

// deleteAgg deletes the aggregate under k.
func (w *windowApply) deleteAgg(k []byte) error {
	w.a.rec.aggs.forget(k)
	return w.a.b.Delete(k, nil)
}

// index records an open window in the close index.
func (w *windowApply) index(n *winNS, closeMs int64, key []byte, start int64, seg uint64) error {
	n.indexedLow = min(n.indexedLow, closeMs)
	w.a.ebuf = appendWindowIndexKey(w.a.ebuf[:0], n.name, closeMs, key, start)
	return w.a.b.Set(w.a.ebuf, segmentValue(seg), nil)
}

func segmentValue(seg uint64) []byte {
	return []byte{byte(seg >> 56), byte(seg >> 48), byte(seg >> 40), byte(seg >> 32), byte(seg >> 24), byte(seg >> 16), byte(seg >> 8), byte(seg)}
}

func (w *windowApply) addTumbling(i int, n *winNS, ad *command.WindowAdd) (command.AddStatus, error) {
	t, size := ad.EventTimeMs, n.spec.SizeMs
	start := t - t%size
	end := start + size
	closeMs := end + n.spec.GraceMs
	if closeMs <= n.wm0 {
		return n.late(), nil
	}
	seg := n.segment(start)
	k := appendWindowDataKey(nil, n.name, seg, ad.Key, start)
	st, existed, err := w.getAgg(k)
	if err != nil {
		return 0, err
	}
	// The window's data exists exactly when it is open: a closed one's
	// records would be late.
	if !st.addRecord(&n.spec, t, ad) {
		return 0, overflowReject(i, ad.Key, start, end)
	}
	if err := w.setAgg(k, &st); err != nil {
		return 0, err
	}
	if !existed {
		if err := w.index(n, closeMs, ad.Key, start, seg); err != nil {
			return 0, err
		}
		n.meta.OpenWindows++
	}
	if n.spec.Emit == command.EmitUpdates {
		w.emit(n, command.EmissionUpdate, ad.Key, start, end, &st)
	}
	return command.AddOnTime, nil
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// addHopping adds the record to its slice, of width gcd(size, advance):
// every window boundary is a slice boundary, so a window is the
// combination of the slices in it. The close index holds the windows.
func (w *windowApply) addHopping(i int, n *winNS, ad *command.WindowAdd) (command.AddStatus, error) {
	t, size, adv, grace := ad.EventTimeMs, n.spec.SizeMs, n.spec.AdvanceMs, n.spec.GraceMs
	lastStart := t - t%adv
	if lastStart+size+grace <= n.wm0 {
		return n.late(), nil
	}
	g := gcd(size, adv)
	slice := t - t%g
	seg := n.segment(slice)
	k := appendWindowDataKey(nil, n.name, seg, ad.Key, slice)
	st, existed, err := w.getAgg(k)
	if err != nil {
		return 0, err
	}
	open := hoppingOpenWindows(t, size, adv, grace, n.wm0)
	if !existed && len(open) > 0 {
		// A new slice may be the first of its open windows; an existing
		// one's open windows are indexed since it was written. A window
		// is new when no other slice of the key lies in it: the nearest
		// slices before and after tell.
		prev, next, err := neighbourSlices(w.a.r, n, ad.Key, slice)
		if err != nil {
			return 0, err
		}
		for _, s := range open {
			if prev >= s || next < s+size {
				continue
			}
			if err := w.index(n, s+size+grace, ad.Key, s, n.segment(s)); err != nil {
				return 0, err
			}
			n.meta.OpenWindows++
		}
	}
	if !st.addRecord(&n.spec, t, ad) {
		return 0, overflowReject(i, ad.Key, slice, slice+g)
	}
	if err := w.setAgg(k, &st); err != nil {
		return 0, err
	}
	if n.spec.Emit == command.EmitUpdates {
		for _, s := range open {
			agg, _, err := combineSlices(w.a.r, n.name, &n.spec, n.meta.LowestSegment, ad.Key, s, s+size)
			if err != nil {
				return 0, err
			}
			w.emit(n, command.EmissionUpdate, ad.Key, s, s+size, &agg)
		}
	}
	return command.AddOnTime, nil
}

// sessionCandidate is an open session that a record may merge with.
type sessionCandidate struct {
	seg   uint64
	start int64
	st    aggState
}

// addSession merges the record with every open session of its key it
// bridges (start - gap <= t <= last + gap) into one session.
func (w *windowApply) addSession(i int, n *winNS, ad *command.WindowAdd) (command.AddStatus, error) {
	t, gap, grace := ad.EventTimeMs, n.spec.GapMs, n.spec.GraceMs
	var cands []sessionCandidate
	// closedAt lists the closed sessions the scan saw under a short key:
	// the new session may need one's key (see windows_keys.go).
	var closedAt []sessionCandidate
	// A candidate's last event is in [t-gap, the namespace's greatest
	// event time]; it is stored in the segment of its last event.
	segLo := max(n.segment(max(t-gap, 0)), n.meta.LowestSegment)
	err := scanKeyData(w.a.r, n.name, ad.Key, segLo, n.segment(n.meta.MaxEventTime), 0, t+gap+1,
		func(seg uint64, start int64, displaced bool, v []byte) error {
			if displaced {
				return nil // closed, and under a key no new session takes
			}
			st, err := decodeAggState(v)
			if err != nil {
				return err
			}
			if st.SessionLast+gap+grace <= n.wm0 {
				// Closed: closed sessions never merge.
				if start <= t {
					closedAt = append(closedAt, sessionCandidate{seg: seg, start: start, st: st})
				}
				return nil
			}
			if st.SessionLast < t-gap {
				return nil // too early
			}
			cands = append(cands, sessionCandidate{seg: seg, start: start, st: st})
			return nil
		})
	if err != nil {
		return 0, err
	}
	if len(cands) == 0 && t+gap+grace <= n.wm0 {
		return n.late(), nil
	}
	slices.SortFunc(cands, func(a, b sessionCandidate) int { return cmpInt(a.start, b.start) })
	start, st := t, aggState{SessionLast: t}
	for _, c := range cands {
		start = min(start, c.start)
		// An int sum may leave the int64 range here and come back with
		// a later part: only the merged session's whole sum counts.
		st.combine(&n.spec, &c.st)
	}
	if !st.addRecord(&n.spec, t, ad) {
		return 0, overflowReject(i, ad.Key, start, st.SessionLast+1)
	}
	last := st.SessionLast
	seg := n.segment(last)
	newKey := appendWindowDataKey(nil, n.name, seg, ad.Key, start)
	for _, c := range cands {
		if old := appendWindowDataKey(nil, n.name, c.seg, ad.Key, c.start); !bytes.Equal(old, newKey) {
			if err := w.deleteAgg(old); err != nil {
				return 0, err
			}
		}
		if err := w.a.b.Delete(appendWindowIndexKey(nil, n.name, c.st.SessionLast+gap+grace, ad.Key, c.start), nil); err != nil {
			return 0, err
		}
	}
	for _, c := range closedAt {
		if c.seg == seg && c.start == start {
			// A closed session holds the new one's key: move it to its
			// long key, which ends in its last event time.
			if err := w.setSessionAgg(appendDisplacedSessionKey(nil, n.name, seg, ad.Key, start, c.st.SessionLast), &c.st); err != nil {
				return 0, err
			}
			break
		}
	}
	if err := w.setSessionAgg(newKey, &st); err != nil {
		return 0, err
	}
	if err := w.index(n, last+gap+grace, ad.Key, start, seg); err != nil {
		return 0, err
	}
	n.meta.OpenWindows += 1 - int64(len(cands))
	if n.spec.Emit == command.EmitUpdates {
		w.emit(n, command.EmissionUpdate, ad.Key, start, last+1, &st)
	}
	return command.AddOnTime, nil
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// emit writes an emission to n's outbox under its next id.
func (w *windowApply) emit(n *winNS, kind command.EmissionKind, key []byte, start, end int64, st *aggState) {
	e := command.Emission{Namespace: n.name, ID: n.meta.NextEmissionID, Kind: kind, Key: slices.Clone(key),
		StartMs: start, EndMs: end, Watermark: n.meta.Watermark}
	if st != nil {
		st.emission(&e)
	}
	n.meta.NextEmissionID++
	n.meta.Pending++
	w.emitted = append(w.emitted, e)
}
