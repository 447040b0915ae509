package test

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestChaosScheduleReplaysWhateverTheOtherDrawsAre checks what
// STATED_TEST_SEED promises (docs/TESTING.md) without starting a
// process: for a seed, the chaos schedule makes the same decisions (fault
// kinds, targets, holds, gaps, the node restored) whatever the draws
// whose number depends on timing ask of the run's other generator in
// between: processors that exited by themselves and are restarted
// (--max-poll-records), and faults aimed at the leader when none leads.
func TestChaosScheduleReplaysWhateverTheOtherDrawsAre(t *testing.T) {
	t.Parallel()
	const nodes, procs, faults = 3, 3, 200
	type decisions struct {
		faults             []faultPlan
		lossGap, resumeGap time.Duration
		restored           int
		otherAfter         uint64 // the other generator's next draw
	}
	// replay makes a run's schedule decisions for seed; before fault n it
	// restarts busy(n) processors that exited by themselves, and leader(n)
	// is the node that leads when fault n aims at the leader (-1: none).
	replay := func(seed uint64, partitions bool, busy, leader func(n int) int) decisions {
		sched := newChaosSchedule(seed, partitions)
		other := rand.New(rand.NewPCG(seed, 2))
		ck := &chaosKafka{r: other}
		var d decisions
		for n := range faults {
			for range busy(n) {
				ck.maxPollRecords()
			}
			p := sched.next(nodes, procs)
			if p.kind != faultKillProcessor {
				// The node depends on timing; the schedule's decision,
				// p, must not.
				pickTarget(p, leader(n), nodes, other)
			}
			d.faults = append(d.faults, p)
		}
		d.lossGap = sched.between(200*time.Millisecond, 1500*time.Millisecond)
		d.restored = sched.intN(nodes)
		d.resumeGap = sched.between(time.Second, 3*time.Second)
		d.otherAfter = other.Uint64()
		return d
	}
	quiet := func(int) int { return 0 }
	leads := func(int) int { return 1 }
	busy := func(n int) int { return n % 4 }
	noLeaderOften := func(n int) int {
		if n%3 == 0 {
			return -1
		}
		return 2
	}
	for _, seed := range []uint64{1, 1796015243784396688, uint64(time.Now().UnixNano())} {
		for _, partitions := range []bool{false, true} {
			want := replay(seed, partitions, quiet, leads)
			got := replay(seed, partitions, busy, noLeaderOften)
			if !slices.Equal(got.faults, want.faults) || got.lossGap != want.lossGap || got.restored != want.restored || got.resumeGap != want.resumeGap {
				for n := range min(len(got.faults), len(want.faults)) {
					if got.faults[n] != want.faults[n] {
						t.Errorf("seed %d, partitions %v: fault %d is %+v with other draws in between, %+v without", seed, partitions, n, got.faults[n], want.faults[n])
						break
					}
				}
				t.Fatalf("seed %d, partitions %v: the schedule's decisions depend on the other generator's draws (loss gap %s/%s, restored %d/%d, resume gap %s/%s)",
					seed, partitions, got.lossGap, want.lossGap, got.restored, want.restored, got.resumeGap, want.resumeGap)
			}
			if got.otherAfter == want.otherAfter {
				t.Fatalf("seed %d: the other generator was not drawn from differently: the test checks nothing", seed)
			}
			// Each kind once first, as the summary promises.
			kinds := map[string]bool{}
			first := 3
			if partitions {
				first = 4
			}
			for _, p := range want.faults[:first] {
				kinds[p.kind] = true
			}
			if len(kinds) != first {
				t.Errorf("seed %d, partitions %v: the first %d faults are not one of each kind: %+v", seed, partitions, first, want.faults[:first])
			}
		}
	}
}
