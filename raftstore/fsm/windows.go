package fsm

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"

	"github.com/statedhq/stated/raftstore/command"
)

// Window state: namespaces of event-time windows (tumbling, hopping,
// session) that the state machine assigns, aggregates and closes itself,
// in the entry that moves a namespace's watermark past a window's close
// time; each closed window's result goes to the namespace's outbox under a
// stable id until a later commit acknowledges it. docs/WINDOWS.md
// describes the semantics and the storage; windows_keys.go the records.

// WindowStatus is a window namespace's spec and progress.
type WindowStatus struct {
	Spec                      command.WindowSpec
	Watermark, MaxEventTime   int64
	OpenWindows, Pending      int64
	LateDropped, LateReturned int64
	Adds                      int64
	Sources                   []SourceStatus
}

// SourceStatus is one source's progress in a namespace.
type SourceStatus struct {
	Source                  string
	Watermark, MaxEventTime int64
	// LastActive is Unix ns, by the leader's clock; 0 for a source that
	// a restore brought back and no entry has recomputed since
	// (SourceRestored): the leader's first tick sets it.
	LastActive int64
}

// Window is a window as a query returns it: open, or closed and still
// retained (Closed).
type Window struct {
	Key                     []byte
	StartMs, EndMs, CloseMs int64
	Closed                  bool
	Count                   int64
	Int                     int64
	Float                   float64
	Bytes                   []byte
	Values                  [][]byte
	Truncated               bool
}

// reader returns a consistent view of the state, and its release.
func (f *FSM) reader() (pebble.Reader, func(), error) {
	f.mu.RLock()
	if f.closed {
		f.mu.RUnlock()
		return nil, nil, ErrClosed
	}
	snap := f.db.NewSnapshot()
	return snap, func() { snap.Close(); f.mu.RUnlock() }, nil
}

func readWindowNS(r pebble.Reader, ns string) (*command.WindowSpec, windowMeta, bool, error) {
	v, ok, err := getRecord(r, windowSpecKey(ns))
	if err != nil || !ok {
		return nil, windowMeta{}, false, err
	}
	spec, err := command.DecodeWindowSpec(v)
	if err != nil {
		return nil, windowMeta{}, false, fmt.Errorf("%w: window spec of %q: %v", ErrCorrupt, ns, err)
	}
	meta := newWindowMeta()
	mv, ok, err := getRecord(r, windowMetaKey(ns))
	if err != nil {
		return nil, windowMeta{}, false, err
	}
	if ok {
		if meta, err = decodeWindowMeta(mv); err != nil {
			return nil, windowMeta{}, false, err
		}
	}
	s := spec.WithDefaults()
	return &s, meta, true, nil
}

// CheckTimersOutbox refuses (*OutboxFullError) a commit that sets timers
// in a namespace whose outbox holds max_pending_emissions already: a
// timer at or below the watermark fires, and writes an emission, in the
// commit that sets it. The apply refuses adds and hints on a full outbox
// and lets timers through (as every release before did, so that replicas
// of two releases apply one log alike); the leader checks timers before
// it proposes. Commits in flight at once can take the outbox past the cap
// by what they fire.
func (f *FSM) CheckTimersOutbox(c *command.Commit) error {
	if c == nil || len(c.Timers) == 0 {
		return nil
	}
	r, done, err := f.reader()
	if err != nil {
		return err
	}
	defer done()
	acked := map[string]int64{} // the commit's own acks apply first
	for i := range c.Acks {
		acked[c.Acks[i].Namespace]++
	}
	seen := map[string]bool{}
	for i := range c.Timers {
		ns := c.Timers[i].Namespace
		if seen[ns] {
			continue
		}
		seen[ns] = true
		spec, meta, ok, err := readWindowNS(r, ns)
		if err != nil {
			return err
		}
		if ok && meta.Pending-acked[ns] >= spec.MaxPendingEmissions {
			return &OutboxFullError{Namespace: ns, Pending: meta.Pending}
		}
	}
	return nil
}

// WindowSpec returns the spec of window namespace ns, with its defaults
// filled in.
func (f *FSM) WindowSpec(ns string) (command.WindowSpec, bool, error) {
	r, done, err := f.reader()
	if err != nil {
		return command.WindowSpec{}, false, err
	}
	defer done()
	spec, _, ok, err := readWindowNS(r, ns)
	if err != nil || !ok {
		return command.WindowSpec{}, false, err
	}
	return *spec, true, nil
}

