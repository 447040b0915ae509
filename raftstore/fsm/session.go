package fsm

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/statedhq/stated/raftstore/command"
)

// Client sessions (the Raft dissertation, §6.3; Kafka's idempotent
// producer). A session is opened by a replicated command and names one
// client id's current incarnation: opening a new one for the same client id
// fences every older one. Within a session, commits travel in lanes: a lane
// is an ordered stream of commits, one at a time (the SDK uses one lane per
// commit in flight), and the state machine keeps, per lane, the highest
// sequence applied, its payload hash and its index. A retry of that
// sequence with the same payload is answered with the original index and
// applied nothing; anything else at or below it is refused.
//
// The records:
//
//	prefixSession, client id         -> id, opened index, idle timeout, last activity
//	prefixLane, client id, lane (u32) -> session id, sequence, index, payload hash
//
// so the bookkeeping is one record per session and one per lane, whatever
// the number of commits. Idle sessions are deleted by TypeExpireSessions,
// which the leader proposes after listing them (IdleSessions); expiry is
// judged by the leader's clock written into each command, never by a clock
// read here.
//
// Ended sessions. A session ends when TypeExpireSessions deletes it,
// when an open of another session id replaces it, or when a restore from
// a checkpoint drops it (PrepareRestore, at the restore's time). Its open
// may still be in flight then: the SDK sends the same session id with every attempt of
// one open, and an attempt it gave up on can apply late. Opened again,
// the session would start with empty lanes, and a retried commit of it
// whose answer was lost would apply a second time. So each end leaves a
// record of (client id, session id) for a retention of
// max(EndedSessionRetention, 2 × the session's idle timeout), and an open
// of an ended session is refused (as is an open of the client id's
// current session once it expired, which has not ended yet):
//
//	prefixEndedSession, client id, session id (u64) -> ended at, expires at
//	prefixEndedExpiry, expires at (u64), client id, session id -> nothing
//
// The second is the index TypeExpireSessions sweeps them by, at the
// entry's time, oldest first and at most maxEndedSweep per entry; the
// leader proposes one with no sessions listed when only ended sessions
// are due (EndedSessionsDue). Both are written and deleted together. The
// first goes through the record cache like the session records (reads
// in the apply loop must see the writes of the batch being built); the
// index is read only by the sweep, through the applier's reader, which
// is the indexed batch for TypeExpireSessions (readsOwnWrites).

// SessionReason says why a commit was refused by its session.
type SessionReason uint8

const (
	// SessionSuperseded: the client id opened a newer session.
	SessionSuperseded SessionReason = 1
	// SessionNotOpen: the session expired, or was never opened here.
	SessionNotOpen SessionReason = 2
	// SequenceReused: the lane's highest sequence carried another payload.
	SequenceReused SessionReason = 3
	// SequenceStale: the sequence is below the lane's highest.
	SequenceStale SessionReason = 4
)

func (r SessionReason) String() string {
	switch r {
	case SessionSuperseded:
		return "superseded"
	case SessionNotOpen:
		return "not open"
	case SequenceReused:
		return "sequence reused"
	case SequenceStale:
		return "sequence stale"
	}
	return "unknown"
}

// SessionError is a commit refused by its session: nothing of it applied.
// It matches ErrSessionRefused and ErrRejected.
type SessionError struct {
	ClientID  string
	SessionID uint64
	// Current is the client id's current session, zero when it has none.
	Current uint64
	Reason  SessionReason
	Lane    uint32
	Seq     uint64
	// Highest is the lane's highest applied sequence.
	Highest uint64
	Message string
}

func (e *SessionError) Error() string { return "fsm: session: " + e.Message }

// Is matches ErrSessionRefused and ErrRejected.
func (e *SessionError) Is(target error) bool {
	return target == ErrSessionRefused || target == ErrRejected
}

// SessionOpened is what a TypeOpenSession command returns.
type SessionOpened struct {
	ID          uint64
	Index       uint64
	IdleTimeout int64
}

// session is a session record.
type session struct {
	id          uint64
	opened      uint64 // index of the entry that opened it
	idleTimeout int64  // nanoseconds
	lastActive  int64  // leader's Unix nanoseconds of its last commit or opening
}

const sessionRecordSize = 32

func (s *session) encode(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, s.id)
	dst = binary.BigEndian.AppendUint64(dst, s.opened)
	dst = binary.BigEndian.AppendUint64(dst, uint64(s.idleTimeout))
	return binary.BigEndian.AppendUint64(dst, uint64(s.lastActive))
}

