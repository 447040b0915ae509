package fsm

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/statedhq/stated/raftstore/command"
)

const testIdle = int64(time.Hour)

// openSessionCmd opens session id for client at the leader's time now
// (zero: a fixed test time).
func openSessionCmd(client string, id uint64, now int64) *command.Command {
	if now == 0 {
		now = 1e18
	}
	return &command.Command{Type: command.TypeOpenSession, Now: now,
		Session: &command.Session{ClientID: client, ID: id, IdleTimeout: testIdle}}
}

// inSession puts commit cmd into session id, lane and sequence seq, with
// the payload hash the leader would add.
func inSession(cmd *command.Command, id uint64, lane uint32, seq uint64) *command.Command {
	if cmd.Now == 0 {
		cmd.Now = 1e18
	}
	c := cmd.Commit
	c.SessionID, c.Lane, c.Seq = id, lane, seq
	c.Hash = c.PayloadHash()
	return cmd
}

func putCmd(client, key, value string) *command.Command {
	return &command.Command{Type: command.TypeCommit, Commit: &command.Commit{ClientID: client,
		Mutations: []command.Mutation{{Op: command.OpPut, Namespace: "ns", Key: []byte(key), Value: []byte(value)}}}}
}

func addCmd(client string, delta int64) *command.Command {
	return &command.Command{Type: command.TypeCommit, Commit: &command.Commit{ClientID: client,
		Mutations: []command.Mutation{{Op: command.OpCounterAdd, Namespace: "n", Key: []byte("k"), Delta: delta}}}}
}

func sessionErr(t *testing.T, res *Result, want SessionReason) *SessionError {
	t.Helper()
	var se *SessionError
	if !errors.As(res.Err, &se) || se.Reason != want || !errors.Is(res.Err, ErrRejected) || !errors.Is(res.Err, ErrSessionRefused) {
		t.Fatalf("result %+v: want a session refusal %q", res, want)
	}
	return se
}

// TestReusedClientIDAppliesEveryCommit is the reproduction of the worst
// defect found in review: a second process with the same client id, whose
// sequence starts at 1 again, had its first commit acknowledged as a
// duplicate of the first process's and never applied.
func TestReusedClientIDAppliesEveryCommit(t *testing.T) {
	f := openFSM(t)
	apply(t, f, 1, openSessionCmd("x", 100, 0))
	if res := apply(t, f, 2, inSession(putCmd("x", "k0", "first"), 100, 0, 1)); res.Err != nil || res.Duplicate {
		t.Fatalf("first process: %+v", res)
	}
	// The second process opens its own session and starts at sequence 1.
	res := apply(t, f, 3, openSessionCmd("x", 200, 0))
	if res.Err != nil || res.Session == nil || res.Session.ID != 200 || res.Session.Index != 3 {
		t.Fatalf("open: %+v", res)
	}
	res = apply(t, f, 4, inSession(putCmd("x", "k1", "second"), 200, 0, 1))
	if res.Err != nil || res.Duplicate || res.Index != 4 {
		t.Fatalf("second process's commit = %+v, want applied at index 4", res)
	}
	for k, want := range map[string]string{"k0": "first", "k1": "second"} {
		e, ok, err := f.Get("ns", []byte(k), KindValue, nil, 1e18)
		if err != nil || !ok || string(e.Value) != want {
			t.Fatalf("%s = %q, %v, %v; want %q", k, e.Value, ok, err, want)
		}
	}
	// The first process is a zombie now: its commits are fenced.
	se := sessionErr(t, apply(t, f, 5, inSession(putCmd("x", "k2", "zombie"), 100, 0, 2)), SessionSuperseded)
	if se.Current != 200 || se.SessionID != 100 || se.ClientID != "x" {
		t.Fatalf("refusal = %+v", se)
	}
	if _, ok, _ := f.Get("ns", []byte("k2"), KindValue, nil, 1e18); ok {
		t.Fatal("the zombie's commit applied")
	}
	if f.AppliedIndex() != 5 {
		t.Fatalf("applied index %d after a refusal, want 5", f.AppliedIndex())
	}
}