func windowNames(r pebble.Reader) ([]string, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixWindowSpec}, UpperBound: []byte{prefixWindowSpec + 1}})
	if err != nil {
		return nil, err
	}
	var names []string
	for ok := it.First(); ok; ok = it.Next() {
		name, _, err := readComponent(it.Key()[1:])
		if err != nil {
			it.Close()
			return nil, err
		}
		names = append(names, string(name))
	}
	return names, it.Close()
}

func readSources(r pebble.Reader, ns string, names []string) ([]SourceStatus, error) {
	out := make([]SourceStatus, 0, len(names))
	for _, name := range names {
		s, err := readSource(r, ns, name)
		if err != nil {
			return nil, err
		}
		last := s.LastActive
		if last == SourceRestored {
			last = 0
		}
		out = append(out, SourceStatus{Source: name, Watermark: s.Watermark, MaxEventTime: s.MaxEventTime, LastActive: last})
	}
	return out, nil
}

// WindowStatuses returns every window namespace's status, by name.
func (f *FSM) WindowStatuses() ([]WindowStatus, error) {
	r, done, err := f.reader()
	if err != nil {
		return nil, err
	}
	defer done()
	names, err := windowNames(r)
	if err != nil {
		return nil, err
	}
	out := make([]WindowStatus, 0, len(names))
	for _, ns := range names {
		spec, m, _, err := readWindowNS(r, ns)
		if err != nil {
			return nil, err
		}
		srcs, err := readSources(r, ns, m.Sources)
		if err != nil {
			return nil, err
		}
		out = append(out, WindowStatus{Spec: *spec, Watermark: m.Watermark, MaxEventTime: m.MaxEventTime,
			OpenWindows: m.OpenWindows, Pending: m.Pending, LateDropped: m.LateDropped, LateReturned: m.LateReturned,
			Adds: m.Adds, Sources: srcs})
	}
	return out, nil
}

// WindowTickDue reports whether some namespace's watermark would move if
// it were recomputed at nowNanos (a source went idle since it was last
// computed), or a namespace has a source that a restore brought back and
// no entry has recomputed since (SourceRestored), whose idle timeout the
// tick starts. The leader then proposes a TypeWindowTick.
func (f *FSM) WindowTickDue(nowNanos int64) (bool, error) {
	r, done, err := f.reader()
	if err != nil {
		return false, err
	}
	defer done()
	names, err := windowNames(r)
	if err != nil {
		return false, err
	}
	for _, ns := range names {
		spec, m, _, err := readWindowNS(r, ns)
		if err != nil {
			return false, err
		}
		n := &winNS{name: ns, spec: *spec, meta: m, sources: make(map[string]*sourceState, len(m.Sources))}
		for _, name := range m.Sources {
			s, err := readSource(r, ns, name)
			if err != nil {
				return false, err
			}
			if s.LastActive == SourceRestored {
				return true, nil
			}
			n.sources[name] = &s
		}
		wm, err := namespaceWatermark(r, n, nowNanos, nil)
		if err != nil {
			return false, err
		}
		if wm > m.Watermark {
			return true, nil
		}
	}
	return false, nil
}

