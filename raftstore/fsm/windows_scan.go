package fsm

import (
	"bytes"
	"errors"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"

	"github.com/statedhq/stated/raftstore/command"
)

// neighbourSlices returns the starts of key's nearest slices before and
// after the slice starting at ss, within a window size of it: prev is -1
// and next MaxInt64 when there is none. Slices in dropped segments belong
// to closed windows only, and are not looked for.
func neighbourSlices(r pebble.Reader, n *winNS, key []byte, ss int64) (prev, next int64, err error) {
	size := n.spec.SizeMs
	prev, next = -1, math.MaxInt64
	lo := max(ss-size+1, 0)
	segLo := max(n.segment(lo), n.meta.LowestSegment)
	err = scanKeyData(r, n.name, key, n.segment(ss), n.segment(ss+size-1), ss+1, ss+size, func(_ uint64, start int64, _ bool, _ []byte) error {
		next = start
		return errStopScan
	})
	if err != nil && err != errStopScan {
		return 0, 0, err
	}
	if lo >= ss || segLo > n.segment(ss) {
		return prev, next, nil
	}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: appendWindowDataKey(nil, n.name, segLo, key, lo),
		UpperBound: appendWindowDataKey(nil, n.name, n.segment(ss), key, ss)})
	if err != nil {
		return 0, 0, err
	}
	nsp := windowNSKey(prefixWindowData, n.name)
	for seg := n.segment(ss); ; seg-- {
		// The last record below (seg, key, ss): in seg, key's last slice
		// before ss if it has one.
		if it.SeekLT(appendWindowDataKey(nil, n.name, seg, key, ss)) {
			s, k, start, _, err := decodeWindowDataKey(it.Key()[len(nsp):])
			if err != nil {
				it.Close()
				return 0, 0, err
			}
			if s == seg && bytes.Equal(k, key) && start >= lo {
				prev = start
				break
			}
		}
		if seg == segLo {
			break
		}
	}
	return prev, next, it.Close()
}

// errStopScan ends a scanKeyData early.
var errStopScan = errors.New("fsm: stop scan")

// hoppingOpenWindows lists the starts, ascending, of the windows that
// contain t and close after wm. Windows start at 0 or later.
func hoppingOpenWindows(t, size, adv, grace, wm int64) []int64 {
	var out []int64
	for s := t - t%adv; s > t-size && s >= 0; s -= adv {
		if s+size+grace > wm {
			out = append(out, s)
		}
	}
	slices.Reverse(out)
	return out
}

// combineSlices combines the hopping slices of key that start in [from,
// to). ok is false when an int sum saturated: the window's sum is
// outside the int64 range, though every slice's is in it.
func combineSlices(r pebble.Reader, ns string, spec *command.WindowSpec, lowest uint64, key []byte, from, to int64) (aggState, bool, error) {
	var agg aggState
	w := segmentWidth(spec)
	err := scanKeyData(r, ns, key, max(uint64(from/w), lowest), uint64((to-1)/w), from, to, func(_ uint64, _ int64, _ bool, v []byte) error {
		s, err := decodeAggState(v)
		if err != nil {
			return err
		}
		agg.combine(spec, &s)
		return nil
	})
	ok := agg.over == 0
	agg.saturate()
	return agg, ok, err
}

// scanKeyData calls fn for every data record of key in ns in segments
// segLo to segHi whose start is in [lo, hi), in (segment, start) order
// (a displaced closed session right after the record with its start; see
// windows_keys.go). It seeks from segment to segment, skipping the empty
// ones.
func scanKeyData(r pebble.Reader, ns string, key []byte, segLo, segHi uint64, lo, hi int64, fn func(seg uint64, start int64, displaced bool, v []byte) error) error {
	if segLo > segHi || lo >= hi {
		return nil
	}
	nsp := windowNSKey(prefixWindowData, ns)
	upper := appendWindowDataKey(nil, ns, segHi, key, hi)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: appendWindowDataKey(nil, ns, segLo, key, lo), UpperBound: upper})
	if err != nil {
		return err
	}
	seg := segLo
	var buf []byte
	valid := it.First()
	for valid {
		k := it.Key()
		if !bytes.HasPrefix(k, nsp) {
			break
		}
		s, kk, start, displaced, err := decodeWindowDataKey(k[len(nsp):])
		if err != nil {
			it.Close()
			return err
		}
		if s == seg && bytes.Equal(kk, key) && start >= lo && start < hi {
			if err := fn(s, start, displaced, it.Value()); err != nil {
				it.Close()
				return err
			}
			// NextPrefix, not Next: a record rewritten by every add to
			// its window has a version per add still in the memtable,
			// which Next would step over one by one.
			valid = it.NextPrefix()
			continue
		}
		switch {
		case s > seg && s <= segHi:
			seg = s // the next segment with data: seek to the key in it
		case s == seg && s < segHi:
			seg++
		default:
			valid = false
			continue
		}
		buf = appendWindowDataKey(buf[:0], ns, seg, key, lo)
		valid = it.SeekGE(buf)
	}
	return it.Close()
}