func TestSessionAnswersRetriesAndRefusesWhatDoesNotMatch(t *testing.T) {
	f := openFSM(t)
	apply(t, f, 1, openSessionCmd("c", 7, 0))
	next := uint64(2)
	step := func(cmd *command.Command) *Result {
		r := apply(t, f, next, cmd)
		next++
		return r
	}
	if r := step(inSession(addCmd("c", 1), 7, 0, 1)); r.Err != nil || r.Index != 2 {
		t.Fatalf("seq 1: %+v", r)
	}
	// A retry gets the original index and applies nothing.
	if r := step(inSession(addCmd("c", 1), 7, 0, 1)); r.Err != nil || !r.Duplicate || r.Index != 2 {
		t.Fatalf("retry of seq 1: %+v", r)
	}
	// The same sequence with another payload is refused loudly.
	se := sessionErr(t, step(inSession(addCmd("c", 5), 7, 0, 1)), SequenceReused)
	if se.Highest != 1 || se.Seq != 1 {
		t.Fatalf("reused: %+v", se)
	}
	// Lanes are independent: lane 1 may start anywhere and overtake.
	if r := step(inSession(addCmd("c", 10), 7, 1, 4)); r.Err != nil || r.Duplicate {
		t.Fatalf("lane 1 seq 4: %+v", r)
	}
	if r := step(inSession(addCmd("c", 100), 7, 0, 3)); r.Err != nil || r.Duplicate {
		t.Fatalf("lane 0 seq 3 after a gap: %+v", r)
	}
	// Below the lane's highest: a late retry of a commit given up on.
	se = sessionErr(t, step(inSession(addCmd("c", 1000), 7, 0, 2)), SequenceStale)
	if se.Highest != 3 || se.Lane != 0 {
		t.Fatalf("stale: %+v", se)
	}
	if got := counter(t, f); got != 111 {
		t.Fatalf("counter = %d, want 1+10+100", got)
	}
	// A sequence without a session, and a session without a sequence.
	plain := addCmd("c", 1)
	plain.Commit.Seq = 9
	var re *RejectError
	if r := step(plain); !errors.As(r.Err, &re) || re.Field != "session_id" {
		t.Fatalf("sequence without session: %+v", r)
	}
	if r := step(inSession(addCmd("c", 1), 7, 0, 0)); !errors.As(r.Err, &re) || re.Field != "sequence" {
		t.Fatalf("session without sequence: %+v", r)
	}
	// A commit with a client id and neither is applied, unprotected.
	if r := step(addCmd("c", 1000)); r.Err != nil {
		t.Fatalf("plain commit: %+v", r)
	}
	if got := counter(t, f); got != 1111 {
		t.Fatalf("counter = %d, want 1111", got)
	}
}

func TestSessionExpiresByTheLeadersClockInTheLog(t *testing.T) {
	f := openFSM(t)
	t0 := int64(1e18)
	apply(t, f, 1, openSessionCmd("c", 7, t0))
	at := func(cmd *command.Command, now int64) *command.Command { cmd.Now = now; return cmd }
	// A commit just within the idle timeout keeps the session alive.
	if r := apply(t, f, 2, inSession(at(addCmd("c", 1), t0+testIdle), 7, 0, 1)); r.Err != nil {
		t.Fatalf("commit within the timeout: %+v", r)
	}
	// The leader lists it as idle only after its timeout from that commit.
	if idle, err := f.IdleSessions(t0+testIdle+testIdle, 10); err != nil || len(idle) != 0 {
		t.Fatalf("idle at the boundary: %v, %v", idle, err)
	}
	later := t0 + 2*testIdle + 1
	idle, err := f.IdleSessions(later, 10)
	if err != nil || len(idle) != 1 || idle[0].ClientID != "c" || idle[0].ID != 7 || idle[0].LastActive != t0+testIdle {
		t.Fatalf("idle = %+v, %v", idle, err)
	}
	// A commit past the timeout is refused as not open, before any sweep.
	sessionErr(t, apply(t, f, 3, inSession(at(addCmd("c", 1), later), 7, 0, 2)), SessionNotOpen)
	// The sweep deletes it and its lanes.
	apply(t, f, 4, &command.Command{Type: command.TypeExpireSessions, Now: later, Expired: idle})
	if _, ok, err := f.Session("c"); ok || err != nil {
		t.Fatalf("session after expiry: %v, %v", ok, err)
	}
	for _, kv := range dump(t, f) {
		if kv[0][0] == prefixLane || kv[0][0] == prefixSession {
			t.Fatalf("bookkeeping left after expiry: %q", kv[0])
		}
	}
	sessionErr(t, apply(t, f, 5, inSession(at(addCmd("c", 1), later), 7, 0, 2)), SessionNotOpen)
	if got := counter(t, f); got != 1 {
		t.Fatalf("counter = %d, want 1", got)
	}
}