// Windows returns key's windows in ns that start in [fromMs, toMs), open
// or closed and retained, by start.
func (f *FSM) Windows(ns string, key []byte, fromMs, toMs int64) ([]Window, error) {
	r, done, err := f.reader()
	if err != nil {
		return nil, err
	}
	defer done()
	spec, m, ok, err := readWindowNS(r, ns)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, &RejectError{Field: "namespace", Reason: fmt.Sprintf("window namespace %q is not defined", ns)}
	}
	fromMs, toMs = max(fromMs, 0), min(toMs, command.MaxEventTime+1)
	if fromMs >= toMs {
		return nil, nil
	}
	w := segmentWidth(spec)
	var out []Window
	switch spec.Shape {
	case command.ShapeTumbling:
		err = scanKeyData(r, ns, key, max(uint64(fromMs/w), m.LowestSegment), uint64((toMs-1)/w), fromMs, toMs,
			func(_ uint64, start int64, _ bool, v []byte) error {
				st, err := decodeAggState(v)
				if err != nil {
					return err
				}
				out = append(out, makeWindow(spec, m.Watermark, key, start, start+spec.SizeMs, &st))
				return nil
			})
	case command.ShapeHopping:
		out, err = hoppingWindows(r, spec, m, ns, key, fromMs, toMs)
	case command.ShapeSession:
		// A session is stored in the segment of its last event, at or
		// after its start. Sessions of a key that start together (a
		// closed one, and a later one that bridged back to its start)
		// come by end.
		if m.MaxEventTime < fromMs {
			return nil, nil
		}
		err = scanKeyData(r, ns, key, max(uint64(fromMs/w), m.LowestSegment), uint64(m.MaxEventTime/w), fromMs, toMs,
			func(_ uint64, start int64, _ bool, v []byte) error {
				st, err := decodeAggState(v)
				if err != nil {
					return err
				}
				out = append(out, makeWindow(spec, m.Watermark, key, start, st.SessionLast+1, &st))
				return nil
			})
		slices.SortFunc(out, func(a, b Window) int { return cmp.Or(cmpInt(a.StartMs, b.StartMs), cmpInt(a.EndMs, b.EndMs)) })
	}
	return out, err
}

// hoppingWindows combines key's slices into the open windows that start
// in [from, to) and hold at least one record.
func hoppingWindows(r pebble.Reader, spec *command.WindowSpec, m windowMeta, ns string, key []byte, from, to int64) ([]Window, error) {
	size, adv, w := spec.SizeMs, spec.AdvanceMs, segmentWidth(spec)
	from = (from + adv - 1) / adv * adv // the first window start at or after from
	if from >= to {
		return nil, nil
	}
	type slice struct {
		start int64
		st    aggState
	}
	var sl []slice
	hi := min(to-1+size, command.MaxEventTime+1)
	err := scanKeyData(r, ns, key, max(uint64(from/w), m.LowestSegment), uint64((hi-1)/w), from, hi,
		func(_ uint64, start int64, _ bool, v []byte) error {
			st, err := decodeAggState(v)
			if err != nil {
				return err
			}
			sl = append(sl, slice{start, st})
			return nil
		})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(sl, func(a, b slice) int { return cmpInt(a.start, b.start) })
	var starts []int64
	for _, s := range sl {
		first := (max(s.start-size+1, 0) + adv - 1) / adv * adv // the first window containing the slice
		for ws := max(first, from); ws <= s.start && ws < to; ws += adv {
			if len(starts) == 0 || starts[len(starts)-1] < ws {
				starts = append(starts, ws)
			}
		}
	}
	var out []Window
	for _, ws := range starts {
		// A closed hopping window's slices go on changing for the windows
		// still open that share them: its final result is its emission
		// alone, and a query shows only open hopping windows.
		if uint64(ws/w) < m.LowestSegment || ws+size+spec.GraceMs <= m.Watermark {
			continue
		}
		var agg aggState
		for _, s := range sl {
			if s.start >= ws && s.start < ws+size {
				agg.combine(spec, &s.st)
			}
		}
		agg.saturate()
		out = append(out, makeWindow(spec, m.Watermark, key, ws, ws+size, &agg))
	}
	return out, nil
}

func makeWindow(spec *command.WindowSpec, wm int64, key []byte, start, end int64, st *aggState) Window {
	w := Window{Key: slices.Clone(key), StartMs: start, EndMs: end}
	if spec.Shape == command.ShapeSession {
		w.CloseMs = end - 1 + spec.GapMs + spec.GraceMs
	} else {
		w.CloseMs = end + spec.GraceMs
	}
	w.Closed = w.CloseMs <= wm
	st.window(&w)
	return w
}

