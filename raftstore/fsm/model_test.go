package fsm

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/statedhq/stated/raftstore/command"
)

// model is the reference semantics of the state machine in plain maps: what
// each command must do, written without Pebble, batches or range deletions,
// so that TestStateMachineMatchesModel can hold the FSM to it after every
// entry. It borrows only the key encoders (stateKey, dedupKey, sessionKey,
// endedExpiryKey), for the order of scans and of the expiry indexes, and
// the byte sizes of stored entries, for Counts; the key encoding is tested
// on its own.
type model struct {
	// entries is the keyed state as stored, expired entries included until
	// an expire command or a write removes them, by encoded state key.
	entries map[string]mEntry
	// listNext is each list's position record: the next position, and when
	// the record expires (the latest expiry of the list's elements, or
	// never once an element without a TTL was appended).
	listNext map[mListID]mListMeta
	// expiry is the expiry index, stale records included (those of
	// entries deleted or put again since).
	expiry map[mExpiryRec]struct{}
	// dedup holds the retry records of format version 2 commits.
	dedup map[mDedupID]mDedup

	offsets     map[mPart]int64
	ckptOffsets map[mPart]int64
	claims      map[mPart]mClaim
	sessions    map[string]mSession
	lanes       map[mLaneID]mLane
	// ended are the sessions that ended (expired, or replaced by another
	// open) and whose record a sweep has not deleted yet: an open of one
	// is refused.
	ended map[mEndedID]mEnded

	lastEpoch   uint64
	completed   uint64
	completedAt int64
	clusterID   string
	clusterSet  bool
	members     map[string]command.Member
}

type mEntry struct {
	ns, key string
	kind    Kind
	sub     string
	exp     int64
	value   []byte // kinds value, map and list
	counter int64  // kind counter
}

type mListID struct{ ns, key string }

type mListMeta struct {
	next uint64
	exp  int64
}

// mExpiryRec is a record of the expiry index: an expiry time and the
// encoded key (state or legacy retry record) it was written for.
type mExpiryRec struct {
	exp int64
	key string
}

type mDedupID struct {
	client string
	seq    uint64
}

type mDedup struct {
	index uint64
	exp   int64
}

type mPart struct {
	group, topic string
	partition    int32
}

type mClaim struct {
	epoch    uint64
	owner    string
	released bool
	at       int64
}

type mSession struct {
	id, opened       uint64
	idle, lastActive int64
}

type mEndedID struct {
	client string
	id     uint64
}

type mEnded struct{ at, exp int64 }

type mLaneID struct {
	client string
	lane   uint32
}

type mLane struct {
	session, seq, index uint64
	hash                [16]byte
}

func newModel() *model {
	return &model{
		entries:     map[string]mEntry{},
		listNext:    map[mListID]mListMeta{},
		expiry:      map[mExpiryRec]struct{}{},
		dedup:       map[mDedupID]mDedup{},
		offsets:     map[mPart]int64{},
		ckptOffsets: map[mPart]int64{},
		claims:      map[mPart]mClaim{},
		sessions:    map[string]mSession{},
		lanes:       map[mLaneID]mLane{},
		ended:       map[mEndedID]mEnded{},
		members:     map[string]command.Member{},
	}
}

func (m *model) clone() *model {
	n := *m
	n.entries = maps.Clone(m.entries)
	n.listNext = maps.Clone(m.listNext)
	n.expiry = maps.Clone(m.expiry)
	n.dedup = maps.Clone(m.dedup)
	n.offsets = maps.Clone(m.offsets)
	n.ckptOffsets = maps.Clone(m.ckptOffsets)
	n.claims = maps.Clone(m.claims)
	n.sessions = maps.Clone(m.sessions)
	n.lanes = maps.Clone(m.lanes)
	n.ended = maps.Clone(m.ended)
	n.members = maps.Clone(m.members)
	return &n
}