// TestSessionSweepSparesASessionThatCommittedSinceItWasListed: the leader
// lists idle sessions outside the log; a commit that lands between the
// listing and the sweep keeps the session.
func TestSessionSweepSparesASessionThatCommittedSinceItWasListed(t *testing.T) {
	f := openFSM(t)
	t0 := int64(1e18)
	apply(t, f, 1, openSessionCmd("c", 7, t0))
	apply(t, f, 2, openSessionCmd("reopened", 8, t0))
	idle, _ := f.IdleSessions(t0+testIdle+1, 10)
	if len(idle) != 2 {
		t.Fatalf("idle = %+v", idle)
	}
	// "c" is past its timeout, so its commit is refused; "reopened" opens
	// a new session. Neither changes what "c"'s listing says, but the
	// second does for "reopened".
	apply(t, f, 3, openSessionCmd("reopened", 9, t0+testIdle+1))
	apply(t, f, 4, &command.Command{Type: command.TypeExpireSessions, Now: t0 + testIdle + 2, Expired: idle})
	if _, ok, _ := f.Session("c"); ok {
		t.Fatal("the idle session was kept")
	}
	if s, ok, _ := f.Session("reopened"); !ok || s.ID != 9 {
		t.Fatalf("the reopened session = %+v, %v; want session 9 kept", s, ok)
	}
}

func TestOpenSessionRefusesBadInput(t *testing.T) {
	f := openFSM(t)
	for i, tc := range []struct {
		s     *command.Session
		field string
	}{
		{&command.Session{ID: 1, IdleTimeout: 1}, "client_id"},
		{&command.Session{ClientID: "c", IdleTimeout: 1}, "session.id"},
		{&command.Session{ClientID: "c", ID: 1}, "session.idle_timeout"},
	} {
		res := apply(t, f, uint64(i+1), &command.Command{Type: command.TypeOpenSession, Now: 1, Session: tc.s})
		var re *RejectError
		if !errors.As(res.Err, &re) || re.Field != tc.field {
			t.Fatalf("%+v: err = %v, want a rejection of %s", tc.s, res.Err, tc.field)
		}
	}
	if _, ok, _ := f.Session("c"); ok {
		t.Fatal("a refused open left a session")
	}
}

