package fsm

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// BenchmarkApplySessionCommit measures applying a one-put commit without
// retry protection, in a session (a lane and a session record read and
// written), and as a format version 2 commit with its retry record; the
// encoding (and the payload hash) is timed too.
func BenchmarkApplySessionCommit(b *testing.B) {
	for _, mode := range []string{"plain", "session", "legacy"} {
		b.Run(mode, func(b *testing.B) {
			f, err := Open(b.TempDir()+"/state", nil)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			idx := uint64(1)
			if mode == "session" {
				f.Apply(rlog(idx, command.Encode(nil, openSessionCmd("c", 7, 0))))
				idx++
			}
			val := make([]byte, 100)
			b.ResetTimer()
			for i := range b.N {
				cmd := &command.Command{Type: command.TypeCommit, Now: 1e18, Commit: &command.Commit{ClientID: "c",
					Mutations: []command.Mutation{{Op: command.OpPut, Namespace: "ns", Key: []byte(fmt.Sprint("k", i)), Value: val}}}}
				var data []byte
				switch mode {
				case "session":
					inSession(cmd, 7, 0, uint64(i+1))
					data = command.Encode(nil, cmd)
				case "legacy":
					cmd.Commit.Seq = uint64(i + 1)
					data = command.EncodeVersion2(cmd)
				default:
					data = command.Encode(nil, cmd)
				}
				f.Apply(rlog(idx, data))
				idx++
			}
		})
	}
}

func rlog(i uint64, d []byte) *raft.Log { return &raft.Log{Index: i, Type: raft.LogCommand, Data: d} }

// BenchmarkApplySessionCommitBatch measures applying one TypeCommitBatch
// entry of 32 one-put commits of one client's session on 32 lanes, as the
// SDK sends 64 goroutines' commits coalesced (BENCHMARKS.md, "64
// single-commit clients"): each commit checks and records its session and
// lane. Each entry has a later time than the one before, as the leader's
// clock gives them, so that each moves the session's last activity.
func BenchmarkApplySessionCommitBatch(b *testing.B) {
	const commits = 32
	f, err := Open(b.TempDir()+"/state", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	f.Apply(rlog(1, command.Encode(nil, openSessionCmd("c", 7, 0))))
	val := make([]byte, 100)
	var data []byte
	b.ResetTimer()
	for i := range b.N {
		batch := &command.Command{Type: command.TypeCommitBatch, Now: 1e18 + int64(i), Batch: make([]*command.Commit, commits)}
		for l := range commits {
			cmd := &command.Command{Type: command.TypeCommit, Commit: &command.Commit{ClientID: "c",
				Mutations: []command.Mutation{{Op: command.OpPut, Namespace: "ns", Key: fmt.Appendf(nil, "k%d-%d", i, l), Value: val}}}}
			batch.Batch[l] = inSession(cmd, 7, uint32(l), uint64(i+1)).Commit
		}
		data = command.Encode(data[:0], batch)
		if r := f.Apply(rlog(uint64(i+2), data)).(*Result); r.Err != nil || r.Batch[commits-1].Err != nil {
			b.Fatal(r.Err, r.Batch[commits-1].Err)
		}
	}
}

// BenchmarkIdleSessionsBetweenCommits times the leader's look for idle
// sessions (IdleSessions, every --expiry-interval) after every 100
// commits (untimed) of four clients, each commit a millisecond after the
// one before, so that each rewrites its session's record. The look stepped
// with Next over every version of those records still in the memtable:
// after 200 rounds it averaged 1.0 ms, after 2,000 19.7 ms; with
// NextPrefix 27 and 70 µs (a memtable of 200,000 commits). Run it with
// -benchtime 2000x.
func BenchmarkIdleSessionsBetweenCommits(b *testing.B) {
	f := openFSM(b)
	apply := benchApply(b, f)
	const clients = 4
	now := int64(1e18)
	for c := range clients {
		apply(openSessionCmd(fmt.Sprint("c", c), uint64(c+1), now))
	}
	seq := make([]uint64, clients)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		for i := range 100 {
			c := i % clients
			now += 1e6
			seq[c]++
			cmd := putCmd(fmt.Sprint("c", c), fmt.Sprint("k", i), "v")
			cmd.Now = now
			apply(inSession(cmd, uint64(c+1), 0, seq[c]))
		}
		b.StartTimer()
		idle, err := f.IdleSessions(now, 1000)
		if err != nil || len(idle) != 0 {
			b.Fatalf("idle sessions %v, %v; want none", idle, err)
		}
	}
}

// BenchmarkEndedSessionSweeps times a sweep of ended sessions' records
// (EndedSessionsDue, then a TypeExpireSessions entry) after every ten
// sessions replaced (untimed), the sweep at the time their records
// expire. The sweeps scanned the ended sessions' index from its first
// key, over every key the sweeps before deleted; they start at its floor
// now (expiryFloor). Run it with -benchtime 3000x: ns/op must stay that
// of a short run.
func BenchmarkEndedSessionSweeps(b *testing.B) {
	f := openFSM(b)
	apply := benchApply(b, f)
	const clients = 10
	now := int64(1e18)
	for c := range clients {
		apply(openSessionCmd(fmt.Sprint("c", c), 1, now))
	}
	b.ResetTimer()
	for r := range b.N {
		b.StopTimer()
		now += int64(25 * time.Hour)
		for c := range clients {
			apply(openSessionCmd(fmt.Sprint("c", c), uint64(r+2), now)) // ends session r+1
		}
		sweep := now + int64(EndedSessionRetention)
		b.StartTimer()
		if due, err := f.EndedSessionsDue(sweep); err != nil || !due {
			b.Fatalf("ended sessions due %v, %v; want due", due, err)
		}
		apply(expireSessionsCmd(sweep))
	}
	b.StopTimer()
	if c, err := f.Counts(); err != nil || c.EndedSessions != 0 {
		b.Fatalf("counts %+v, %v: want every ended session swept", c, err)
	}
}