func decodeSession(v []byte) (session, error) {
	if len(v) != sessionRecordSize {
		return session{}, fmt.Errorf("%w: session record of %d bytes", ErrCorrupt, len(v))
	}
	return session{
		id:          binary.BigEndian.Uint64(v),
		opened:      binary.BigEndian.Uint64(v[8:]),
		idleTimeout: int64(binary.BigEndian.Uint64(v[16:])),
		lastActive:  int64(binary.BigEndian.Uint64(v[24:])),
	}, nil
}

// expiredAt reports whether the session's idle timeout ran out before now.
func (s *session) expiredAt(now int64) bool {
	if s.lastActive > math.MaxInt64-s.idleTimeout {
		return false
	}
	return now > s.lastActive+s.idleTimeout
}

// lane is a lane record.
type lane struct {
	session uint64
	seq     uint64
	index   uint64
	hash    [16]byte
}

const laneRecordSize = 40

func (l *lane) encode(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, l.session)
	dst = binary.BigEndian.AppendUint64(dst, l.seq)
	dst = binary.BigEndian.AppendUint64(dst, l.index)
	return append(dst, l.hash[:]...)
}

func decodeLane(v []byte) (lane, error) {
	if len(v) != laneRecordSize {
		return lane{}, fmt.Errorf("%w: session lane record of %d bytes", ErrCorrupt, len(v))
	}
	l := lane{
		session: binary.BigEndian.Uint64(v),
		seq:     binary.BigEndian.Uint64(v[8:]),
		index:   binary.BigEndian.Uint64(v[16:]),
	}
	copy(l.hash[:], v[24:])
	return l, nil
}

func sessionKey(clientID string) []byte {
	return appendComponent([]byte{prefixSession}, []byte(clientID))
}

func laneClientPrefix(clientID string) []byte {
	return appendComponent([]byte{prefixLane}, []byte(clientID))
}

func laneKey(clientID string, l uint32) []byte {
	return binary.BigEndian.AppendUint32(laneClientPrefix(clientID), l)
}

// sessionCheck is a commit's session, checked and ready to be recorded.
type sessionCheck struct {
	sess session
	lane lane
}

// checkSession decides what to do with a commit c that carries a session,
// at the leader's time now: apply it (the returned check is recorded with
// it), answer it as a duplicate of the commit at index first, or refuse it
// with a *SessionError. It reads the records through rc, which reads
// what it does not hold through r.
func checkSession(rc *recordCache, r pebble.Reader, c *command.Commit, now int64) (chk sessionCheck, first uint64, dup bool, err error) {
	refuse := func(reason SessionReason, current, highest uint64, format string, args ...any) error {
		return &SessionError{ClientID: c.ClientID, SessionID: c.SessionID, Current: current, Reason: reason,
			Lane: c.Lane, Seq: c.Seq, Highest: highest, Message: fmt.Sprintf(format, args...)}
	}
	if c.Seq == 0 {
		return chk, 0, false, reject("sequence", "a commit with session_id needs a sequence above 0")
	}
	v, ok, err := rc.get(r, sessionKey(c.ClientID))
	if err != nil {
		return chk, 0, false, err
	}
	if !ok {
		return chk, 0, false, refuse(SessionNotOpen, 0, 0,
			"session %d of client %q is not open: it expired after its idle timeout, or was opened on another cluster (before a restore); open a new session",
			c.SessionID, c.ClientID)
	}
	s, err := decodeSession(v)
	if err != nil {
		return chk, 0, false, err
	}
	if s.id != c.SessionID {
		return chk, 0, false, refuse(SessionSuperseded, s.id, 0,
			"session %d of client %q is fenced: the client id opened session %d (at index %d) since; another process uses this client id",
			c.SessionID, c.ClientID, s.id, s.opened)
	}
	if s.expiredAt(now) {
		return chk, 0, false, refuse(SessionNotOpen, s.id, 0,
			"session %d of client %q expired: no commit for more than its idle timeout of %s; open a new session",
			c.SessionID, c.ClientID, fmtNanos(s.idleTimeout))
	}
	chk.sess = s
	chk.lane = lane{session: s.id, seq: c.Seq, hash: c.Hash}
	v, ok, err = rc.get(r, laneKey(c.ClientID, c.Lane))
	if err != nil || !ok {
		return chk, 0, false, err
	}
	l, err := decodeLane(v)
	if err != nil {
		return chk, 0, false, err
	}
	if l.session != s.id {
		// A lane of an older session (opening a session deletes them):
		// the lane starts afresh.
		return chk, 0, false, nil
	}
	switch {
	case c.Seq > l.seq:
		return chk, 0, false, nil
	case c.Seq < l.seq:
		return chk, 0, false, refuse(SequenceStale, s.id, l.seq,
			"sequence %d of lane %d of session %d is below the lane's highest, %d: a late or reordered retry; it was not applied",
			c.Seq, c.Lane, c.SessionID, l.seq)
	case c.Hash != l.hash:
		return chk, 0, false, refuse(SequenceReused, s.id, l.seq,
			"sequence %d of lane %d of session %d was applied at index %d with other mutations or offsets; this commit was not applied",
			c.Seq, c.Lane, c.SessionID, l.index)
	}
	return chk, l.index, true, nil
}

