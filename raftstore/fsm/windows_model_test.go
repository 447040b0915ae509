package fsm

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"math"
	"math/big"
	"slices"

	"github.com/statedhq/stated/raftstore/command"
)

// wModel is the reference semantics of window state, written as directly
// as the spec (docs/WINDOWS.md) reads: it keeps every on-time record and
// recomputes each window's result from its records whenever one is read,
// emitted or updated; it has no slices, segments, indexes or encodings.
// Sessions are kept as lists of records, because which records share a
// session depends on history (closed sessions never merge).
type wModel struct {
	nss map[string]*wmNS
}

type wmRec struct {
	key string
	t   int64
	seq int // add order within the namespace
	add command.WindowAdd
}

type wmWin struct {
	key   string
	start int64
}

type wmSession struct {
	key    string
	recs   []wmRec
	closed bool
}

func (s *wmSession) start() int64 {
	return slices.MinFunc(s.recs, func(a, b wmRec) int { return cmp.Compare(a.t, b.t) }).t
}

func (s *wmSession) last() int64 {
	return slices.MaxFunc(s.recs, func(a, b wmRec) int { return cmp.Compare(a.t, b.t) }).t
}

type wmTimer struct {
	t   int64
	key string
}

type wmNS struct {
	spec       command.WindowSpec // defaults filled in
	wm, maxEv  int64
	nextID     uint64
	lateDrop   int64
	lateReturn int64
	adds       int64
	seq        int
	sources    map[string]sourceState
	recs       []wmRec        // on-time records (tumbling, hopping)
	open       map[wmWin]bool // open windows (tumbling, hopping)
	sessions   []*wmSession
	outbox     []command.Emission // pending, by id
	timers     map[wmTimer]bool
}

func newWModel() *wModel { return &wModel{nss: map[string]*wmNS{}} }

func (m *wModel) clone() *wModel {
	c := newWModel()
	for name, n := range m.nss {
		cn := *n
		cn.sources = maps.Clone(n.sources)
		cn.recs = slices.Clone(n.recs)
		cn.open = maps.Clone(n.open)
		cn.timers = maps.Clone(n.timers)
		cn.outbox = slices.Clone(n.outbox)
		cn.sessions = nil
		for _, s := range n.sessions {
			cs := *s
			cs.recs = slices.Clone(s.recs)
			cn.sessions = append(cn.sessions, &cs)
		}
		c.nss[name] = &cn
	}
	return c
}

// wmOutcome is what the model says an entry returns.
type wmOutcome struct {
	err       error // *RejectError (Field only) or *OutboxFullError
	created   bool
	adds      []command.AddStatus
	emissions []command.Emission
}

func wmReject(field string) error { return &RejectError{Field: field} }

// apply applies one window command; a refused one changes nothing.
func (m *wModel) apply(cmd *command.Command) wmOutcome {
	c := m.clone()
	out := c.applyTo(cmd)
	if out.err == nil {
		*m = *c
	}
	return out
}

func (m *wModel) applyTo(cmd *command.Command) wmOutcome {
	var out wmOutcome
	switch cmd.Type {
	case command.TypeDefineWindows:
		s := cmd.Windows
		if err := command.ValidateWindowSpec(s); err != nil {
			out.err = fieldReject(err)
			return out
		}
		spec := s.WithDefaults()
		if n, ok := m.nss[spec.Namespace]; ok {
			if field, _, _ := command.DiffWindowSpecs(n.spec, spec); field != "" {
				out.err = wmReject(field)
			}
			return out
		}
		m.nss[spec.Namespace] = &wmNS{spec: spec, wm: MinWatermark, maxEv: MinWatermark, nextID: 1,
			sources: map[string]sourceState{}, open: map[wmWin]bool{}, timers: map[wmTimer]bool{}}
		out.created = true
	case command.TypeWindowTick:
		for _, name := range slices.Sorted(maps.Keys(m.nss)) {
			m.finish(m.nss[name], cmd.Now, &out)
		}
	case command.TypeCommit:
		out.err = m.commit(cmd.Commit, cmd.Now, &out)
	}
	return out
}

