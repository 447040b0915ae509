package fsm

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/cockroachdb/pebble/v2"

	"github.com/statedhq/stated/raftstore/command"
)

// finish ends the entry for the namespaces named, in order: it writes
// their sources, recomputes their watermarks, closes the windows and fires
// the timers that became due, drops expired segments, and writes their
// bookkeeping and the entry's emissions.
func (w *windowApply) finish(names []string) error {
	for _, name := range names {
		n := w.nss[name]
		for _, src := range slices.Sorted(maps.Keys(n.dirty)) {
			s := n.sources[src]
			if err := w.a.b.Set(windowSourceKey(name, src), s.encode(), nil); err != nil {
				return err
			}
		}
		wm, err := namespaceWatermark(w.a.r, n, w.a.now, w)
		if err != nil {
			return err
		}
		n.meta.Watermark = wm
		if err := w.closeDue(n); err != nil {
			return err
		}
		if err := w.fireTimers(n); err != nil {
			return err
		}
		if err := w.dropSegments(n); err != nil {
			return err
		}
		if err := w.a.setRecord(windowMetaKey(name), n.meta.encode()); err != nil {
			return err
		}
	}
	for i := range w.emitted {
		e := &w.emitted[i]
		if err := w.a.b.Set(outboxKey(e.Namespace, e.ID), encodeEmission(e), nil); err != nil {
			return err
		}
	}
	return nil
}

// namespaceWatermark is n's watermark at now: the least watermark of its
// sources that are not idle, or, when every source is idle, the greatest;
// never below the watermark it had. With wake, the entry being applied,
// a source that a restore brought back (SourceRestored) gets now as its
// last activity, written in the entry's batch; the sources this entry
// touched have it already. Without wake it only reads.
func namespaceWatermark(r pebble.Reader, n *winNS, now int64, wake *windowApply) (int64, error) {
	srcs := make([]sourceState, 0, len(n.meta.Sources))
	for _, name := range n.meta.Sources {
		if s, ok := n.sources[name]; ok {
			srcs = append(srcs, *s)
			continue
		}
		s, err := readSource(r, n.name, name)
		if err != nil {
			return 0, err
		}
		if s.LastActive == SourceRestored && wake != nil {
			s.LastActive = now
			if err := wake.a.b.Set(windowSourceKey(n.name, name), s.encode(), nil); err != nil {
				return 0, err
			}
		}
		srcs = append(srcs, s)
	}
	return watermarkOf(n.meta.Watermark, srcs, now, n.spec.IdleTimeoutMs*1_000_000), nil
}

// readSource reads a source's record, which must exist: the namespace's
// meta names it.
func readSource(r pebble.Reader, ns, name string) (sourceState, error) {
	v, ok, err := getRecord(r, windowSourceKey(ns, name))
	if err != nil {
		return sourceState{}, err
	}
	if !ok {
		return sourceState{}, fmt.Errorf("%w: window namespace %q names source %q, which has no record", ErrCorrupt, ns, name)
	}
	return decodeSourceState(v)
}

func watermarkOf(prev int64, srcs []sourceState, now, idle int64) int64 {
	if len(srcs) == 0 {
		return prev
	}
	active, lo, hi := false, int64(0), int64(MinWatermark)
	for _, s := range srcs {
		hi = max(hi, s.Watermark)
		if s.LastActive != SourceRestored && now-s.LastActive >= idle {
			continue
		}
		if !active || s.Watermark < lo {
			lo = s.Watermark
		}
		active = true
	}
	if !active {
		lo = hi
	}
	return max(prev, lo)
}

// dueWindow is a close index record at or below the watermark.
type dueWindow struct {
	closeMs int64
	key     []byte
	start   int64
	seg     uint64
}

// closeDue closes every window of n whose close time is at or below its
// watermark, in (close time, key, start) order, and deletes their index
// records, one point deletion each. A range deletion per entry would
// cost every later read of the memtable (see applier.clearRange); the
// scan starts above what the watermark passed before (winNS.dueFrom), so
// it does not step over the earlier records' deletions either.
func (w *windowApply) closeDue(n *winNS) error {
	prefix := windowNSKey(prefixWindowIndex, n.name)
	it, err := w.dueIter(n, prefix, n.indexedLow)
	if err != nil || it == nil {
		return err
	}
	var due []dueWindow
	for ok := it.First(); ok; ok = it.Next() {
		c, key, start, err := decodeWindowIndexKey(it.Key()[len(prefix):])
		if err != nil || len(it.Value()) != 8 {
			it.Close()
			return errors.Join(err, fmt.Errorf("%w: window index record", ErrCorrupt))
		}
		v := it.Value()
		seg := uint64(v[0])<<56 | uint64(v[1])<<48 | uint64(v[2])<<40 | uint64(v[3])<<32 | uint64(v[4])<<24 | uint64(v[5])<<16 | uint64(v[6])<<8 | uint64(v[7])
		due = append(due, dueWindow{closeMs: c, key: key, start: start, seg: seg})
	}
	if err := it.Close(); err != nil {
		return err
	}
	for _, d := range due {
		st, end, err := windowResult(w.a.r, n.name, &n.spec, n.meta.LowestSegment, d.key, d.start, d.seg)
		if err != nil {
			return err
		}
		w.emit(n, command.EmissionFinal, d.key, d.start, end, &st)
		n.meta.OpenWindows--
		w.a.ebuf = appendWindowIndexKey(w.a.ebuf[:0], n.name, d.closeMs, d.key, d.start)
		if err := w.a.b.Delete(w.a.ebuf, nil); err != nil {
			return err
		}
	}
	return nil
}

