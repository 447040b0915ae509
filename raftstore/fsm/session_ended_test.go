package fsm

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// lateOpenRefused checks that res refuses an open as a late attempt of an
// ended session's open.
func lateOpenRefused(t *testing.T, res *Result) {
	t.Helper()
	var re *RejectError
	if !errors.As(res.Err, &re) || re.Field != "session.id" || res.Session != nil ||
		!strings.Contains(re.Reason, "late attempt of its open opens nothing") {
		t.Fatalf("open = %+v (err %v), want refused as a late open naming session.id", res, res.Err)
	}
}

func expireSessionsCmd(now int64, refs ...command.SessionRef) *command.Command {
	return &command.Command{Type: command.TypeExpireSessions, Now: now, Expired: refs}
}

func endedCount(t *testing.T, f *FSM) uint64 {
	t.Helper()
	c, err := f.Counts()
	if err != nil {
		t.Fatal(err)
	}
	return c.EndedSessions
}

// TestALateOpenOfAnEndedSessionIsRefusedAndItsRetriedCommitAppliesOnce is
// the reviewer's reproduction: a session opens, a commit applies (its
// answer lost), the session expires, an attempt of the session's open
// applies late, and the commit is retried. Before, the late open opened the
// session again with empty lanes and the retry applied a second time.
func TestALateOpenOfAnEndedSessionIsRefusedAndItsRetriedCommitAppliesOnce(t *testing.T) {
	f := openFSM(t)
	t0 := int64(1e18)
	apply(t, f, 1, openSessionCmd("reopen-raw", 777, t0))
	commit := func(now int64) *command.Command {
		cmd := inSession(addCmd("reopen-raw", 1), 777, 0, 1)
		cmd.Now = now
		return cmd
	}
	if res := apply(t, f, 2, commit(t0)); res.Err != nil || res.Duplicate {
		t.Fatalf("first commit: %+v", res)
	}
	later := t0 + testIdle + 1
	idle, err := f.IdleSessions(later, 10)
	if err != nil || len(idle) != 1 {
		t.Fatalf("idle = %+v, %v", idle, err)
	}
	apply(t, f, 3, expireSessionsCmd(later, idle...))
	late := apply(t, f, 4, openSessionCmd("reopen-raw", 777, later+1))
	retried := apply(t, f, 5, commit(later+2))
	if got := counter(t, f); got != 1 {
		t.Fatalf("counter = %d, want 1: the retried commit applied twice (late open %+v, retry %+v)", got, late, retried)
	}
	lateOpenRefused(t, late)
	sessionErr(t, retried, SessionNotOpen)
	if _, ok, err := f.Session("reopen-raw"); ok || err != nil {
		t.Fatalf("the late open left a session: %v, %v", ok, err)
	}
	if n := endedCount(t, f); n != 1 {
		t.Fatalf("ended sessions after the expiry = %d, want 1", n)
	}
	// The client opens a new session and goes on.
	if res := apply(t, f, 6, openSessionCmd("reopen-raw", 778, later+3)); res.Err != nil || res.Session.ID != 778 {
		t.Fatalf("new session: %+v", res)
	}
	// The record outlives a restart (the record cache starts empty).
	dir := f.dir
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lateOpenRefused(t, apply(t, f, 7, openSessionCmd("reopen-raw", 777, later+4)))
	if s, ok, _ := f.Session("reopen-raw"); !ok || s.ID != 778 {
		t.Fatalf("session after the refused open = %+v, %v; want 778 kept", s, ok)
	}
}