func (m *wModel) commit(c *command.Commit, now int64, out *wmOutcome) error {
	named := map[string]bool{}
	defined := func(field, ns string) error {
		if m.nss[ns] == nil {
			return wmReject(field)
		}
		named[ns] = true
		return nil
	}
	inRange := func(field string, t int64) error {
		if t < 0 || t > command.MaxEventTime {
			return wmReject(field)
		}
		return nil
	}
	for i, a := range c.WindowAdds {
		if err := defined(fmt.Sprintf("window_adds[%d].namespace", i), a.Namespace); err != nil {
			return err
		}
		if err := inRange(fmt.Sprintf("window_adds[%d].event_time_ms", i), a.EventTimeMs); err != nil {
			return err
		}
	}
	for i, h := range c.WatermarkHints {
		if err := defined(fmt.Sprintf("watermark_hints[%d].namespace", i), h.Namespace); err != nil {
			return err
		}
		if err := inRange(fmt.Sprintf("watermark_hints[%d].time_ms", i), h.TimeMs); err != nil {
			return err
		}
	}
	for i, a := range c.Acks {
		if err := defined(fmt.Sprintf("acks[%d].namespace", i), a.Namespace); err != nil {
			return err
		}
	}
	for i, t := range c.Timers {
		if err := defined(fmt.Sprintf("timers[%d].namespace", i), t.Namespace); err != nil {
			return err
		}
		if err := inRange(fmt.Sprintf("timers[%d].time_ms", i), t.TimeMs); err != nil {
			return err
		}
	}
	for i, a := range c.Acks {
		n := m.nss[a.Namespace]
		j := slices.IndexFunc(n.outbox, func(e command.Emission) bool { return e.ID == a.ID })
		if j < 0 {
			return wmReject(fmt.Sprintf("acks[%d].id", i))
		}
		n.outbox = slices.Delete(n.outbox, j, j+1)
	}
	var full []string
	for _, a := range c.WindowAdds {
		full = append(full, a.Namespace)
	}
	for _, h := range c.WatermarkHints {
		full = append(full, h.Namespace)
	}
	for _, ns := range full {
		if n := m.nss[ns]; int64(len(n.outbox)) >= n.spec.MaxPendingEmissions {
			return &OutboxFullError{Namespace: ns, Pending: int64(len(n.outbox))}
		}
	}
	for i, a := range c.WindowAdds {
		st, err := m.add(i, m.nss[a.Namespace], a, now, out)
		if err != nil {
			return err
		}
		out.adds = append(out.adds, st)
	}
	for _, h := range c.WatermarkHints {
		n := m.nss[h.Namespace]
		s := n.source(h.Source)
		s.Watermark = max(s.Watermark, h.TimeMs)
		s.LastActive = now
		n.sources[h.Source] = s
	}
	for _, t := range c.Timers {
		n := m.nss[t.Namespace]
		if t.Delete {
			delete(n.timers, wmTimer{t.TimeMs, string(t.Key)})
		} else {
			n.timers[wmTimer{t.TimeMs, string(t.Key)}] = true
		}
	}
	for _, name := range slices.Sorted(maps.Keys(named)) {
		m.finish(m.nss[name], now, out)
	}
	return nil
}

func (n *wmNS) source(name string) sourceState {
	if s, ok := n.sources[name]; ok {
		return s
	}
	return sourceState{Watermark: MinWatermark, MaxEventTime: MinWatermark}
}

func (n *wmNS) late() command.AddStatus {
	if n.spec.Late == command.LateReturn {
		n.lateReturn++
		return command.AddLateReturned
	}
	n.lateDrop++
	return command.AddLateDropped
}