// mResult is what the model says Apply must return.
type mResult struct {
	index     uint64
	dup       bool
	err       error // a *RejectError, *SessionError or *FenceError; messages are not compared
	claimed   []ClaimedPartition
	session   *SessionOpened
	ckptEpoch uint64
}

func mReject(field string) error { return &RejectError{Field: field} }

// sessionExpired is the model's idle rule: a session is gone once the
// leader's time is past its last activity plus its idle timeout.
func (s mSession) expired(now int64) bool {
	if s.lastActive > math.MaxInt64-s.idle {
		return false
	}
	return now > s.lastActive+s.idle
}

// apply applies a decoded command at index and returns the expected result.
// Everything a refused command would have changed is thrown away.
func (m *model) apply(index uint64, cmd *command.Command) mResult {
	res := mResult{index: index}
	if cmd == nil {
		res.err = mReject("command")
		return res
	}
	n := m.clone()
	switch cmd.Type {
	case command.TypeCommit:
		res = n.commit(index, cmd)
	case command.TypeExpire:
		n.expire(cmd.Now, cmd.ExpireLimit)
	case command.TypeSetClusterID:
		if !n.clusterSet {
			n.clusterID, n.clusterSet = cmd.ClusterID, true
		}
	case command.TypeSetMember, command.TypeRemoveMember:
		switch {
		case cmd.Member == nil || cmd.Member.ID == "":
			res.err = mReject("member.id")
		case cmd.Type == command.TypeSetMember:
			n.members[cmd.Member.ID] = *cmd.Member
		default:
			delete(n.members, cmd.Member.ID)
		}
	case command.TypeClaim:
		res.claimed, res.err = n.claim(cmd.Now, cmd.Claim)
	case command.TypeRelease:
		res.err = n.release(cmd.Claim)
	case command.TypeCheckpoint:
		n.lastEpoch++
		res.ckptEpoch = n.lastEpoch
	case command.TypeCheckpointDone:
		switch {
		case cmd.Epoch > n.lastEpoch:
			res.err = mReject("epoch")
		case cmd.Epoch > n.completed:
			for _, o := range cmd.Offsets {
				n.ckptOffsets[mPart{o.Group, o.Topic, o.Partition}] = o.Offset
			}
			n.completed, n.completedAt = cmd.Epoch, cmd.Now
		}
	case command.TypeOpenSession:
		res.session, res.err = n.openSession(index, cmd.Now, cmd.Session)
	case command.TypeExpireSessions:
		for _, ref := range cmd.Expired {
			s, ok := n.sessions[ref.ClientID]
			if ok && s.id == ref.ID && s.lastActive == ref.LastActive && s.expired(cmd.Now) {
				n.end(cmd.Now, ref.ClientID, s)
				n.dropSession(ref.ClientID)
			}
		}
		n.sweepEnded(cmd.Now, maxEndedSweep)
	default:
		res.err = mReject("type")
	}
	if res.err == nil && !res.dup {
		*m = *n
	}
	return res
}