// TestALateOpenOfAReplacedSessionIsRefusedAndLeavesTheCurrentOneAlone: a
// session replaced by the client's next one, or by another process's
// takeover of the client id, is not opened again by a late attempt of its
// open: the current session is not fenced and keeps its lanes.
func TestALateOpenOfAReplacedSessionIsRefusedAndLeavesTheCurrentOneAlone(t *testing.T) {
	f := openFSM(t)
	apply(t, f, 1, openSessionCmd("x", 100, 0))
	if res := apply(t, f, 2, inSession(addCmd("x", 1), 100, 0, 1)); res.Err != nil {
		t.Fatalf("commit in 100: %+v", res)
	}
	// The client's next session.
	apply(t, f, 3, openSessionCmd("x", 200, 0))
	if res := apply(t, f, 4, inSession(addCmd("x", 10), 200, 0, 1)); res.Err != nil || res.Duplicate {
		t.Fatalf("commit in 200: %+v", res)
	}
	lateOpenRefused(t, apply(t, f, 5, openSessionCmd("x", 100, 0)))
	if s, ok, _ := f.Session("x"); !ok || s.ID != 200 || s.OpenedIndex != 3 {
		t.Fatalf("session = %+v, %v; want 200 opened at 3, untouched", s, ok)
	}
	// 200's lane is kept: its retry is a duplicate; 100's is refused.
	if res := apply(t, f, 6, inSession(addCmd("x", 10), 200, 0, 1)); res.Err != nil || !res.Duplicate || res.Index != 4 {
		t.Fatalf("retry in 200: %+v, want a duplicate of index 4", res)
	}
	sessionErr(t, apply(t, f, 7, inSession(addCmd("x", 1), 100, 0, 1)), SessionSuperseded)

	// Another process takes the client id over.
	apply(t, f, 8, openSessionCmd("x", 300, 0))
	if res := apply(t, f, 9, inSession(addCmd("x", 100), 300, 1, 5)); res.Err != nil {
		t.Fatalf("commit in 300: %+v", res)
	}
	lateOpenRefused(t, apply(t, f, 10, openSessionCmd("x", 200, 0)))
	lateOpenRefused(t, apply(t, f, 11, openSessionCmd("x", 100, 0)))
	if s, ok, _ := f.Session("x"); !ok || s.ID != 300 || s.OpenedIndex != 8 {
		t.Fatalf("session = %+v, %v; want 300 opened at 8, untouched", s, ok)
	}
	if res := apply(t, f, 12, inSession(addCmd("x", 100), 300, 1, 5)); res.Err != nil || !res.Duplicate || res.Index != 9 {
		t.Fatalf("retry in 300: %+v, want a duplicate of index 9", res)
	}
	sessionErr(t, apply(t, f, 13, inSession(addCmd("x", 10), 200, 0, 1)), SessionSuperseded)
	if got := counter(t, f); got != 111 {
		t.Fatalf("counter = %d, want 111", got)
	}
	if n := endedCount(t, f); n != 2 {
		t.Fatalf("ended sessions = %d, want 2 (100 and 200)", n)
	}
}

// TestAnOpenOfTheCurrentSessionOnceExpiredIsRefused: the client id's
// session record is still there (no expiry entry deleted it yet), but its
// idle timeout ran out; an open of its id is a late attempt too.
func TestAnOpenOfTheCurrentSessionOnceExpiredIsRefused(t *testing.T) {
	f := openFSM(t)
	t0 := int64(1e18)
	apply(t, f, 1, openSessionCmd("x", 100, t0))
	if res := apply(t, f, 2, inSession(addCmd("x", 1), 100, 0, 1)); res.Err != nil {
		t.Fatalf("commit: %+v", res)
	}
	later := t0 + testIdle + 1
	lateOpenRefused(t, apply(t, f, 3, openSessionCmd("x", 100, later)))
	if s, ok, _ := f.Session("x"); !ok || s.ID != 100 || s.OpenedIndex != 1 || s.LastActive != t0 {
		t.Fatalf("session = %+v, %v; want 100 as it was", s, ok)
	}
	retry := inSession(addCmd("x", 1), 100, 0, 1)
	retry.Now = later
	sessionErr(t, apply(t, f, 4, retry), SessionNotOpen)
	idle, _ := f.IdleSessions(later, 10)
	apply(t, f, 5, expireSessionsCmd(later, idle...))
	lateOpenRefused(t, apply(t, f, 6, openSessionCmd("x", 100, later)))
	if res := apply(t, f, 7, openSessionCmd("x", 101, later)); res.Err != nil || res.Session.ID != 101 {
		t.Fatalf("new session: %+v", res)
	}
	if got := counter(t, f); got != 1 {
		t.Fatalf("counter = %d, want 1", got)
	}
}