func (m *wModel) add(i int, n *wmNS, a command.WindowAdd, now int64, out *wmOutcome) (command.AddStatus, error) {
	t, key, sp := a.EventTimeMs, string(a.Key), &n.spec
	s := n.source(a.Source)
	s.MaxEventTime = max(s.MaxEventTime, t)
	s.Watermark = max(s.Watermark, s.MaxEventTime-sp.MaxOutOfOrderMs)
	s.LastActive = now
	n.sources[a.Source] = s
	n.maxEv = max(n.maxEv, t)
	n.adds++
	n.seq++
	rec := wmRec{key: key, t: t, seq: n.seq, add: a}
	wm0 := n.wm
	switch sp.Shape {
	case command.ShapeTumbling:
		start := t - t%sp.SizeMs
		if start+sp.SizeMs+sp.GraceMs <= wm0 {
			return n.late(), nil
		}
		n.recs = append(n.recs, rec)
		n.open[wmWin{key, start}] = true
		if n.windowResult(n.recs, key, start, start+sp.SizeMs).overflow {
			return 0, wmReject(fmt.Sprintf("window_adds[%d].int_value", i))
		}
		if sp.Emit == command.EmitUpdates {
			n.emit(out, command.EmissionUpdate, key, start, start+sp.SizeMs, n.windowResult(n.recs, key, start, start+sp.SizeMs))
		}
	case command.ShapeHopping:
		if t-t%sp.AdvanceMs+sp.SizeMs+sp.GraceMs <= wm0 {
			return n.late(), nil
		}
		n.recs = append(n.recs, rec)
		var open []int64
		for s := int64(0); s <= t; s += sp.AdvanceMs {
			if t < s+sp.SizeMs && s+sp.SizeMs+sp.GraceMs > wm0 {
				open = append(open, s)
				n.open[wmWin{key, s}] = true
			}
		}
		if sp.Emit == command.EmitUpdates {
			for _, s := range open {
				n.emit(out, command.EmissionUpdate, key, s, s+sp.SizeMs, n.windowResult(n.recs, key, s, s+sp.SizeMs))
			}
		}
	case command.ShapeSession:
		var merged []wmRec
		var keep []*wmSession
		for _, ses := range n.sessions {
			if ses.key == key && !ses.closed && ses.start()-sp.GapMs <= t && t <= ses.last()+sp.GapMs {
				merged = append(merged, ses.recs...)
			} else {
				keep = append(keep, ses)
			}
		}
		if len(merged) == 0 && t+sp.GapMs+sp.GraceMs <= wm0 {
			return n.late(), nil
		}
		ses := &wmSession{key: key, recs: append(merged, rec)}
		n.sessions = append(keep, ses)
		r := n.windowResult(ses.recs, key, 0, command.MaxEventTime+1)
		if r.overflow {
			return 0, wmReject(fmt.Sprintf("window_adds[%d].int_value", i))
		}
		if sp.Emit == command.EmitUpdates {
			n.emit(out, command.EmissionUpdate, key, ses.start(), ses.last()+1, r)
		}
	}
	return command.AddOnTime, nil
}

// wmResult is a window's result computed from its records.
type wmResult struct {
	count, i  int64
	f         float64
	b         []byte
	values    [][]byte
	truncated bool
	overflow  bool
}