func fmtNanos(n int64) string { return time.Duration(n).String() }

// recordSession writes a commit's lane and its session's last activity.
func (a *applier) recordSession(c *command.Commit, chk *sessionCheck, index uint64) error {
	chk.lane.index = index
	a.vbuf = chk.lane.encode(a.vbuf[:0])
	if err := a.setRecord(laneKey(c.ClientID, c.Lane), a.vbuf); err != nil {
		return err
	}
	if chk.sess.lastActive == a.now {
		// The record holds this already: every commit of an entry has
		// the entry's time, so that all but the first of a CommitBatch
		// entry's commits in one session would write the same record
		// again, each a Pebble write and a memtable insert.
		return nil
	}
	chk.sess.lastActive = a.now
	a.vbuf = chk.sess.encode(a.vbuf[:0])
	return a.setRecord(sessionKey(c.ClientID), a.vbuf)
}

// record reads a record the record cache keeps (a session, a lane, a
// window namespace's spec or meta) through it.
func (a *applier) record(key []byte) ([]byte, bool, error) { return a.rec.get(a.r, key) }

// setRecord writes a record the record cache keeps (a session, a lane, a
// window namespace's spec or meta), or deletes it when val is nil, into
// the batch and the record cache (every write of these records goes
// through here or dropLanes, or the cache would go stale). A session's
// and a lane's record go into the batch only when it is committed
// (recordCache.flush).
func (a *applier) setRecord(key, val []byte) error {
	if deferred(key[0]) {
		a.rec.set(key, val)
		return nil
	}
	var err error
	if val == nil {
		err = a.b.Delete(key, nil)
	} else {
		err = a.b.Set(key, val, nil)
	}
	if err == nil {
		a.rec.set(key, val)
	}
	return err
}

// openSession opens s, replacing (and so fencing) the client id's current
// session and dropping that session's lanes; the replaced session ends.
//
// An open of the client id's current session, not expired, changes
// nothing and answers that session as it was opened: it is a retry of
// the open that made it (the SDK sends the same session id with every
// attempt of one open), applied after it. Replacing it would fence the
// very client that opened it, and dropping its lanes would forget what
// its commits since then applied.
//
// An open of a session that ended (expired, replaced by another, or
// dropped by a restore), or of the current session once it expired, is
// refused and changes nothing: it is an attempt of the open that made
// it, applied late, and opening it again with empty lanes would let a
// retried commit of it apply twice. Its client opens a new session.
func (a *applier) openSession(s *command.Session, index uint64) (*SessionOpened, error) {
	switch {
	case s == nil || s.ClientID == "":
		return nil, reject("client_id", "empty")
	case s.ID == 0:
		return nil, reject("session.id", "zero")
	case s.IdleTimeout <= 0:
		return nil, reject("session.idle_timeout", "%d is not positive", s.IdleTimeout)
	}
	v, ok, err := a.record(sessionKey(s.ClientID))
	if err != nil {
		return nil, err
	}
	var cur session
	if ok {
		if cur, err = decodeSession(v); err != nil {
			return nil, err
		}
		if cur.id == s.ID {
			if !cur.expiredAt(a.now) {
				return &SessionOpened{ID: cur.id, Index: cur.opened, IdleTimeout: cur.idleTimeout}, nil
			}
			// It ends when TypeExpireSessions deletes it (a refusal
			// writes nothing); until then its record refuses this.
			return nil, endedOpen(s, 0,
				"session %d of client %q expired at %s (idle timeout %s): a late attempt of its open opens nothing; open a new session",
				s.ID, s.ClientID, fmtTime(cur.lastActive+cur.idleTimeout), fmtNanos(cur.idleTimeout))
		}
	}
	e, ended, err := a.endedSession(s.ClientID, s.ID)
	if err != nil {
		return nil, err
	}
	if ended {
		return nil, endedOpen(s, cur.id,
			"session %d of client %q ended (expired, replaced or dropped by a restore) at %s: a late attempt of its open opens nothing; open a new session",
			s.ID, s.ClientID, fmtTime(e.at))
	}
	if ok {
		if err := a.endSession(s.ClientID, cur); err != nil {
			return nil, err
		}
	}
	rec := session{id: s.ID, opened: index, idleTimeout: s.IdleTimeout, lastActive: a.now}
	if err := a.dropLanes(s.ClientID); err != nil {
		return nil, err
	}
	if err := a.setRecord(sessionKey(s.ClientID), rec.encode(nil)); err != nil {
		return nil, err
	}
	return &SessionOpened{ID: s.ID, Index: index, IdleTimeout: s.IdleTimeout}, nil
}

