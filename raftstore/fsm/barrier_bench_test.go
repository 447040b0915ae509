package fsm

import (
	"testing"

	"github.com/statedhq/stated/raftstore/command"
)

// BenchmarkChangelogBarrierAfterOffsetCommits times a changelog barrier's
// apply, which reads every offset in the apply loop (changelogCut), after
// every 1,000 commits (untimed) that each move one of a group's four
// offsets, as a Kafka processor's commits do between two barriers of a
// 1 s interval. The read stepped with Next over every version of those
// offsets still in the memtable: after 20 barriers it averaged 0.83 ms,
// after 200 13.1 ms; with NextPrefix 52 and 143 µs, the rest of the
// barrier's apply. Run it with -benchtime 200x.
func BenchmarkChangelogBarrierAfterOffsetCommits(b *testing.B) {
	f := openFSM(b)
	apply := benchApply(b, f)
	var off int64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		for range 1000 {
			off++
			apply(&command.Command{Type: command.TypeCommit, Now: 1, Commit: &command.Commit{Offsets: []command.Offset{
				{Group: "g", Topic: "t", Partition: int32(off % 4), Offset: off}}}})
		}
		b.StartTimer()
		cp := apply(&command.Command{Type: command.TypeCheckpoint, Now: 1, Changelog: true}).Checkpoint
		if cp == nil || cp.Err != nil || cp.Info == nil || len(cp.Info.Offsets) != 4 {
			b.Fatalf("changelog barrier %+v: want a cut with 4 offsets", cp)
		}
	}
}