// windowResult computes the result of key's records in [from, to).
func (n *wmNS) windowResult(recs []wmRec, key string, from, to int64) wmResult {
	var in []wmRec
	for _, r := range recs {
		if r.key == key && r.t >= from && r.t < to {
			in = append(in, r)
		}
	}
	byAdd := slices.Clone(in)
	slices.SortFunc(in, func(a, b wmRec) int { return cmp.Or(cmp.Compare(a.t, b.t), cmp.Compare(a.seq, b.seq)) })
	slices.SortFunc(byAdd, func(a, b wmRec) int { return cmp.Compare(a.seq, b.seq) })
	res := wmResult{count: int64(len(in))}
	if len(in) == 0 {
		return res
	}
	sp := &n.spec
	switch sp.Aggregate {
	case command.AggSumInt:
		// The true sum: out of the int64 range it is an overflow (a
		// refused add), and a hopping window shows the bound it passed.
		sum := new(big.Int)
		for _, r := range in {
			sum.Add(sum, big.NewInt(r.add.Int))
		}
		switch {
		case sum.Cmp(big.NewInt(math.MaxInt64)) > 0:
			res.i, res.overflow = math.MaxInt64, true
		case sum.Cmp(big.NewInt(math.MinInt64)) < 0:
			res.i, res.overflow = math.MinInt64, true
		default:
			res.i = sum.Int64()
		}
	case command.AggSumFloat:
		for _, r := range in {
			res.f += r.add.Float
		}
	case command.AggMinInt, command.AggMaxInt:
		res.i = in[0].add.Int
		for _, r := range in {
			if (sp.Aggregate == command.AggMinInt) == (r.add.Int < res.i) && r.add.Int != res.i {
				res.i = r.add.Int
			}
		}
	case command.AggMinFloat, command.AggMaxFloat:
		res.f = in[0].add.Float
		for _, r := range in {
			if (sp.Aggregate == command.AggMinFloat) == (r.add.Float < res.f) && r.add.Float != res.f {
				res.f = r.add.Float
			}
		}
	case command.AggLast:
		res.b = in[len(in)-1].add.Bytes
	case command.AggList:
		for _, r := range in {
			if len(res.values) == int(sp.MaxListValues) {
				res.truncated = true
				break
			}
			res.values = append(res.values, r.add.Bytes)
		}
	case command.AggOpaque:
		res.b = byAdd[len(byAdd)-1].add.Bytes
	}
	return res
}

func (n *wmNS) emit(out *wmOutcome, kind command.EmissionKind, key string, start, end int64, r wmResult) {
	e := command.Emission{Namespace: n.spec.Namespace, ID: n.nextID, Kind: kind, Key: []byte(key), StartMs: start, EndMs: end,
		Count: r.count, Int: r.i, Float: r.f, Bytes: r.b, Values: r.values, Truncated: r.truncated, Watermark: n.wm}
	n.nextID++
	n.outbox = append(n.outbox, e)
	out.emissions = append(out.emissions, e)
}

// finish recomputes n's watermark at now, closes the due windows and fires
// the due timers.
func (m *wModel) finish(n *wmNS, now int64, out *wmOutcome) {
	n.wm = n.watermarkAt(now)
	type due struct {
		closeMs, start, end int64
		key                 string
		ses                 *wmSession
	}
	var ds []due
	sp := &n.spec
	for w := range n.open {
		if c := w.start + sp.SizeMs + sp.GraceMs; c <= n.wm {
			ds = append(ds, due{closeMs: c, start: w.start, end: w.start + sp.SizeMs, key: w.key})
		}
	}
	for _, s := range n.sessions {
		if c := s.last() + sp.GapMs + sp.GraceMs; !s.closed && c <= n.wm {
			ds = append(ds, due{closeMs: c, start: s.start(), end: s.last() + 1, key: s.key, ses: s})
		}
	}
	slices.SortFunc(ds, func(a, b due) int {
		return cmp.Or(cmp.Compare(a.closeMs, b.closeMs), bytes.Compare([]byte(a.key), []byte(b.key)), cmp.Compare(a.start, b.start))
	})
	for _, d := range ds {
		if d.ses != nil {
			d.ses.closed = true
			n.emit(out, command.EmissionFinal, d.key, d.start, d.end, n.windowResult(d.ses.recs, d.key, 0, command.MaxEventTime+1))
			continue
		}
		delete(n.open, wmWin{d.key, d.start})
		n.emit(out, command.EmissionFinal, d.key, d.start, d.end, n.windowResult(n.recs, d.key, d.start, d.end))
	}
	var fire []wmTimer
	for tm := range n.timers {
		if tm.t <= n.wm {
			fire = append(fire, tm)
		}
	}
	slices.SortFunc(fire, func(a, b wmTimer) int {
		return cmp.Or(cmp.Compare(a.t, b.t), bytes.Compare([]byte(a.key), []byte(b.key)))
	})
	for _, tm := range fire {
		delete(n.timers, tm)
		n.emit(out, command.EmissionTimer, tm.key, tm.t, tm.t, wmResult{})
	}
}

