package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/statedhq/stated/raftstore/command"
)

// Get reads the value, counter or map entry (kind KindMap with subKey) at
// key, as of time now (Unix nanoseconds): an expired entry is not found.
func (f *FSM) Get(ns string, key []byte, kind Kind, subKey []byte, now int64) (Entry, bool, error) {
	if kind != KindMap {
		subKey = nil
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return Entry{}, false, ErrClosed
	}
	v, closer, err := f.db.Get(stateKey(ns, key, kind, subKey))
	if errors.Is(err, pebble.ErrNotFound) {
		return Entry{}, false, nil
	}
	if err != nil {
		return Entry{}, false, fmt.Errorf("fsm: get: %w", err)
	}
	defer closer.Close()
	e := Entry{Kind: kind, Key: key, SubKey: subKey}
	ok, err := fillEntry(&e, v, now, true)
	return e, ok, err
}

// fillEntry decodes a stored entry into e; it reports false for an expired
// entry. With clone, e owns its bytes.
func fillEntry(e *Entry, v []byte, now int64, clone bool) (bool, error) {
	exp, payload, err := decodeEntry(v)
	if err != nil {
		return false, err
	}
	if expired(exp, now) {
		return false, nil
	}
	e.ExpiresAt = exp
	if e.Kind == KindCounter {
		e.Counter, err = decodeCounter(payload)
		return err == nil, err
	}
	if clone {
		payload = append([]byte{}, payload...)
	}
	e.Value = payload
	return true, nil
}

// Scan calls fn for every live entry q selects, in key order, as of time
// now. The slices of the Entry are valid only during the call. Scan holds a
// read lock on the state for its duration, so a Restore waits for it.
func (f *FSM) Scan(q ScanQuery, now int64, fn func(Entry) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return ErrClosed
	}
	nsp := namespacePrefix(q.Namespace)
	var lower, upper []byte
	switch q.Kind {
	case KindMap, KindList:
		base := stateKey(q.Namespace, q.Key, q.Kind, nil)
		lower, upper = bounds(base, q.Prefix, q.Start, q.End, false)
		if q.Kind == KindList {
			// Skip the list's own position record (the empty sub-key).
			if first := append(append([]byte(nil), base...), 0); bytes.Compare(first, lower) > 0 {
				lower = first
			}
		}
	default:
		lower, upper = bounds(nsp, q.Prefix, q.Start, q.End, true)
	}
	it, err := f.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("fsm: scan: %w", err)
	}
	n := 0
	// NextPrefix, not Next: a counter added to by every commit has a
	// version per add still in the memtable, which Next would step over
	// one by one (BenchmarkReadsOfRewrittenKeys).
	for ok := it.First(); ok; ok = it.NextPrefix() {
		key, kind, sub, err := decodeStateKey(it.Key(), len(nsp))
		if err != nil {
			it.Close()
			return err
		}
		if kind == KindList && len(sub) == 0 {
			continue // a list's position record, not an element
		}
		if q.Kind != KindAny && kind != q.Kind {
			continue
		}
		e := Entry{Kind: kind, Key: key, SubKey: sub}
		live, err := fillEntry(&e, it.Value(), now, false)
		if err != nil {
			it.Close()
			return err
		}
		if !live {
			continue
		}
		if err := fn(e); err != nil {
			it.Close()
			return err
		}
		if n++; q.Limit > 0 && n >= q.Limit {
			break
		}
	}
	return it.Close()
}

// bounds turns a prefix and a [start, end) range of key components after
// base into Pebble bounds. Keys are escaped when they are a component
// followed by more (escaped is true); map sub-keys are the last component
// and stored raw.
func bounds(base, prefix, start, end []byte, escaped bool) (lower, upper []byte) {
	enc := func(b []byte) []byte {
		k := append([]byte(nil), base...)
		if escaped {
			return appendEscaped(k, b)
		}
		return append(k, b...)
	}
	lower, upper = base, prefixEnd(base)
	if len(prefix) > 0 {
		p := enc(prefix)
		lower, upper = p, prefixEnd(p)
	}
	if len(start) > 0 {
		if s := enc(start); bytes.Compare(s, lower) > 0 {
			lower = s
		}
	}
	if len(end) > 0 {
		if e := enc(end); upper == nil || bytes.Compare(e, upper) < 0 {
			upper = e
		}
	}
	return lower, upper
}