// TestAnExpiryAndALateOpenInOneApplyBatchAreRefused: entries of one apply
// batch see the records the earlier ones wrote, though the batch is not
// committed yet.
func TestAnExpiryAndALateOpenInOneApplyBatchAreRefused(t *testing.T) {
	f := openFSM(t)
	t0 := int64(1e18)
	later := t0 + testIdle + 1
	retry := func() *command.Command {
		cmd := inSession(addCmd("c", 1), 777, 0, 1)
		cmd.Now = later
		return cmd
	}
	logs := func(from uint64, cmds ...*command.Command) []*raft.Log {
		var out []*raft.Log
		for i, cmd := range cmds {
			out = append(out, &raft.Log{Index: from + uint64(i), Term: 1, Type: raft.LogCommand, Data: command.Encode(nil, cmd)})
		}
		return out
	}
	first := inSession(addCmd("c", 1), 777, 0, 1)
	first.Now = t0
	res := f.Batching().ApplyBatch(logs(1, openSessionCmd("c", 777, t0), first,
		openSessionCmd("d", 1, t0), inSession(addCmd("d", 5), 1, 0, 1)))
	for i, r := range res {
		if r.(*Result).Err != nil {
			t.Fatalf("entry %d: %+v", i+1, r)
		}
	}
	// One batch: c's expiry, its late open, its retried commit; d's next
	// session, the late open of d's replaced one, and d's retried commit.
	res = f.Batching().ApplyBatch(logs(5,
		expireSessionsCmd(later, command.SessionRef{ClientID: "c", ID: 777, LastActive: t0}),
		openSessionCmd("c", 777, later),
		retry(),
		openSessionCmd("d", 2, later),
		openSessionCmd("d", 1, later),
		inSession(addCmd("d", 5), 1, 0, 1),
	))
	if r := res[0].(*Result); r.Err != nil {
		t.Fatalf("expiry: %+v", r)
	}
	lateOpenRefused(t, res[1].(*Result))
	sessionErr(t, res[2].(*Result), SessionNotOpen)
	if r := res[3].(*Result); r.Err != nil || r.Session == nil || r.Session.ID != 2 {
		t.Fatalf("d's next session: %+v", r)
	}
	lateOpenRefused(t, res[4].(*Result))
	sessionErr(t, res[5].(*Result), SessionSuperseded)
	if got := counter(t, f); got != 6 {
		t.Fatalf("counter = %d, want 6", got)
	}
	if s, ok, _ := f.Session("d"); !ok || s.ID != 2 || s.OpenedIndex != 8 {
		t.Fatalf("d's session = %+v, %v; want 2 opened at 8", s, ok)
	}
	if _, ok, _ := f.Session("c"); ok {
		t.Fatal("c has a session after its late open")
	}
	if n := endedCount(t, f); n != 2 {
		t.Fatalf("ended sessions = %d, want 2", n)
	}
	// The committed records refuse too, read from Pebble.
	lateOpenRefused(t, apply(t, f, 11, openSessionCmd("c", 777, later)))
	lateOpenRefused(t, apply(t, f, 12, openSessionCmd("d", 1, later)))
}

