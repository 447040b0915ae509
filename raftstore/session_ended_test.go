package raftstore

import (
	"context"
	"testing"
	"time"

	"github.com/statedhq/stated/raftstore/command"
)

// TestTheExpiryLoopSweepsEndedSessionsWhenNoSessionIsIdle: records of
// ended sessions (fsm, session.go) are swept by TypeExpireSessions
// entries, which the leader proposes when records are due even if no
// session is idle: an entry that lists no session.
func TestTheExpiryLoopSweepsEndedSessionsWhenNoSessionIsIdle(t *testing.T) {
	s := openStore(t, testConfig(t.TempDir()))
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Sessions ended two days ago, by the leader's clock in the log: the
	// entries are written with that time, as a leader then would have.
	past := time.Now().Add(-48 * time.Hour).UnixNano()
	for _, id := range []uint64{1, 2} {
		cmd := &command.Command{Type: command.TypeOpenSession, Now: past,
			Session: &command.Session{ClientID: "c", ID: id, IdleTimeout: int64(time.Minute)}}
		if err := s.raft.Apply(command.Encode(nil, cmd), 5*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	// Session 2 is current and, open two days ago, idle: the loop's first
	// round expires it (its record starts its retention now) and sweeps
	// session 1's, due since a day.
	if n, err := s.ExpireSessions(ctx, 100); err != nil || n != 1 {
		t.Fatalf("expire sessions: %d, %v; want 1 session listed", n, err)
	}
	c, err := s.fsm.Counts()
	if err != nil || c.Sessions != 0 || c.EndedSessions != 1 {
		t.Fatalf("counts = %+v, %v; want no session and session 2's record", c, err)
	}
	// Nothing is due now: no entry.
	before := s.fsm.AppliedIndex()
	if n, err := s.ExpireSessions(ctx, 100); err != nil || n != 0 || s.fsm.AppliedIndex() != before {
		t.Fatalf("expire sessions with nothing due: %d, %v, applied %d -> %d", n, err, before, s.fsm.AppliedIndex())
	}
	// A record due with no session idle: an entry with no session listed.
	cmd := &command.Command{Type: command.TypeOpenSession, Now: past,
		Session: &command.Session{ClientID: "d", ID: 1, IdleTimeout: int64(time.Minute)}}
	if err := s.raft.Apply(command.Encode(nil, cmd), 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	cmd.Session = &command.Session{ClientID: "d", ID: 2, IdleTimeout: int64(time.Hour * 1000)}
	if err := s.raft.Apply(command.Encode(nil, cmd), 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if due, err := s.fsm.EndedSessionsDue(time.Now().UnixNano()); err != nil || !due {
		t.Fatalf("ended sessions due: %v, %v", due, err)
	}
	before = s.fsm.AppliedIndex()
	if n, err := s.ExpireSessions(ctx, 100); err != nil || n != 0 {
		t.Fatalf("expire sessions: %d, %v; want none listed", n, err)
	}
	if s.fsm.AppliedIndex() != before+1 {
		t.Fatalf("applied %d -> %d: want one entry", before, s.fsm.AppliedIndex())
	}
	c, err = s.fsm.Counts()
	if err != nil || c.Sessions != 1 || c.EndedSessions != 1 {
		t.Fatalf("counts = %+v, %v; want d's session and c's record, d's first swept", c, err)
	}
}