func (m *model) commit(index uint64, cmd *command.Command) mResult {
	c, now := cmd.Commit, cmd.Now
	res := mResult{index: index}
	legacy := cmd.Version < 3 && c.ClientID != "" && c.Seq != 0
	var sess *mSession
	switch {
	case legacy:
		if d, ok := m.dedup[mDedupID{c.ClientID, c.Seq}]; ok && d.exp > now {
			return mResult{index: d.index, dup: true}
		}
	case c.SessionID != 0:
		if c.Seq == 0 {
			res.err = mReject("sequence")
			return res
		}
		refuse := func(reason SessionReason, current, highest uint64) mResult {
			res.err = &SessionError{ClientID: c.ClientID, SessionID: c.SessionID, Current: current,
				Reason: reason, Lane: c.Lane, Seq: c.Seq, Highest: highest}
			return res
		}
		s, ok := m.sessions[c.ClientID]
		switch {
		case !ok:
			return refuse(SessionNotOpen, 0, 0)
		case s.id != c.SessionID:
			return refuse(SessionSuperseded, s.id, 0)
		case s.expired(now):
			return refuse(SessionNotOpen, s.id, 0)
		}
		if l, ok := m.lanes[mLaneID{c.ClientID, c.Lane}]; ok && l.session == s.id {
			switch {
			case c.Seq < l.seq:
				return refuse(SequenceStale, s.id, l.seq)
			case c.Seq == l.seq && c.Hash != l.hash:
				return refuse(SequenceReused, s.id, l.seq)
			case c.Seq == l.seq:
				return mResult{index: l.index, dup: true}
			}
		}
		sess = &s
	case c.Seq != 0:
		res.err = mReject("session_id")
		return res
	}
	for i := range c.Mutations {
		if res.err = m.mutation(now, i, &c.Mutations[i]); res.err != nil {
			return res
		}
	}
	for i := range c.Offsets {
		if res.err = m.offset(i, &c.Offsets[i], c.ClientID); res.err != nil {
			return res
		}
	}
	switch {
	case sess != nil:
		m.lanes[mLaneID{c.ClientID, c.Lane}] = mLane{session: sess.id, seq: c.Seq, index: index, hash: c.Hash}
		sess.lastActive = now
		m.sessions[c.ClientID] = *sess
	case legacy:
		k := string(dedupKey(c.ClientID, c.Seq))
		exp := now + int64(DedupWindow)
		m.dedup[mDedupID{c.ClientID, c.Seq}] = mDedup{index: index, exp: exp}
		m.expiry[mExpiryRec{exp, k}] = struct{}{}
	}
	return res
}

// dropRecord deletes the expiry record of the entry at k that expired at
// old once the entry expires at exp instead (counter adds, list
// positions).
func (m *model) dropRecord(k string, old, exp int64) {
	if old != 0 && old != exp {
		delete(m.expiry, mExpiryRec{old, k})
	}
}

func (m *model) put(e mEntry) {
	k := string(stateKey(e.ns, []byte(e.key), e.kind, []byte(e.sub)))
	m.entries[k] = e
	if e.exp != 0 {
		m.expiry[mExpiryRec{e.exp, k}] = struct{}{}
	}
}

func (m *model) mutation(now int64, i int, mu *command.Mutation) error {
	var exp int64
	if mu.TTL > 0 {
		if now > math.MaxInt64-mu.TTL {
			return mReject(fmt.Sprintf("mutations[%d].ttl", i))
		}
		exp = now + mu.TTL
	}
	ns, key := mu.Namespace, string(mu.Key)
	switch mu.Op {
	case command.OpPut:
		m.put(mEntry{ns: ns, key: key, kind: KindValue, exp: exp, value: mu.Value})
	case command.OpMapPut:
		m.put(mEntry{ns: ns, key: key, kind: KindMap, sub: string(mu.SubKey), exp: exp, value: mu.Value})
	case command.OpMapDelete:
		delete(m.entries, string(stateKey(ns, mu.Key, KindMap, mu.SubKey)))
	case command.OpDelete, command.OpDeletePrefix:
		hit := func(k string) bool {
			if mu.Op == command.OpDelete {
				return k == key
			}
			return len(k) >= len(key) && k[:len(key)] == key
		}
		maps.DeleteFunc(m.entries, func(_ string, e mEntry) bool { return e.ns == ns && hit(e.key) })
		maps.DeleteFunc(m.listNext, func(l mListID, _ mListMeta) bool { return l.ns == ns && hit(l.key) })
	case command.OpListAppend:
		id := mListID{ns, key}
		meta, ok := m.listNext[id]
		m.put(mEntry{ns: ns, key: key, kind: KindList, sub: string(listPosition(meta.next)), exp: exp, value: mu.Value})
		metaExp := exp
		switch {
		case ok && meta.exp == 0:
			metaExp = 0
		case ok && metaExp != 0:
			metaExp = max(metaExp, meta.exp)
		}
		if ok {
			m.dropRecord(string(stateKey(ns, mu.Key, KindList, nil)), meta.exp, metaExp)
		}
		m.listNext[id] = mListMeta{next: meta.next + 1, exp: metaExp}
		if metaExp != 0 {
			m.expiry[mExpiryRec{metaExp, string(stateKey(ns, mu.Key, KindList, nil))}] = struct{}{}
		}
	case command.OpCounterAdd:
		var cur, oldExp int64
		ck := string(stateKey(ns, mu.Key, KindCounter, nil))
		e, ok := m.entries[ck]
		if ok {
			oldExp = e.exp
		}
		if ok && !(e.exp != 0 && e.exp <= now) {
			cur = e.counter
			if exp == 0 {
				exp = e.exp
			}
		}
		if (mu.Delta > 0 && cur > math.MaxInt64-mu.Delta) || (mu.Delta < 0 && cur < math.MinInt64-mu.Delta) {
			return mReject(fmt.Sprintf("mutations[%d].delta", i))
		}
		m.dropRecord(ck, oldExp, exp)
		m.put(mEntry{ns: ns, key: key, kind: KindCounter, exp: exp, counter: cur + mu.Delta})
	default:
		return mReject(fmt.Sprintf("mutations[%d].kind", i))
	}
	return nil
}

