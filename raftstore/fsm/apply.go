package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"

	"github.com/statedhq/stated/raftstore/command"
)

// applier writes one command into an indexed batch, which lets it read its
// own earlier writes (two counter adds to one key in one commit).
type applier struct {
	b   *pebble.Batch
	r   pebble.Reader // b when it is indexed, else the database
	now int64

	// Scratch buffers for keys and values: Batch.Set copies its arguments,
	// so one buffer serves every mutation of a command.
	kbuf, vbuf, ebuf []byte

	// win is the window part of the command, once it touches one.
	win *windowApply

	// rec is the apply loop's cache of session and lane records, which
	// every read and write of them goes through; nil outside the apply
	// loop, where nothing reads or writes them.
	rec *recordCache
}

// key builds a state key in the applier's scratch buffer; it is valid
// until the next call.
func (a *applier) key(ns string, key []byte, kind Kind, sub []byte) []byte {
	a.kbuf = appendStateKey(a.kbuf[:0], ns, key, kind, sub)
	return a.kbuf
}

func (a *applier) commit(c *command.Commit) error {
	if c == nil {
		return nil
	}
	for i := range c.Mutations {
		if err := a.mutation(i, &c.Mutations[i]); err != nil {
			return err
		}
	}
	for i := range c.Offsets {
		if err := a.fence(i, &c.Offsets[i], c.ClientID); err != nil {
			return err
		}
		if err := a.offset(i, &c.Offsets[i]); err != nil {
			return err
		}
	}
	return a.windowCommit(c)
}