// endedOpen is the refusal of an open of session s, which ended; current
// is the client id's current session (zero: none, or s itself expired).
func endedOpen(s *command.Session, current uint64, format string, args ...any) error {
	return &EndedSessionError{
		Reject:   RejectError{Field: "session.id", Reason: fmt.Sprintf(format, args...)},
		ClientID: s.ClientID, SessionID: s.ID, Current: current,
	}
}

func fmtTime(n int64) string { return time.Unix(0, n).UTC().Format(time.RFC3339Nano) }

func (a *applier) dropLanes(clientID string) error {
	p := laneClientPrefix(clientID)
	// A session's lanes are few, and a new client has none: point
	// deletions, not a range deletion per session (see clearRange).
	if err := a.clearRange(p, prefixEnd(p)); err != nil {
		return err
	}
	a.rec.dropLanes(p)
	return nil
}

// expireSessions deletes each listed session that is still the client id's
// session, saw no commit since it was listed, and is idle past its timeout
// at the command's time.
func (a *applier) expireSessions(refs []command.SessionRef) error {
	for _, ref := range refs {
		v, ok, err := a.record(sessionKey(ref.ClientID))
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		s, err := decodeSession(v)
		if err != nil {
			return err
		}
		if s.id != ref.ID || s.lastActive != ref.LastActive || !s.expiredAt(a.now) {
			continue
		}
		if err := a.endSession(ref.ClientID, s); err != nil {
			return err
		}
		if err := a.setRecord(sessionKey(ref.ClientID), nil); err != nil {
			return err
		}
		if err := a.dropLanes(ref.ClientID); err != nil {
			return err
		}
	}
	return a.sweepEnded(maxEndedSweep)
}

// EndedSessionRetention is the least time an ended session's record is
// kept (see "Ended sessions" above): an open of the session is refused
// until its record is swept.
const EndedSessionRetention = 24 * time.Hour

// maxEndedSweep bounds the ended sessions' records one TypeExpireSessions
// entry deletes.
const maxEndedSweep = 10_000

// endedRetention is how long the record of a session with idle timeout
// idle is kept once it ended.
func endedRetention(idle int64) int64 {
	if idle > math.MaxInt64/2 {
		return math.MaxInt64
	}
	return max(int64(EndedSessionRetention), 2*idle)
}

// endedSessionRecord is the record of an ended session: when it ended,
// and when the record expires.
type endedSessionRecord struct {
	at, expires int64
}

const endedRecordSize = 16

func decodeEnded(v []byte) (endedSessionRecord, error) {
	if len(v) != endedRecordSize {
		return endedSessionRecord{}, fmt.Errorf("%w: ended session record of %d bytes", ErrCorrupt, len(v))
	}
	return endedSessionRecord{at: int64(binary.BigEndian.Uint64(v)), expires: int64(binary.BigEndian.Uint64(v[8:]))}, nil
}

// endedRecord is the record of a session with idle timeout idle that
// ended at at, and when it expires: at + endedRetention(idle).
func endedRecord(at, idle int64) (v []byte, expires int64) {
	expires = math.MaxInt64
	if ret := endedRetention(idle); at <= math.MaxInt64-ret {
		expires = at + ret
	}
	v = binary.BigEndian.AppendUint64(make([]byte, 0, endedRecordSize), uint64(at))
	return binary.BigEndian.AppendUint64(v, uint64(expires)), expires
}

func endedSessionKey(clientID string, id uint64) []byte {
	return binary.BigEndian.AppendUint64(appendComponent([]byte{prefixEndedSession}, []byte(clientID)), id)
}

func endedExpiryKey(expires int64, clientID string, id uint64) []byte {
	k := binary.BigEndian.AppendUint64([]byte{prefixEndedExpiry}, uint64(expires))
	return binary.BigEndian.AppendUint64(appendComponent(k, []byte(clientID)), id)
}