// TestEndedSessionsAreSweptAfterTheirRetentionByExpiryEntries: the record
// of an ended session lasts max(24 h, 2 × its idle timeout) from its end,
// by the time of the entries, and a TypeExpireSessions entry sweeps it
// then, even one that lists no session.
func TestEndedSessionsAreSweptAfterTheirRetentionByExpiryEntries(t *testing.T) {
	f := openFSM(t)
	t0 := int64(1e18)
	long := int64(20 * time.Hour)
	apply(t, f, 1, openSessionCmd("a", 1, t0))
	apply(t, f, 2, &command.Command{Type: command.TypeOpenSession, Now: t0,
		Session: &command.Session{ClientID: "b", ID: 1, IdleTimeout: long}})
	// Both replaced at t1: a's record lasts 24 h, b's 40 h.
	t1 := t0 + int64(time.Minute)
	apply(t, f, 3, openSessionCmd("a", 2, t1))
	apply(t, f, 4, openSessionCmd("b", 2, t1))
	day, b := t1+int64(24*time.Hour), t1+2*long
	due := func(now int64) bool {
		d, err := f.EndedSessionsDue(now)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if due(day - 1) {
		t.Fatal("due before the retention")
	}
	index := uint64(5)
	step := func(cmd *command.Command) *Result {
		r := apply(t, f, index, cmd)
		index++
		return r
	}
	if r := step(expireSessionsCmd(day - 1)); r.Err != nil {
		t.Fatalf("empty expiry: %+v", r)
	}
	if n := endedCount(t, f); n != 2 {
		t.Fatalf("ended = %d before the retention, want 2", n)
	}
	lateOpenRefused(t, step(openSessionCmd("a", 1, day-1)))
	if !due(day) || due(-1) {
		t.Fatal("not due at the retention")
	}
	step(expireSessionsCmd(day))
	if n := endedCount(t, f); n != 1 {
		t.Fatalf("ended = %d after a's retention, want 1", n)
	}
	if due(b - 1) {
		t.Fatal("b due before its retention of twice its idle timeout")
	}
	lateOpenRefused(t, step(openSessionCmd("b", 1, b-1)))
	step(expireSessionsCmd(b))
	if n := endedCount(t, f); n != 0 || due(b+int64(time.Hour)) {
		t.Fatalf("ended = %d after b's retention, want 0", n)
	}
	for _, kv := range dump(t, f) {
		if kv[0][0] == prefixEndedSession || kv[0][0] == prefixEndedExpiry {
			t.Fatalf("ended session bookkeeping left after the sweep: %q", kv[0])
		}
	}
	// The session expiry sweeps by the entry's time and ends sessions in
	// the same entry: a session ended by it is not swept with it.
	idle, _ := f.IdleSessions(b+2*long+1, 10)
	if len(idle) != 2 {
		t.Fatalf("idle = %+v", idle)
	}
	step(expireSessionsCmd(b+2*long+1, idle...))
	if n := endedCount(t, f); n != 2 {
		t.Fatalf("ended = %d after expiring a and b, want 2", n)
	}
}

// TestPrepareRestoreKeepsEndedSessions: a restore from a checkpoint drops
// the sessions but keeps the records of the ended ones, which still
// refuse a late open, and ends the session current at the checkpoint,
// whose late open is refused too
// (TestALateOpenOfASessionCurrentAtTheCheckpointIsRefusedAfterARestore).
func TestPrepareRestoreKeepsEndedSessions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	f, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	apply(t, f, 1, openSessionCmd("c", 7, 0))
	apply(t, f, 2, openSessionCmd("c", 8, 0))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := PrepareRestore(dir, RestoredFrom{Epoch: 1, RaftIndex: 2, ClusterID: "old"}, 1); err != nil {
		t.Fatal(err)
	}
	f, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if c, err := f.Counts(); err != nil || c.Sessions != 0 || c.EndedSessions != 2 {
		t.Fatalf("counts after the restore = %+v, %v; want no session and 2 ended", c, err)
	}
	lateOpenRefused(t, apply(t, f, 1, openSessionCmd("c", 7, 0)))
	lateOpenRefused(t, apply(t, f, 2, openSessionCmd("c", 8, 0)))
	if res := apply(t, f, 3, openSessionCmd("c", 9, 0)); res.Err != nil || res.Session.ID != 9 {
		t.Fatalf("open of a new session after the restore: %+v", res)
	}
}

// TestASweepDeletesAtMostItsLimitOfEndedSessionsOldestFirst: one sweep
// deletes a bounded number of records, in the order of their expiry.
func TestASweepDeletesAtMostItsLimitOfEndedSessionsOldestFirst(t *testing.T) {
	f := openFSM(t)
	t0 := int64(1e18)
	// Sessions 1, 2 and 3 of "c" end one minute apart.
	for i := range uint64(4) {
		apply(t, f, i+1, openSessionCmd("c", i+1, t0+int64(i)*int64(time.Minute)))
	}
	if n := endedCount(t, f); n != 3 {
		t.Fatalf("ended = %d, want 3", n)
	}
	b := f.db.NewIndexedBatch()
	a := applier{b: b, r: b, now: t0 + int64(48*time.Hour), rec: f.records}
	if err := a.sweepEnded(2); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(nil); err != nil {
		t.Fatal(err)
	}
	f.records.commit()
	if n := endedCount(t, f); n != 1 {
		t.Fatalf("ended = %d after a sweep of 2, want 1", n)
	}
	lateOpenRefused(t, apply(t, f, 5, openSessionCmd("c", 3, t0+int64(48*time.Hour))))
	for _, id := range []uint64{1, 2} {
		if res := apply(t, f, 5+id, openSessionCmd("c", 10+id, t0+int64(48*time.Hour))); res.Err != nil {
			t.Fatalf("open: %+v", res)
		}
	}
	if res := apply(t, f, 8, openSessionCmd("c", 1, t0+int64(48*time.Hour))); res.Err != nil {
		t.Fatalf("open of session 1, whose record was swept: %+v", res)
	}
}