// OpenWindows returns ns's open windows after (afterKey, afterStart) in
// (key, start) order, at most limit (zero or less: all). A nil afterKey
// starts from the first window.
func (f *FSM) OpenWindows(ns string, afterKey []byte, afterStart int64, limit int) ([]Window, error) {
	r, done, err := f.reader()
	if err != nil {
		return nil, err
	}
	defer done()
	spec, m, ok, err := readWindowNS(r, ns)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, &RejectError{Field: "namespace", Reason: fmt.Sprintf("window namespace %q is not defined", ns)}
	}
	p := windowNSKey(prefixWindowIndex, ns)
	// Every index record at or below the watermark was deleted when the
	// watermark passed it (closeDue): start above it, not at the deletions.
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: appendTime(slices.Clone(p), m.Watermark+1), UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, err
	}
	var open []dueWindow
	for ok := it.First(); ok; ok = it.Next() {
		c, key, start, err := decodeWindowIndexKey(it.Key()[len(p):])
		if err != nil || len(it.Value()) != 8 {
			it.Close()
			return nil, fmt.Errorf("%w: window index record %x", ErrCorrupt, it.Key())
		}
		if afterKey != nil {
			if d := bytes.Compare(key, afterKey); d < 0 || (d == 0 && start <= afterStart) {
				continue
			}
		}
		open = append(open, dueWindow{closeMs: c, key: key, start: start, seg: binary.BigEndian.Uint64(it.Value())})
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	slices.SortFunc(open, func(a, b dueWindow) int {
		if d := bytes.Compare(a.key, b.key); d != 0 {
			return d
		}
		return cmpInt(a.start, b.start)
	})
	if limit > 0 && len(open) > limit {
		open = open[:limit]
	}
	out := make([]Window, 0, len(open))
	for _, d := range open {
		st, end, err := windowResult(r, ns, spec, m.LowestSegment, d.key, d.start, d.seg)
		if err != nil {
			return nil, err
		}
		out = append(out, makeWindow(spec, m.Watermark, d.key, d.start, end, &st))
	}
	return out, nil
}

// Emissions returns ns's pending emissions with ids above afterID, by id,
// at most limit (zero or less: all).
func (f *FSM) Emissions(ns string, afterID uint64, limit int) ([]command.Emission, error) {
	r, done, err := f.reader()
	if err != nil {
		return nil, err
	}
	defer done()
	_, meta, ok, err := readWindowNS(r, ns)
	if err != nil || !ok {
		if err == nil {
			err = &RejectError{Field: "namespace", Reason: fmt.Sprintf("window namespace %q is not defined", ns)}
		}
		return nil, err
	}
	if afterID == ^uint64(0) {
		return nil, nil
	}
	// Start at the first id that may be pending: reading from afterID+1
	// steps over the deletion of every acknowledged emission not yet
	// compacted away, and a processor reads from the first every second.
	from, low := afterID+1, f.outboxLows.get(ns)
	fromLow := from <= low
	if fromLow {
		from = low
	}
	p := windowNSKey(prefixWindowOutbox, ns)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: outboxKey(ns, from), UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, err
	}
	var out []command.Emission
	ok = it.First()
	if fromLow {
		// What this snapshot holds from low on tells the next read where
		// to start: the first pending emission, or the next id to come.
		switch {
		case !ok:
			f.outboxLows.raise(ns, meta.NextEmissionID)
		case len(it.Key()) == len(p)+8:
			f.outboxLows.raise(ns, binary.BigEndian.Uint64(it.Key()[len(p):]))
		}
	}
	for ; ok && (limit <= 0 || len(out) < limit); ok = it.Next() {
		k := it.Key()[len(p):]
		if len(k) != 8 {
			it.Close()
			return nil, fmt.Errorf("%w: outbox key %x", ErrCorrupt, it.Key())
		}
		e, err := decodeEmission(ns, binary.BigEndian.Uint64(k), it.Value())
		if err != nil {
			it.Close()
			return nil, err
		}
		out = append(out, e)
	}
	return out, it.Close()
}

// outboxLows keeps, per window namespace, an id below which no emission
// is pending, for Emissions to start at. An emission's id is above every
// id emitted before it, and only an ack removes one, so once a snapshot
// shows no emission pending below an id, none ever is again in this
// database: a read raises the bound to what its snapshot shows, whatever
// the state has become since. A database replaced under the state
// machine (reopen) resets it.
type outboxLows struct {
	mu  sync.Mutex
	low map[string]uint64
}

// get returns ns's bound: 1, the first id, until a read raised it.
func (o *outboxLows) get(ns string) uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return max(o.low[ns], 1)
}

func (o *outboxLows) raise(ns string, id uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if id > o.low[ns] {
		if o.low == nil {
			o.low = map[string]uint64{}
		}
		o.low[ns] = id
	}
}

func (o *outboxLows) reset() {
	o.mu.Lock()
	defer o.mu.Unlock()
	clear(o.low)
}
