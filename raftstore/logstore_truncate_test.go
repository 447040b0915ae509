package raftstore

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/hashicorp/raft"
)

// TestEveryLogStoreReopensAfterATailTruncation: Raft deletes the tail of
// its log (DeleteRange up to LastIndex) when a leader that was cut off
// rejoins as a follower and the new leader's log disagrees with the
// entries it appended alone. The store must reopen after that, with the
// entries the truncation kept and those written since. raft-wal v0.4.0
// marked the truncated tail segment sealed without writing its index
// block, and the next Open failed with "sealed segment has no index
// block" (raft-wal issue 31, fixed in v0.4.1).
func TestEveryLogStoreReopensAfterATailTruncation(t *testing.T) {
	hlog := hclogAdapter(slog.New(slog.DiscardHandler))
	entries := func(from, to, term uint64) []*raft.Log {
		var logs []*raft.Log
		for i := from; i <= to; i++ {
			logs = append(logs, &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: fmt.Appendf(nil, "%d@%d", i, term)})
		}
		return logs
	}
	for _, kind := range []string{LogStoreBoltDB, LogStoreWAL} {
		for _, tc := range []struct {
			name         string
			rewriteAfter bool // the new leader's entries follow the truncation
		}{
			{"truncated", false},
			{"truncated and rewritten", true},
		} {
			t.Run(kind+" "+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				ls, err := openLogStore(dir, kind, hlog)
				if err != nil {
					t.Fatal(err)
				}
				// Term 1 entries everyone has, then the cut-off leader's own
				// term 2 entries, which the term 3 leader's log replaces.
				if err := ls.StoreLogs(entries(1, 20, 1)); err != nil {
					t.Fatal(err)
				}
				if err := ls.StoreLogs(entries(21, 30, 2)); err != nil {
					t.Fatal(err)
				}
				if err := ls.DeleteRange(21, 30); err != nil {
					t.Fatalf("DeleteRange(21, 30) of 1..30: %v", err)
				}
				wantLast, wantTerm := uint64(20), map[uint64]uint64{20: 1}
				if tc.rewriteAfter {
					if err := ls.StoreLogs(entries(21, 25, 3)); err != nil {
						t.Fatal(err)
					}
					wantLast = 25
					wantTerm[21], wantTerm[25] = 3, 3
				}
				if err := ls.Close(); err != nil {
					t.Fatal(err)
				}

				for round := range 2 { // and once more after a write since the reopen
					ls, err = openLogStore(dir, kind, hlog)
					if err != nil {
						t.Fatalf("reopen %d after a tail truncation: %v", round, err)
					}
					first, err := ls.FirstIndex()
					if err != nil || first != 1 {
						t.Fatalf("reopen %d: FirstIndex = %d, %v; want 1", round, first, err)
					}
					last, err := ls.LastIndex()
					if err != nil || last != wantLast {
						t.Fatalf("reopen %d: LastIndex = %d, %v; want %d", round, last, err, wantLast)
					}
					for i := uint64(1); i <= last; i++ {
						var l raft.Log
						if err := ls.GetLog(i, &l); err != nil {
							t.Fatalf("reopen %d: GetLog(%d): %v", round, i, err)
						}
						if want, ok := wantTerm[i]; ok && l.Term != want {
							t.Fatalf("reopen %d: entry %d has term %d, want %d", round, i, l.Term, want)
						}
						if got, want := string(l.Data), fmt.Sprintf("%d@%d", i, l.Term); l.Index != i || got != want {
							t.Fatalf("reopen %d: GetLog(%d) = index %d data %q, want %q", round, i, l.Index, got, want)
						}
					}
					var l raft.Log
					if err := ls.GetLog(last+1, &l); err == nil {
						t.Fatalf("reopen %d: GetLog(%d) past the last index found entry %d", round, last+1, l.Index)
					}
					if round == 0 {
						next := entries(last+1, last+3, 4)
						if err := ls.StoreLogs(next); err != nil {
							t.Fatalf("append after reopening: %v", err)
						}
						wantLast = last + 3
						wantTerm[wantLast] = 4
					}
					if err := ls.Close(); err != nil {
						t.Fatal(err)
					}
				}
			})
		}
	}
}