// offset fences and moves one offset of a commit by client.
func (m *model) offset(i int, o *command.Offset, client string) error {
	p := mPart{o.Group, o.Topic, o.Partition}
	cl, claimed := m.claims[p]
	fence := func(reason string) error {
		return &FenceError{Field: fmt.Sprintf("offsets[%d].epoch", i), Group: o.Group, Topic: o.Topic,
			Partition: o.Partition, Epoch: o.Epoch, Current: cl.epoch, Owner: cl.owner, Reason: reason}
	}
	// The reasons are the words the FSM's FenceError.Reason must contain.
	switch {
	case !claimed && o.Epoch == 0:
	case !claimed:
		return fence("never issued")
	case o.Epoch == 0:
		return fence("carries no epoch")
	case o.Epoch > cl.epoch:
		return fence("from the future")
	case o.Epoch < cl.epoch:
		return fence("superseded")
	case cl.released:
		return fence("released")
	case cl.owner != client:
		return fence("belongs to owner")
	}
	if cur, ok := m.offsets[p]; ok && o.Offset < cur {
		return mReject(fmt.Sprintf("offsets[%d].offset", i))
	}
	m.offsets[p] = o.Offset
	return nil
}

func (m *model) claim(now int64, c *command.Claim) ([]ClaimedPartition, error) {
	if c == nil || c.Owner == "" {
		return nil, mReject("owner")
	}
	out := []ClaimedPartition{}
	for _, pe := range c.Partitions {
		p := mPart{c.Group, pe.Topic, pe.Partition}
		next := mClaim{epoch: m.claims[p].epoch + 1, owner: c.Owner, at: now}
		m.claims[p] = next
		cp := ClaimedPartition{Topic: pe.Topic, Partition: pe.Partition, Epoch: next.epoch}
		cp.Offset, cp.HasOffset = m.offsets[p]
		out = append(out, cp)
	}
	return out, nil
}

func (m *model) release(c *command.Claim) error {
	if c == nil || c.Owner == "" {
		return mReject("owner")
	}
	for _, pe := range c.Partitions {
		p := mPart{c.Group, pe.Topic, pe.Partition}
		if cl, ok := m.claims[p]; ok && cl.epoch == pe.Epoch && cl.owner == c.Owner && !cl.released {
			cl.released = true
			m.claims[p] = cl
		}
	}
	return nil
}

