package fsm

import (
	"math"
	"slices"

	"github.com/statedhq/stated/raftstore/command"
)

// sameNaN gives every NaN one bit pattern, math.NaN()'s. A float sum
// that meets infinities of both signs (two hopping slices or two merged
// sessions whose sums overflowed opposite ways) is a NaN whose bits the
// CPU chooses: 0xfff8000000000000 on amd64, 0x7ff8000000000000 on arm64.
// Stored as they came, a replica on one and a replica on the other would
// hold different bytes for the same log.
func sameNaN(f float64) float64 {
	if f != f {
		return math.NaN()
	}
	return f
}

// addRecord folds one record at event time t into s. It reports false
// when an int sum would overflow int64 (the commit is then refused): for
// a merged session, when its whole sum does, whatever the sums of the
// sessions it merged went through on the way.
func (s *aggState) addRecord(spec *command.WindowSpec, t int64, a *command.WindowAdd) bool {
	first := s.Count == 0
	switch spec.Aggregate {
	case command.AggSumInt:
		if s.addSum(a.Int); s.over != 0 {
			return false
		}
	case command.AggSumFloat:
		s.Float = sameNaN(s.Float + a.Float)
	case command.AggMinInt:
		if first || a.Int < s.Int {
			s.Int = a.Int
		}
	case command.AggMaxInt:
		if first || a.Int > s.Int {
			s.Int = a.Int
		}
	case command.AggMinFloat:
		if first || a.Float < s.Float {
			s.Float = a.Float
		}
	case command.AggMaxFloat:
		if first || a.Float > s.Float {
			s.Float = a.Float
		}
	case command.AggLast:
		// Ties go to the later add: this one.
		if first || t >= s.LastTime {
			s.Bytes, s.LastTime = slices.Clone(a.Bytes), t
		}
	case command.AggList:
		// After every value of an equal or earlier time: ties keep add order.
		i, _ := slices.BinarySearchFunc(s.Values, t, func(v timedValue, t int64) int {
			if v.T <= t {
				return -1
			}
			return 1
		})
		s.Values = slices.Insert(s.Values, i, timedValue{T: t, V: slices.Clone(a.Bytes)})
		if n := int(spec.MaxListValues); len(s.Values) > n {
			s.Values = s.Values[:n]
			s.Truncated = true
		}
	case command.AggOpaque:
		s.Bytes = slices.Clone(a.Bytes)
	}
	s.Count++
	return true
}

// combine folds o, the aggregate of records disjoint in time from s's
// (another slice or session), into s. An int sum is kept exactly, as
// int64 bits and the wraps past the int64 range (s.over), so that the
// order of the parts does not matter: a sum that goes out of the range
// and comes back (MaxInt64-1, +10, -20) is the true one; s.over != 0
// says the sum so far is outside the range, and saturate then gives the
// bound it passed.
func (s *aggState) combine(spec *command.WindowSpec, o *aggState) {
	if o.Count == 0 {
		return
	}
	if s.Count == 0 {
		last, over := s.SessionLast, s.over
		*s = o.clone()
		s.SessionLast, s.over = max(last, o.SessionLast), over+o.over
		return
	}
	switch spec.Aggregate {
	case command.AggSumInt:
		s.addSum(o.Int)
		s.over += o.over
	case command.AggSumFloat:
		s.Float = sameNaN(s.Float + o.Float)
	case command.AggMinInt:
		s.Int = min(s.Int, o.Int)
	case command.AggMaxInt:
		s.Int = max(s.Int, o.Int)
	case command.AggMinFloat:
		if o.Float < s.Float {
			s.Float = o.Float
		}
	case command.AggMaxFloat:
		if o.Float > s.Float {
			s.Float = o.Float
		}
	case command.AggLast:
		if o.LastTime >= s.LastTime {
			s.Bytes, s.LastTime = slices.Clone(o.Bytes), o.LastTime
		}
	case command.AggList:
		// Each side keeps its own first values; merged by time, the
		// first MaxListValues of the union are among them.
		merged := make([]timedValue, 0, len(s.Values)+len(o.Values))
		i, j := 0, 0
		for i < len(s.Values) || j < len(o.Values) {
			if j == len(o.Values) || (i < len(s.Values) && s.Values[i].T <= o.Values[j].T) {
				merged = append(merged, s.Values[i])
				i++
			} else {
				merged = append(merged, timedValue{T: o.Values[j].T, V: slices.Clone(o.Values[j].V)})
				j++
			}
		}
		s.Truncated = s.Truncated || o.Truncated
		if n := int(spec.MaxListValues); len(merged) > n {
			merged = merged[:n]
			s.Truncated = true
		}
		s.Values = merged
	}
	s.Count += o.Count
	s.SessionLast = max(s.SessionLast, o.SessionLast)
}

func (s *aggState) clone() aggState {
	c := *s
	c.Bytes = slices.Clone(s.Bytes)
	c.Values = slices.Clone(s.Values)
	return c
}

// addSum adds v to the int sum, counting a wrap past the int64 range in
// s.over.
func (s *aggState) addSum(v int64) {
	sum := s.Int + v // wraps; the wrap is counted
	switch {
	case v > 0 && sum < s.Int:
		s.over++
	case v < 0 && sum > s.Int:
		s.over--
	}
	s.Int = sum
}

// saturate ends an int sum that combine kept exactly: one outside the
// int64 range becomes the bound it passed.
func (s *aggState) saturate() {
	switch {
	case s.over > 0:
		s.Int = math.MaxInt64
	case s.over < 0:
		s.Int = math.MinInt64
	}
	s.over = 0
}

// result fills the aggregate fields of a query's Window from s.
func (s *aggState) window(w *Window) {
	w.Count, w.Int, w.Float, w.Truncated = s.Count, s.Int, s.Float, s.Truncated
	w.Bytes = s.Bytes
	w.Values = listValues(s.Values)
}

// emission builds an emission's result fields from s.
func (s *aggState) emission(e *command.Emission) {
	e.Count, e.Int, e.Float, e.Truncated = s.Count, s.Int, s.Float, s.Truncated
	e.Bytes = s.Bytes
	e.Values = listValues(s.Values)
}

func listValues(vs []timedValue) [][]byte {
	if len(vs) == 0 {
		return nil
	}
	out := make([][]byte, len(vs))
	for i, v := range vs {
		out[i] = v.V
	}
	return out
}