// endedSession reads the record of clientID's ended session id.
func (a *applier) endedSession(clientID string, id uint64) (endedSessionRecord, bool, error) {
	v, ok, err := a.record(endedSessionKey(clientID, id))
	if err != nil || !ok {
		return endedSessionRecord{}, false, err
	}
	e, err := decodeEnded(v)
	return e, err == nil, err
}

// endSession records that s, clientID's session, ended at the command's
// time; the caller deletes or replaces its session record.
func (a *applier) endSession(clientID string, s session) error {
	v, exp := endedRecord(a.now, s.idleTimeout)
	k := endedSessionKey(clientID, s.id)
	old, ok, err := a.endedSession(clientID, s.id)
	if err != nil {
		return err
	}
	if ok && old.expires != exp {
		// Not reached (an ended session is not opened again while its
		// record lasts), but the index must not keep a stale key.
		if err := a.b.Delete(endedExpiryKey(old.expires, clientID, s.id), nil); err != nil {
			return err
		}
	}
	if err := a.setRecord(k, v); err != nil {
		return err
	}
	a.rec.endedExpiry.lower(uint64(exp))
	return a.b.Set(endedExpiryKey(exp, clientID, s.id), nil, nil)
}

// sweepEnded deletes up to limit records of ended sessions that expired at
// or before the command's time, oldest first, with their index keys.
func (a *applier) sweepEnded(limit int) error {
	// From the index's floor, as expire: the sweeps before deleted every
	// key below it.
	due, err := a.rec.endedExpiry.due(a.r, prefixEndedExpiry, a.now, limit)
	if err != nil {
		return err
	}
	for _, ik := range due {
		if len(ik) < 9+8 {
			return fmt.Errorf("%w: ended session index key of %d bytes", ErrCorrupt, len(ik))
		}
		exp := int64(binary.BigEndian.Uint64(ik[1:9]))
		client, rest, err := readComponent(ik[9:])
		if err != nil {
			return err
		}
		if len(rest) != 8 {
			return fmt.Errorf("%w: ended session index key of %d bytes", ErrCorrupt, len(ik))
		}
		id := binary.BigEndian.Uint64(rest)
		e, ok, err := a.endedSession(string(client), id)
		if err != nil {
			return err
		}
		if ok && e.expires == exp {
			if err := a.setRecord(endedSessionKey(string(client), id), nil); err != nil {
				return err
			}
		}
		if err := a.b.Delete(ik, nil); err != nil {
			return err
		}
	}
	return nil
}

// IdleSessions lists up to limit sessions whose idle timeout ran out before
// now, for the leader to propose their expiry.
func (f *FSM) IdleSessions(now int64, limit int) ([]command.SessionRef, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, ErrClosed
	}
	it, err := f.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixSession}, UpperBound: []byte{prefixSession + 1}})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []command.SessionRef
	// NextPrefix, not Next: every commit in a session rewrites its
	// record, and Next steps over each older version still in the
	// memtable.
	for ok := it.First(); ok && len(out) < limit; ok = it.NextPrefix() {
		id, _, err := readComponent(it.Key()[1:])
		if err != nil {
			return nil, err
		}
		s, err := decodeSession(it.Value())
		if err != nil {
			return nil, err
		}
		if s.expiredAt(now) {
			out = append(out, command.SessionRef{ClientID: string(id), ID: s.id, LastActive: s.lastActive})
		}
	}
	return out, it.Error()
}

// EndedSessionsDue reports whether a record of an ended session expired
// at or before now: the leader then proposes a TypeExpireSessions entry,
// which sweeps them, even when no session is idle.
func (f *FSM) EndedSessionsDue(now int64) (bool, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return false, ErrClosed
	}
	return f.records.endedExpiry.anyDue(f.db, prefixEndedExpiry, now)
}

// ClientSession is a session as Session reports it.
type ClientSession struct {
	ID          uint64
	OpenedIndex uint64
	IdleTimeout int64
	LastActive  int64
}

// Session returns clientID's current session, if it has one (expired
// sessions not yet deleted included).
func (f *FSM) Session(clientID string) (ClientSession, bool, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return ClientSession{}, false, ErrClosed
	}
	v, ok, err := getRecord(f.db, sessionKey(clientID))
	if err != nil || !ok {
		return ClientSession{}, false, err
	}
	s, err := decodeSession(v)
	if err != nil {
		return ClientSession{}, false, err
	}
	return ClientSession{ID: s.id, OpenedIndex: s.opened, IdleTimeout: s.idleTimeout, LastActive: s.lastActive}, true, nil
}