func reject(field, format string, args ...any) error {
	return &RejectError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

func (a *applier) expiresAt(i int, ttl int64) (int64, error) {
	if ttl <= 0 {
		return 0, nil
	}
	if a.now > math.MaxInt64-ttl {
		return 0, reject(fmt.Sprintf("mutations[%d].ttl", i), "expiry overflows")
	}
	return a.now + ttl, nil
}

func (a *applier) mutation(i int, m *command.Mutation) error {
	exp, err := a.expiresAt(i, m.TTL)
	if err != nil {
		return err
	}
	switch m.Op {
	case command.OpPut:
		return a.put(a.key(m.Namespace, m.Key, KindValue, nil), exp, m.Value)
	case command.OpMapPut:
		return a.put(a.key(m.Namespace, m.Key, KindMap, m.SubKey), exp, m.Value)
	case command.OpMapDelete:
		return a.b.Delete(a.key(m.Namespace, m.Key, KindMap, m.SubKey), nil)
	case command.OpDelete:
		p := keyPrefix(m.Namespace, m.Key)
		return a.clearRange(p, prefixEnd(p))
	case command.OpDeletePrefix:
		p := appendEscaped(namespacePrefix(m.Namespace), m.Key)
		return a.clearRange(p, prefixEnd(p))
	case command.OpListAppend:
		return a.listAppend(m, exp)
	case command.OpCounterAdd:
		return a.counterAdd(i, m, exp)
	}
	return reject(fmt.Sprintf("mutations[%d].kind", i), "unknown mutation kind %d", m.Op)
}

func (a *applier) put(k []byte, exp int64, payload []byte) error {
	a.vbuf = encodeEntry(a.vbuf[:0], exp, payload)
	if err := a.b.Set(k, a.vbuf, nil); err != nil {
		return err
	}
	if exp != 0 {
		a.rec.expiry.lower(uint64(exp))
		a.ebuf = appendExpiryKey(a.ebuf[:0], exp, k)
		return a.b.Set(a.ebuf, nil, nil)
	}
	return nil
}

// dropExpiryRecord deletes the expiry index record of k's entry that
// expired at old, once the entry is rewritten to expire at exp. Counter
// adds and list appends, which read the entry they rewrite anyway (in a
// batch that sees the command's own writes: readsOwnWrites), call it; a
// put does not read what it replaces, and leaves the replaced entry's
// record to its time, which Expire then passes over.
func (a *applier) dropExpiryRecord(k []byte, old, exp int64) error {
	if old == 0 || old == exp {
		return nil
	}
	a.ebuf = appendExpiryKey(a.ebuf[:0], old, k)
	return a.b.Delete(a.ebuf, nil)
}

// get reads k through the applier's reader, which sees this command's own
// writes whenever the command needs them (see readsOwnWrites).
func (a *applier) get(k []byte) ([]byte, bool, error) { return getRecord(a.r, k) }

// getRecord reads a copy of key's value from r; ok is false when it is
// absent.
func getRecord(r pebble.Reader, key []byte) ([]byte, bool, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := append([]byte(nil), v...)
	return out, true, closer.Close()
}

// listAppend appends to a list. The list's position record (its empty
// sub-key) holds the next position; it expires with the list's last
// element, so that a list whose elements all had a TTL leaves nothing
// behind: it expires at the latest expiry of its elements, or never once
// an element without a TTL was appended. It is stored as 8 bytes when it
// never expires, and as an entry with its expiry otherwise.
func (a *applier) listAppend(m *command.Mutation, exp int64) error {
	meta := stateKey(m.Namespace, m.Key, KindList, nil)
	var next uint64
	metaExp := exp
	v, ok, err := a.get(meta)
	if err != nil {
		return err
	}
	if ok {
		var curExp int64
		if next, curExp, err = decodeListMeta(v); err != nil {
			return err
		}
		if curExp == 0 {
			metaExp = 0
		} else if metaExp != 0 {
			metaExp = max(metaExp, curExp)
		}
		if err := a.dropExpiryRecord(meta, curExp, metaExp); err != nil {
			return err
		}
	}
	if err := a.put(stateKey(m.Namespace, m.Key, KindList, listPosition(next)), exp, m.Value); err != nil {
		return err
	}
	if metaExp == 0 {
		return a.b.Set(meta, listPosition(next+1), nil)
	}
	return a.put(meta, metaExp, listPosition(next+1))
}

// decodeListMeta decodes a list's position record: the next position, and
// when the record expires (zero: never).
func decodeListMeta(v []byte) (next uint64, exp int64, err error) {
	if len(v) == 8 {
		return binary.BigEndian.Uint64(v), 0, nil
	}
	exp, payload, err := decodeEntry(v)
	if err != nil || exp == 0 || len(payload) != 8 {
		return 0, 0, fmt.Errorf("%w: list position of %d bytes", ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(payload), exp, nil
}

func (a *applier) counterAdd(i int, m *command.Mutation, exp int64) error {
	k := a.key(m.Namespace, m.Key, KindCounter, nil)
	var cur, curExp int64
	v, ok, err := a.get(k)
	if err != nil {
		return err
	}
	if ok {
		var payload []byte
		curExp, payload, err = decodeEntry(v)
		if err != nil {
			return err
		}
		if !expired(curExp, a.now) {
			if cur, err = decodeCounter(payload); err != nil {
				return err
			}
			if exp == 0 {
				// An add without a TTL keeps the counter's expiry.
				exp = curExp
			}
		}
	}
	if (m.Delta > 0 && cur > math.MaxInt64-m.Delta) || (m.Delta < 0 && cur < math.MinInt64-m.Delta) {
		return reject(fmt.Sprintf("mutations[%d].delta", i), "counter %d + %d overflows int64", cur, m.Delta)
	}
	if err := a.dropExpiryRecord(k, curExp, exp); err != nil {
		return err
	}
	return a.put(k, exp, encodeCounter(cur+m.Delta))
}

func (a *applier) offset(i int, o *command.Offset) error {
	k := offsetKey(o.Group, o.Topic, o.Partition)
	v, ok, err := a.get(k)
	if err != nil {
		return err
	}
	if ok {
		if len(v) != 8 {
			return fmt.Errorf("%w: offset of %d bytes", ErrCorrupt, len(v))
		}
		if stored := int64(binary.BigEndian.Uint64(v)); o.Offset < stored {
			return reject(fmt.Sprintf("offsets[%d].offset", i),
				"%d is lower than the stored %d for group %q topic %q partition %d",
				o.Offset, stored, o.Group, o.Topic, o.Partition)
		}
	}
	return a.b.Set(k, binary.BigEndian.AppendUint64(nil, uint64(o.Offset)), nil)
}

// pointDeleteLimit is the most keys clearRange deletes one by one; a
// range holding more gets one range deletion. CockroachDB's
// ClearRangeWithHeuristic draws the same line, at the same count.
const pointDeleteLimit = 64

// clearRange deletes every key in [lower, upper) (nil upper: no bound),
// as it reads through a.r, which must see the batch's own writes (the
// entry's batch is indexed: see readingMutations). At most
// pointDeleteLimit keys get a point deletion each, and a range holding
// none writes nothing; a larger one gets one range deletion.
//
// A range deletion costs every later read of the memtable holding it,
// not only of its range: Pebble fragments a memtable's range deletions
// anew on the first read after one is added, all of them. One per
// entry, which a blind range deletion of each deleted key made, turned
// that into a cost per read growing with every delete since the last
// flush (BenchmarkDeleteCommits).
func (a *applier) clearRange(lower, upper []byte) error {
	it, err := a.r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	var buf []byte
	var ends [pointDeleteLimit]int
	n := 0
	// NextPrefix, not Next: Next steps over every older version of the
	// key still in the memtable (a key put and deleted over and over),
	// NextPrefix seeks past them.
	for ok := it.First(); ok; ok = it.NextPrefix() {
		if n == pointDeleteLimit {
			if err := it.Close(); err != nil {
				return err
			}
			return a.b.DeleteRange(lower, upper, nil)
		}
		buf = append(buf, it.Key()...)
		ends[n] = len(buf)
		n++
	}
	if err := it.Close(); err != nil {
		return err
	}
	from := 0
	for _, end := range ends[:n] {
		if err := a.b.Delete(buf[from:end], nil); err != nil {
			return err
		}
		from = end
	}
	return nil
}

// expire deletes up to limit entries whose expiry time is at or before now,
// with their expiry index records. The expiry index may hold stale records
// (the entry was overwritten or deleted since); those are dropped without
// touching the entry. More than pointDeleteLimit index records go in one
// range deletion, so a command costs one point deletion per expired entry
// and at most pointDeleteLimit more, whatever the limit. The scan starts
// at the index's floor (expiryFloor), above every record an earlier
// expire deleted, and moves it up.
func (a *applier) expire(limit uint32) error {
	due, err := a.rec.expiry.due(a.r, prefixExpiry, a.now, int(limit))
	if err != nil || len(due) == 0 {
		return err
	}
	for _, ek := range due {
		exp := int64(binary.BigEndian.Uint64(ek[1:9]))
		sk := ek[9:]
		v, ok, err := a.get(sk)
		if err != nil {
			return err
		}
		if ok {
			if cur, _, err := decodeEntry(v); err == nil && cur == exp {
				if err := a.b.Delete(sk, nil); err != nil {
					return err
				}
			}
		}
	}
	// Up to pointDeleteLimit records go with a point deletion each, as
	// clearRange's keys do; more with one range deletion: every index
	// key from the first due one to the last is due, as they were read
	// in order, with nothing skipped.
	if len(due) <= pointDeleteLimit {
		for _, ek := range due {
			if err := a.b.Delete(ek, nil); err != nil {
				return err
			}
		}
		return nil
	}
	last := due[len(due)-1]
	return a.b.DeleteRange(due[0], append(last[:len(last):len(last)], 0), nil)
}

// remember records a version 2 commit's (client id, sequence) for DedupWindow, in
// the expiry index like any entry with a TTL, so that Expire forgets it.
func (a *applier) remember(c *command.Commit, index uint64) error {
	if c == nil || c.ClientID == "" || c.Seq == 0 {
		return nil
	}
	return a.put(dedupKey(c.ClientID, c.Seq), a.now+int64(DedupWindow), binary.BigEndian.AppendUint64(nil, index))
}

// setClusterID records the cluster id unless one is recorded already.
func (a *applier) setClusterID(id string) error {
	if _, ok, err := a.get(keyClusterID); err != nil || ok {
		return err
	}
	return a.b.Set(keyClusterID, []byte(id), nil)
}

func (a *applier) setMember(m *command.Member) error {
	if m == nil || m.ID == "" {
		return reject("member.id", "empty")
	}
	v := appendComponent(nil, []byte(m.RaftAddr))
	v = appendComponent(v, []byte(m.GRPCAddr))
	if m.Incarnation != "" {
		v = appendComponent(v, []byte(m.Incarnation))
	}
	return a.b.Set(memberKey(m.ID), v, nil)
}

func (a *applier) removeMember(m *command.Member) error {
	if m == nil || m.ID == "" {
		return reject("member.id", "empty")
	}
	return a.b.Delete(memberKey(m.ID), nil)
}