func (m *model) openSession(index uint64, now int64, s *command.Session) (*SessionOpened, error) {
	switch {
	case s == nil || s.ClientID == "":
		return nil, mReject("client_id")
	case s.ID == 0:
		return nil, mReject("session.id")
	case s.IdleTimeout <= 0:
		return nil, mReject("session.idle_timeout")
	}
	cur, ok := m.sessions[s.ClientID]
	if ok && cur.id == s.ID {
		if !cur.expired(now) {
			// A retry of the open that made the current session: nothing
			// changes.
			return &SessionOpened{ID: cur.id, Index: cur.opened, IdleTimeout: cur.idle}, nil
		}
		// A late attempt of the open of a session that expired (and
		// ends when an expiry entry deletes it): refused.
		return nil, mReject("session.id")
	}
	if _, ended := m.ended[mEndedID{s.ClientID, s.ID}]; ended {
		// A late attempt of the open of a session that ended: refused,
		// whatever the client id's current session.
		return nil, mReject("session.id")
	}
	if ok {
		m.end(now, s.ClientID, cur)
	}
	m.dropSession(s.ClientID)
	m.sessions[s.ClientID] = mSession{id: s.ID, opened: index, idle: s.IdleTimeout, lastActive: now}
	return &SessionOpened{ID: s.ID, Index: index, IdleTimeout: s.IdleTimeout}, nil
}

// end records that s, client's session, ended at now: an open of it is
// refused until a sweep at or after now + max(24h, 2 × its idle timeout)
// deletes the record.
func (m *model) end(now int64, client string, s mSession) {
	exp := int64(math.MaxInt64)
	ret := int64(math.MaxInt64)
	if s.idle <= math.MaxInt64/2 {
		ret = max(int64(24*time.Hour), 2*s.idle)
	}
	if now <= math.MaxInt64-ret {
		exp = now + ret
	}
	m.ended[mEndedID{client, s.id}] = mEnded{at: now, exp: exp}
}

// sweepEnded deletes the records of ended sessions that expired at or
// before now, the first limit of them in the order of their expiry
// index (time, then client id and session id).
func (m *model) sweepEnded(now int64, limit int) {
	if now < 0 {
		return
	}
	var due []mEndedID
	for id, e := range m.ended {
		if uint64(e.exp) <= uint64(now) {
			due = append(due, id)
		}
	}
	slices.SortFunc(due, func(a, b mEndedID) int {
		return bytes.Compare(endedExpiryKey(m.ended[a].exp, a.client, a.id), endedExpiryKey(m.ended[b].exp, b.client, b.id))
	})
	if len(due) > limit {
		due = due[:limit]
	}
	for _, id := range due {
		delete(m.ended, id)
	}
}

// endedDue is what EndedSessionsDue(now) must report.
func (m *model) endedDue(now int64) bool {
	for _, e := range m.ended {
		if now >= 0 && uint64(e.exp) <= uint64(now) {
			return true
		}
	}
	return false
}

// dropSession deletes client's session and every lane of it.
func (m *model) dropSession(client string) {
	delete(m.sessions, client)
	maps.DeleteFunc(m.lanes, func(l mLaneID, _ mLane) bool { return l.client == client })
}

// expire deletes, for the first limit records of the expiry index that are
// due at now (in the index's order: time, then key), the entry the record
// was written for if the entry still expires at that time, and the records.
func (m *model) expire(now int64, limit uint32) {
	var due []mExpiryRec
	for r := range m.expiry {
		if r.exp <= now {
			due = append(due, r)
		}
	}
	slices.SortFunc(due, func(a, b mExpiryRec) int {
		return cmp.Or(cmp.Compare(uint64(a.exp), uint64(b.exp)), cmp.Compare(a.key, b.key))
	})
	if uint32(len(due)) > limit {
		due = due[:limit]
	}
	for _, r := range due {
		delete(m.expiry, r)
		if e, ok := m.entries[r.key]; ok && e.exp == r.exp {
			delete(m.entries, r.key)
		}
		for id, l := range m.listNext {
			if l.exp == r.exp && string(stateKey(id.ns, []byte(id.key), KindList, nil)) == r.key {
				delete(m.listNext, id)
			}
		}
		for id, d := range m.dedup {
			if string(dedupKey(id.client, id.seq)) == r.key && d.exp == r.exp {
				delete(m.dedup, id)
			}
		}
	}
}