// TestPrepareRestoreDropsSessions: a restored state starts a new log, in
// which the old sessions' indexes mean nothing; clients open new ones, and
// a commit in an old session is refused, never taken for a retry.
func TestPrepareRestoreDropsSessions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	f, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	apply(t, f, 1, openSessionCmd("c", 7, 0))
	apply(t, f, 2, inSession(addCmd("c", 1), 7, 0, 1))
	legacy := addCmd("old", 1)
	legacy.Now, legacy.Commit.Seq = 1e18, 3
	applyV2(t, f, 3, legacy)
	if c, err := f.Counts(); err != nil || c.Sessions != 1 || c.SessionLanes != 1 || c.LegacyRetryRecords != 1 {
		t.Fatalf("counts before = %+v, %v", c, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := PrepareRestore(dir, RestoredFrom{Epoch: 1, RaftIndex: 3, ClusterID: "old"}, 1); err != nil {
		t.Fatal(err)
	}
	f, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if c, err := f.Counts(); err != nil || c.Sessions != 0 || c.SessionLanes != 0 || c.LegacyRetryRecords != 0 || c.StateKeys != 1 {
		t.Fatalf("counts after = %+v, %v; want no bookkeeping and the counter", c, err)
	}
	sessionErr(t, apply(t, f, 1, inSession(addCmd("c", 1), 7, 0, 1)), SessionNotOpen)
}

// TestCommitBatchWritesItsSessionRecordOnce: the commits of a CommitBatch
// entry share its time, so the first of them in a session moves the
// session's last activity and the others find it there and write nothing
// more; a commit refused before it leaves the write to the next one.
func TestCommitBatchWritesItsSessionRecordOnce(t *testing.T) {
	f := openFSM(t)
	t0 := int64(1e18)
	apply(t, f, 1, openSessionCmd("c", 7, t0))
	put := func(key string, lane uint32, seq uint64) *command.Commit {
		return inSession(putCmd("c", key, "v"), 7, lane, seq).Commit
	}
	stale := put("stale", 0, 1)
	stale.Seq = 0 // refused by its session check, before anything is written
	t1 := t0 + 5
	batch := &command.Command{Type: command.TypeCommitBatch, Now: t1, Batch: []*command.Commit{stale, put("a", 1, 1), put("b", 2, 1), put("c", 3, 1)}}
	r := apply(t, f, 2, batch)
	if r.Err != nil || r.Batch[0].Err == nil {
		t.Fatalf("batch: %+v, first commit %+v; want the first refused and the others applied", r, r.Batch[0])
	}
	for i, res := range r.Batch[1:] {
		if res.Err != nil {
			t.Fatalf("commit %d: %v", i+1, res.Err)
		}
	}
	if s, ok, err := f.Session("c"); err != nil || !ok || s.LastActive != t1 {
		t.Fatalf("session after the batch = %+v, %v, %v; want last activity %d", s, ok, err, t1)
	}

	// Record one more commit at t1 directly: the session already says t1,
	// so only the lane is written.
	b := f.db.NewIndexedBatch()
	defer b.Close()
	a := applier{b: b, r: b, now: t1, rec: newRecordCache()}
	c := put("d", 4, 1)
	chk, _, dup, err := checkSession(a.rec, b, c, t1)
	if err != nil || dup {
		t.Fatalf("check: %v, dup %v", err, dup)
	}
	if err := a.recordSession(c, &chk, 3); err != nil {
		t.Fatal(err)
	}
	// Session and lane records go into the batch when it is committed.
	written := func() uint32 {
		nb := f.db.NewBatch()
		defer nb.Close()
		if err := a.rec.flush(nb); err != nil {
			t.Fatal(err)
		}
		return nb.Count() + b.Count()
	}
	if n := written(); n != 1 {
		t.Fatalf("recording a commit whose session holds its time wrote %d records; want 1, its lane", n)
	}
	// At a later time the session is written too.
	a.now = t1 + 1
	c = put("e", 5, 1)
	if chk, _, _, err = checkSession(a.rec, b, c, a.now); err != nil {
		t.Fatal(err)
	}
	if err := a.recordSession(c, &chk, 4); err != nil {
		t.Fatal(err)
	}
	if n := written(); n != 3 {
		t.Fatalf("recording a commit at a later time: %d records in the batch; want 3 (two lanes and the session)", n)
	}
}

// TestARetriedOpenOfTheCurrentSessionChangesNothing: a client's open of a
// session can apply twice, when an attempt the client gave up on (a
// partitioned follower forwarded it) commits after the retry that
// succeeded; the SDK sends one session id with every attempt of an open.
// The second apply answers the session as it was opened and changes
// nothing: the client is not fenced by itself, and its lanes keep what
// its commits applied, so a retried commit is still a duplicate. An open
// of another id fences it, as before; so does the same id once the
// session expired.
func TestARetriedOpenOfTheCurrentSessionChangesNothing(t *testing.T) {
	f := openFSM(t)
	apply(t, f, 1, openSessionCmd("x", 100, 0))
	if res := apply(t, f, 2, inSession(addCmd("x", 5), 100, 0, 1)); res.Err != nil || res.Duplicate {
		t.Fatalf("first commit: %+v", res)
	}
	res := apply(t, f, 3, openSessionCmd("x", 100, 0))
	if res.Err != nil || res.Session == nil || res.Session.ID != 100 || res.Session.Index != 1 || res.Session.IdleTimeout != testIdle {
		t.Fatalf("the open applied again: %+v, want session 100 as opened at index 1", res)
	}
	// The retry of the lane's commit is still known: not applied twice.
	if res := apply(t, f, 4, inSession(addCmd("x", 5), 100, 0, 1)); res.Err != nil || !res.Duplicate {
		t.Fatalf("retried commit after the open applied again: %+v, want a duplicate", res)
	}
	if res := apply(t, f, 5, inSession(addCmd("x", 1), 100, 0, 2)); res.Err != nil || res.Duplicate {
		t.Fatalf("next commit of the session: %+v", res)
	}
	e, ok, err := f.Get("n", []byte("k"), KindCounter, nil, 1e18)
	if err != nil || !ok || e.Counter != 6 {
		t.Fatalf("counter = %+v, %v, %v; want 6", e, ok, err)
	}
	// Another id fences session 100.
	apply(t, f, 6, openSessionCmd("x", 200, 0))
	sessionErr(t, apply(t, f, 7, inSession(addCmd("x", 1), 100, 0, 3)), SessionSuperseded)
	// The same id once the session expired is a late attempt of its
	// open: refused (TestAnOpenOfTheCurrentSessionOnceExpiredIsRefused).
	later := int64(1e18) + 2*testIdle
	lateOpenRefused(t, apply(t, f, 8, openSessionCmd("x", 200, later)))
}