// Offsets returns the offsets stored for group, ordered by topic and
// partition.
func (f *FSM) Offsets(group string) ([]command.Offset, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, ErrClosed
	}
	return offsetsIn(f.db, group)
}

// offsetsIn reads group's offsets from r.
func offsetsIn(r pebble.Reader, group string) ([]command.Offset, error) {
	p := offsetGroupPrefix(group)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, fmt.Errorf("fsm: offsets: %w", err)
	}
	var out []command.Offset
	// NextPrefix: every commit of a partition's records rewrites its
	// offset (see Scan).
	for ok := it.First(); ok; ok = it.NextPrefix() {
		topic, rest, err := readComponent(it.Key()[len(p):])
		if err != nil || len(rest) != 4 || len(it.Value()) != 8 {
			it.Close()
			return nil, fmt.Errorf("%w: offset record %x", ErrCorrupt, it.Key())
		}
		out = append(out, command.Offset{
			Group:     group,
			Topic:     string(topic),
			Partition: int32(binary.BigEndian.Uint32(rest)),
			Offset:    int64(binary.BigEndian.Uint64(it.Value())),
		})
	}
	return out, it.Close()
}

// ExpiryDue reports whether some entry's expiry time is at or before now,
// so that the leader proposes an expiry command only when there is work.
func (f *FSM) ExpiryDue(now int64) (bool, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return false, ErrClosed
	}
	return f.records.expiry.anyDue(f.db, prefixExpiry, now)
}

// ClusterID returns the recorded cluster id, or "" before one is.
func (f *FSM) ClusterID() (string, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return "", ErrClosed
	}
	v, closer, err := f.db.Get(keyClusterID)
	if errors.Is(err, pebble.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer closer.Close()
	return string(v), nil
}

// Members returns the cluster metadata of every recorded member, by id.
func (f *FSM) Members() ([]command.Member, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, ErrClosed
	}
	return readMembers(f.db, prefixMember)
}

// readMembers reads the member records of r under prefix (prefixMember,
// or prefixRestoredMember for those of the checkpoint a state was
// restored from), by id.
func readMembers(r pebble.Reader, prefix []byte) ([]command.Member, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	var out []command.Member
	for ok := it.First(); ok; ok = it.Next() {
		id, _, err1 := readComponent(it.Key()[len(prefix):])
		raftAddr, rest, err2 := readComponent(it.Value())
		grpcAddr, rest, err3 := readComponent(rest)
		// The incarnation is absent for members recorded before it
		// existed, and for the bootstrap node.
		var incarnation []byte
		var err4 error
		if len(rest) > 0 {
			incarnation, _, err4 = readComponent(rest)
		}
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			it.Close()
			return nil, err
		}
		out = append(out, command.Member{ID: string(id), RaftAddr: string(raftAddr), GRPCAddr: string(grpcAddr), Incarnation: string(incarnation)})
	}
	return out, it.Close()
}

// GroupState is a consumer group's offsets, partition claims and newest
// checkpointed offsets, read at one applied index.
type GroupState struct {
	Applied      uint64
	Offsets      []command.Offset
	Claims       []Claim
	Checkpointed []command.Offset
}

// Group reads group's offsets, claims and checkpointed offsets from one
// Pebble snapshot, with the applied index it holds: each offset is paired
// with the claim of the same state, which three separate reads, with
// entries applied between them, would not promise.
func (f *FSM) Group(group string) (GroupState, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return GroupState{}, ErrClosed
	}
	snap := f.db.NewSnapshot()
	defer snap.Close()
	var g GroupState
	var err error
	if g.Applied, err = readAppliedIndex(snap); err != nil {
		return GroupState{}, err
	}
	if g.Offsets, err = offsetsIn(snap, group); err != nil {
		return GroupState{}, err
	}
	if g.Claims, err = claimsIn(snap, group); err != nil {
		return GroupState{}, err
	}
	if g.Checkpointed, err = checkpointedIn(snap, group); err != nil {
		return GroupState{}, err
	}
	return g, nil
}