// watermarkAt is n's watermark recomputed at now: the least of its
// sources that are not idle, or the greatest when all are; never lower.
func (n *wmNS) watermarkAt(now int64) int64 {
	if len(n.sources) == 0 {
		return n.wm
	}
	var active, all []int64
	for _, s := range n.sources {
		all = append(all, s.Watermark)
		if now-s.LastActive < n.spec.IdleTimeoutMs*1_000_000 {
			active = append(active, s.Watermark)
		}
	}
	cand := slices.Max(all)
	if len(active) > 0 {
		cand = slices.Min(active)
	}
	return max(n.wm, cand)
}

// retained reports whether a closed window anchored at anchor (start;
// a session's last event) is still kept: its segment is not yet past
// retention.
func (n *wmNS) retained(anchor int64) bool {
	w := max(n.spec.RetentionMs/2, 1000)
	past := n.wm - n.spec.RetentionMs
	return past < 0 || anchor/w >= past/w
}

// wmWindow is a window as the model's queries see it.
type wmWindow struct {
	key                 string
	start, end, closeMs int64
	closed              bool
	r                   wmResult
}

// windows lists key's windows starting in [from, to), by start.
func (n *wmNS) windows(key string, from, to int64) []wmWindow {
	sp := &n.spec
	var out []wmWindow
	mk := func(start, end, closeMs int64, r wmResult) {
		out = append(out, wmWindow{key: key, start: start, end: end, closeMs: closeMs, closed: closeMs <= n.wm, r: r})
	}
	switch sp.Shape {
	case command.ShapeTumbling, command.ShapeHopping:
		adv := sp.SizeMs
		if sp.Shape == command.ShapeHopping {
			adv = sp.AdvanceMs
		}
		starts := map[int64]bool{}
		for _, r := range n.recs {
			if r.key != key {
				continue
			}
			for s := int64(0); s <= r.t; s += adv {
				if r.t < s+sp.SizeMs {
					starts[s] = true
				}
			}
		}
		for _, s := range slices.Sorted(maps.Keys(starts)) {
			// Closed hopping windows are not shown: their slices go on
			// changing for the later windows that share them.
			open := s+sp.SizeMs+sp.GraceMs > n.wm
			if s >= from && s < to && (open || (sp.Shape == command.ShapeTumbling && n.retained(s))) {
				mk(s, s+sp.SizeMs, s+sp.SizeMs+sp.GraceMs, n.windowResult(n.recs, key, s, s+sp.SizeMs))
			}
		}
	case command.ShapeSession:
		for _, s := range n.sessions {
			if s.key == key && s.start() >= from && s.start() < to && (!s.closed || n.retained(s.last())) {
				mk(s.start(), s.last()+1, s.last()+sp.GapMs+sp.GraceMs, n.windowResult(s.recs, key, 0, command.MaxEventTime+1))
			}
		}
		slices.SortFunc(out, func(a, b wmWindow) int { return cmp.Or(cmp.Compare(a.start, b.start), cmp.Compare(a.end, b.end)) })
	}
	return out
}

// openWindows lists the open windows by (key, start).
func (n *wmNS) openWindows() []wmWindow {
	var out []wmWindow
	keys := map[string]bool{}
	for w := range n.open {
		keys[w.key] = true
	}
	for _, s := range n.sessions {
		if !s.closed {
			keys[s.key] = true
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(keys), func(a, b string) int { return bytes.Compare([]byte(a), []byte(b)) }) {
		for _, w := range n.windows(k, 0, command.MaxEventTime+1) {
			if !w.closed {
				out = append(out, w)
			}
		}
	}
	return out
}