// live returns the entries of namespace ns that a read at now sees, in the
// order a scan returns them.
func (m *model) live(ns string, now int64) []mEntry {
	var keys []string
	for k, e := range m.entries {
		if e.ns == ns && !(e.exp != 0 && e.exp <= now) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	out := make([]mEntry, len(keys))
	for i, k := range keys {
		out[i] = m.entries[k]
	}
	return out
}

// idleSessions is what IdleSessions(now, limit) must list.
func (m *model) idleSessions(now int64, limit int) []command.SessionRef {
	clients := slices.SortedFunc(maps.Keys(m.sessions), func(a, b string) int {
		return bytes.Compare(sessionKey(a), sessionKey(b))
	})
	var out []command.SessionRef
	for _, c := range clients {
		if s := m.sessions[c]; s.expired(now) && len(out) < limit {
			out = append(out, command.SessionRef{ClientID: c, ID: s.id, LastActive: s.lastActive})
		}
	}
	return out
}

func (m *model) expiryDue(now int64) bool {
	for r := range m.expiry {
		if r.exp <= now {
			return true
		}
	}
	return false
}

// counts is what Counts must report, with the stored sizes of entries: a
// flags byte, the expiry time when there is one, and the payload.
func (m *model) counts() Counts {
	c := Counts{
		Sessions:           uint64(len(m.sessions)),
		SessionLanes:       uint64(len(m.lanes)),
		EndedSessions:      uint64(len(m.ended)),
		TTLPending:         uint64(len(m.expiry)),
		StateKeys:          uint64(len(m.entries) + len(m.listNext)),
		LegacyRetryRecords: uint64(len(m.dedup)),
	}
	for k, e := range m.entries {
		c.StateBytes += uint64(len(k)) + 1 + uint64(len(e.value))
		if e.exp != 0 {
			c.StateBytes += 8
		}
		if e.kind == KindCounter {
			c.StateBytes += 8
		}
	}
	for l, meta := range m.listNext {
		c.StateBytes += uint64(len(stateKey(l.ns, []byte(l.key), KindList, nil))) + 8
		if meta.exp != 0 {
			c.StateBytes += 1 + 8 // stored as an entry: flags and expiry
		}
	}
	return c
}

// partsOf returns the records of group in m, in the order the FSM lists
// them (topic, then partition as an unsigned number).
func partsOf[V any](recs map[mPart]V, group string) []mPart {
	var out []mPart
	for p := range recs {
		if p.group == group {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, cmpPart)
	return out
}

func cmpPart(a, b mPart) int {
	return cmp.Or(cmp.Compare(a.group, b.group), cmp.Compare(a.topic, b.topic), cmp.Compare(uint32(a.partition), uint32(b.partition)))
}

func (m *model) offsetsOf(recs map[mPart]int64, group string) []command.Offset {
	var out []command.Offset
	for _, p := range partsOf(recs, group) {
		out = append(out, command.Offset{Group: group, Topic: p.topic, Partition: p.partition, Offset: recs[p]})
	}
	return out
}

func (m *model) claimsOf(group string) []Claim {
	var out []Claim
	for _, p := range partsOf(m.claims, group) {
		c := m.claims[p]
		out = append(out, Claim{Group: group, Topic: p.topic, Partition: p.partition, Epoch: c.epoch,
			Owner: c.owner, Released: c.released, ClaimedAt: c.at})
	}
	return out
}

func (m *model) membersSorted() []command.Member {
	var out []command.Member
	for _, id := range slices.Sorted(maps.Keys(m.members)) {
		out = append(out, m.members[id])
	}
	return out
}

// listPos decodes a list element's sub-key for messages.
func listPos(sub string) uint64 {
	if len(sub) != 8 {
		return math.MaxUint64
	}
	return binary.BigEndian.Uint64([]byte(sub))
}