// dueIter iterates the records under prefix (n's close index or timers,
// time-first) that are due: from n.dueFrom(low) to the watermark. It is
// nil, with no error, when none can be.
func (w *windowApply) dueIter(n *winNS, prefix []byte, low int64) (*pebble.Iterator, error) {
	from := n.dueFrom(low)
	if from > n.meta.Watermark {
		return nil, nil
	}
	return w.a.r.NewIter(&pebble.IterOptions{
		LowerBound: appendTime(slices.Clone(prefix), from),
		UpperBound: appendTime(slices.Clone(prefix), n.meta.Watermark+1),
	})
}

// windowResult reads the aggregate of the window of key starting at
// start, stored in segment seg (tumbling, session), and its end.
func windowResult(r pebble.Reader, ns string, spec *command.WindowSpec, lowest uint64, key []byte, start int64, seg uint64) (aggState, int64, error) {
	if spec.Shape == command.ShapeHopping {
		st, _, err := combineSlices(r, ns, spec, lowest, key, start, start+spec.SizeMs)
		return st, start + spec.SizeMs, err
	}
	v, ok, err := getRecord(r, appendWindowDataKey(nil, ns, seg, key, start))
	if err != nil {
		return aggState{}, 0, err
	}
	if !ok {
		return aggState{}, 0, fmt.Errorf("%w: window [%d, ...) of key %q in %q is indexed but has no data", ErrCorrupt, start, key, ns)
	}
	st, err := decodeAggState(v)
	if err != nil {
		return aggState{}, 0, err
	}
	if spec.Shape == command.ShapeSession {
		return st, st.SessionLast + 1, nil
	}
	return st, start + spec.SizeMs, nil
}

// fireTimers fires n's timers at or below its watermark, in (time, key)
// order, and deletes them, one point deletion each, as closeDue does its
// index records.
func (w *windowApply) fireTimers(n *winNS) error {
	prefix := windowNSKey(prefixWindowTimer, n.name)
	it, err := w.dueIter(n, prefix, n.timerLow)
	if err != nil || it == nil {
		return err
	}
	var fired [][]byte
	for ok := it.First(); ok; ok = it.Next() {
		t, rest, err := readTime(it.Key()[len(prefix):])
		if err != nil {
			it.Close()
			return err
		}
		key, _, err := readComponent(rest)
		if err != nil {
			it.Close()
			return err
		}
		w.emit(n, command.EmissionTimer, key, t, t, nil)
		fired = append(fired, slices.Clone(it.Key()))
	}
	if err := it.Close(); err != nil {
		return err
	}
	for _, k := range fired {
		if err := w.a.b.Delete(k, nil); err != nil {
			return err
		}
	}
	return nil
}

// dropSegments deletes the data segments whose every window closed at
// least a retention ago: segment s when (s+1)*W + retention <= watermark;
// one range deletion when they hold more than a few keys
// (applier.clearRange).
func (w *windowApply) dropSegments(n *winNS) error {
	past := n.meta.Watermark - n.spec.RetentionMs
	if past < 0 {
		return nil
	}
	cut := uint64(past / segmentWidth(&n.spec))
	if cut <= n.meta.LowestSegment {
		return nil
	}
	lo := binary8(windowNSKey(prefixWindowData, n.name), n.meta.LowestSegment)
	hi := binary8(windowNSKey(prefixWindowData, n.name), cut)
	n.meta.LowestSegment = cut
	w.a.rec.aggs.dropRange()
	return w.a.clearRange(lo, hi)
}

func binary8(dst []byte, v uint64) []byte { return append(dst, segmentValue(v)...) }

// tickWindows recomputes every namespace's watermark at the entry's time
// and closes what became due.
func (a *applier) tickWindows() error {
	w := a.windows()
	names, err := windowNames(a.r)
	if err != nil {
		return err
	}
	for _, name := range names {
		if _, err := w.ns("namespace", name); err != nil {
			return err
		}
	}
	return w.finish(names)
}
