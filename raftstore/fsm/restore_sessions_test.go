package fsm

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/statedhq/stated/raftstore/command"
)

// TestALateOpenOfASessionCurrentAtTheCheckpointIsRefusedAfterARestore (a
// review's reproduction): session 777 opens and its commit (lane 0,
// sequence 1) applies, its answer lost; the state is checkpointed with the
// session current and restored (PrepareRestore). A late attempt of the
// session's open, then the retry of the commit: the commit is in the
// restored state, so the retry must not apply again. Before, PrepareRestore
// dropped the session without an ended record, so the late open opened it
// afresh with no lanes and the retry applied a second time (counter 2).
func TestALateOpenOfASessionCurrentAtTheCheckpointIsRefusedAfterARestore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	f, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
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
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	at := time.Unix(0, t0+int64(time.Minute))
	if err := PrepareRestore(dir, RestoredFrom{Epoch: 1, RaftIndex: 2, ClusterID: "old", At: at, Took: time.Second}, 1); err != nil {
		t.Fatal(err)
	}
	f, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	late := apply(t, f, 1, openSessionCmd("reopen-raw", 777, t0+int64(2*time.Minute)))
	retried := apply(t, f, 2, commit(t0+int64(3*time.Minute)))
	if got := counter(t, f); got != 1 {
		t.Fatalf("counter = %d, want 1: after the restore, a late open of the session current at the checkpoint (%+v) let the retry of its checkpointed commit apply again (%+v)",
			got, late, retried)
	}
	lateOpenRefused(t, late)
	var ee *EndedSessionError
	if !errors.As(late.Err, &ee) || ee.ClientID != "reopen-raw" || ee.SessionID != 777 || ee.Current != 0 {
		t.Fatalf("late open refused with %v, want an *EndedSessionError of session 777 with no current session", late.Err)
	}
	if msg := late.Err.Error(); !strings.Contains(msg, "dropped by a restore") || !strings.Contains(msg, fmtTime(at.UnixNano())) {
		t.Errorf("late open refused with %q; want it to say the session may have been dropped by a restore, at the restore's time", msg)
	}
	sessionErr(t, retried, SessionNotOpen)
}

// TestPrepareRestoreEndsTheCheckpointsSessionsAtTheRestoresTime: every
// session of the checkpoint leaves an ended record, ended at the restore's
// time (RestoredFrom.At; a session's last activity when the restore did not
// record it), kept for the retention of its idle timeout from then and
// swept by the first expiry entry past it, after which the session id
// opens again. Preparing the same checkpoint with the same RestoredFrom
// gives the same state, byte for byte.
func TestPrepareRestoreEndsTheCheckpointsSessionsAtTheRestoresTime(t *testing.T) {
	t0 := int64(1e18)
	const idleA, idleB = int64(time.Hour), int64(20 * time.Hour) // retentions 24 h and 40 h
	prepare := func(t *testing.T, from RestoredFrom) *FSM {
		t.Helper()
		dir := filepath.Join(t.TempDir(), "state")
		f, err := Open(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		open := func(index uint64, client string, id uint64, idle, now int64) {
			t.Helper()
			cmd := &command.Command{Type: command.TypeOpenSession, Now: now,
				Session: &command.Session{ClientID: client, ID: id, IdleTimeout: idle}}
			if res := apply(t, f, index, cmd); res.Err != nil {
				t.Fatalf("open %s/%d: %v", client, id, res.Err)
			}
		}
		open(1, "a", 1, idleA, t0)
		open(2, "b", 2, idleB, t0+5)
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if err := PrepareRestore(dir, from, 1); err != nil {
			t.Fatal(err)
		}
		if f, err = Open(dir, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		if c, err := f.Counts(); err != nil || c.Sessions != 0 || c.SessionLanes != 0 || c.EndedSessions != 2 {
			t.Fatalf("counts after the restore = %+v, %v; want no session and 2 ended", c, err)
		}
		return f
	}
	// ended checks the records of sessions a/1 and b/2 against their
	// ends endA and endB.
	ended := func(t *testing.T, f *FSM, endA, endB int64) {
		t.Helper()
		a := applier{r: f.db, rec: f.records}
		for _, w := range []struct {
			client    string
			id        uint64
			end, idle int64
		}{{"a", 1, endA, idleA}, {"b", 2, endB, idleB}} {
			e, ok, err := a.endedSession(w.client, w.id)
			if err != nil || !ok || e.at != w.end || e.expires != w.end+endedRetention(w.idle) {
				t.Fatalf("ended record of %s/%d = %+v, %v, %v; want ended at %d, expiring %s later", w.client, w.id, e, ok, err, w.end, time.Duration(endedRetention(w.idle)))
			}
		}
	}
	t.Run("at the restore's time", func(t *testing.T) {
		at := t0 + int64(72*time.Hour) // a savepoint restored three days after it was taken
		from := RestoredFrom{Epoch: 1, RaftIndex: 2, ClusterID: "old", At: time.Unix(0, at), Took: time.Second}
		f := prepare(t, from)
		ended(t, f, at, at)
		if g := prepare(t, from); !equalDumps(dump(t, f), dump(t, g)) {
			t.Fatal("two states prepared from the same checkpoint and RestoredFrom differ")
		}
		// The first expiry entry comes from the new cluster's leader.
		apply(t, f, 1, expireSessionsCmd(at+int64(time.Minute)))
		lateOpenRefused(t, apply(t, f, 2, openSessionCmd("a", 1, at+int64(time.Minute))))
		apply(t, f, 3, expireSessionsCmd(at+int64(24*time.Hour)))
		if n := endedCount(t, f); n != 1 {
			t.Fatalf("ended = %d after 24 h, want 1 (b's retention is 40 h)", n)
		}
		if res := apply(t, f, 4, openSessionCmd("a", 1, at+int64(24*time.Hour))); res.Err != nil {
			t.Fatalf("open of a/1 after its record was swept: %v", res.Err)
		}
		lateOpenRefused(t, apply(t, f, 5, openSessionCmd("b", 2, at+int64(24*time.Hour))))
		apply(t, f, 6, expireSessionsCmd(at+int64(40*time.Hour)))
		if n := endedCount(t, f); n != 0 {
			t.Fatalf("ended = %d after 40 h, want 0", n)
		}
		for _, kv := range dump(t, f) {
			if kv[0][0] == prefixEndedExpiry {
				t.Fatalf("ended session index key left after the sweep: %q", kv[0])
			}
		}
	})
	t.Run("at the last activity when the restore did not record its time", func(t *testing.T) {
		f := prepare(t, RestoredFrom{Epoch: 1, RaftIndex: 2, ClusterID: "old"})
		ended(t, f, t0, t0+5)
		lateOpenRefused(t, apply(t, f, 1, openSessionCmd("a", 1, t0+int64(time.Minute))))
	})
	t.Run("not before the last activity", func(t *testing.T) {
		// A restore whose clock is behind the checkpoint's log.
		f := prepare(t, RestoredFrom{Epoch: 1, RaftIndex: 2, ClusterID: "old", At: time.Unix(0, t0+3), Took: time.Second})
		ended(t, f, t0+3, t0+5)
	})
}

func equalDumps(a, b [][2][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if string(a[i][0]) != string(b[i][0]) || string(a[i][1]) != string(b[i][1]) {
			return false
		}
	}
	return true
}
