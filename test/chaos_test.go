package test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	stated "github.com/statedhq/stated/sdk/go"
)

// chaosConfig sizes a chaos run. The short version runs in `go test
// ./...`; STATED_CHAOS_DURATION=10m runs the long one (docs/TESTING.md).
type chaosConfig struct {
	long     bool
	duration time.Duration // of the phase of random faults
	// progressBound is how soon after the last fault every load worker
	// must have a commit acknowledged and the processors must have
	// counted every record produced.
	progressBound time.Duration
	workers       int // load workers per phase
	processors    int
	rate          int // records produced per second
}

func chaosConfigFromEnv(t *testing.T) chaosConfig {
	t.Helper()
	cfg := chaosConfig{duration: 12 * time.Second, progressBound: 45 * time.Second, workers: 4, processors: 2, rate: 1000}
	if s := os.Getenv("STATED_CHAOS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 10*time.Second {
			t.Fatalf("STATED_CHAOS_DURATION=%q: want a duration of at least 10s (e.g. 10m): %v", s, err)
		}
		cfg.long, cfg.duration, cfg.processors = true, d, 3
	}
	return cfg
}

// Fault kinds.
const (
	faultKillNode      = "SIGKILL of a stated node"
	faultKillProcessor = "SIGKILL of a processor"
	faultPartition     = "partition of a stated node"
	faultWipe          = "disk of a stated node wiped"
	faultTotalLoss     = "total loss restored from the bucket"
)

// chaosRun is one run of the suite and its summary.
type chaosRun struct {
	t    *testing.T
	ctx  context.Context
	cfg  chaosConfig
	seed uint64
	// sched makes the schedule's decisions; only it draws from its
	// generator. other serves the draws whose number depends on timing
	// (a processor's --max-poll-records, drawn at every start, also of
	// one that exited by itself; the node of a fault that targets the
	// leader when none leads). load seeds the load workers. All three
	// are derived from seed.
	sched *chaosSchedule
	other *rand.Rand
	load  *rand.Rand
	cl    *chaosCluster
	ck    *chaosKafka
	loads []*loadGen // every phase's load, for the summary

	faults  map[string]int
	skipped []string
	checks  []string
	start   time.Time
}

func (run *chaosRun) fault(kind, format string, args ...any) {
	run.faults[kind]++
	run.t.Logf("%6.1fs fault: %s", time.Since(run.start).Seconds(), fmt.Sprintf(format, args...))
}

func (run *chaosRun) check(format string, args ...any) {
	run.checks = append(run.checks, fmt.Sprintf(format, args...))
}

// idle lets d pass with the load running, restarting crashed processors.
func (run *chaosRun) idle(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end) && run.ctx.Err() == nil; {
		run.ck.supervise()
		time.Sleep(min(50*time.Millisecond, time.Until(end)))
	}
}

// chaosSchedule makes the schedule's decisions: each fault's kind,
// target, hold and the quiet gap after it, then the gap before the total
// loss, the node restored and the wait after the restore. Nothing else
// draws from its generator, and how many draws each decision takes
// depends on the decisions alone, never on what the processes do, so
// that a seed replays the same sequence of decisions (STATED_TEST_SEED,
// docs/TESTING.md; TestChaosScheduleReplaysWhateverTheOtherDrawsAre).
// Draws whose number depends on timing go to the run's other generator.
type chaosSchedule struct {
	r        *rand.Rand
	first    []string // each kind once, in random order
	weighted []string // kinds by weight, for the draws after the first round
	n        int      // faults planned so far
}

// faultPlan is one fault as the schedule decided it.
type faultPlan struct {
	kind string
	// leader: a node fault targets the node that leads at fault time
	// (pickTarget). Otherwise it targets node; a processor fault, the
	// processor in slot node.
	leader      bool
	node        int
	hold        time.Duration // how long the fault lasts (not for a wipe)
	removeFirst bool          // a wipe removes the node from the cluster first
	gap         time.Duration // the quiet time after the fault
}

func newChaosSchedule(seed uint64, partitions bool) *chaosSchedule {
	kinds := []string{faultKillNode, faultKillProcessor, faultWipe}
	weighted := []string{faultKillNode, faultKillNode, faultKillNode, faultKillProcessor, faultKillProcessor, faultKillProcessor, faultWipe}
	if partitions {
		kinds = append(kinds, faultPartition)
		weighted = append(weighted, faultPartition, faultPartition)
	}
	s := &chaosSchedule{r: rand.New(rand.NewPCG(seed, 1)), first: kinds, weighted: weighted}
	s.r.Shuffle(len(s.first), func(i, j int) { s.first[i], s.first[j] = s.first[j], s.first[i] })
	return s
}

// firstRound is the number of faults that apply each kind once.
func (s *chaosSchedule) firstRound() int { return len(s.first) }

func (s *chaosSchedule) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(s.r.Int64N(int64(hi-lo)+1))
}

func (s *chaosSchedule) intN(n int) int { return s.r.IntN(n) }

// next plans the next fault among nodes stated nodes and procs processor
// slots: first each kind once, then kinds drawn by weight. A node fault
// targets the leader half of the time, else any node.
func (s *chaosSchedule) next(nodes, procs int) faultPlan {
	p := faultPlan{}
	if s.n < len(s.first) {
		p.kind = s.first[s.n]
	} else {
		p.kind = s.weighted[s.r.IntN(len(s.weighted))]
	}
	s.n++
	target := func() {
		if p.leader = s.r.IntN(2) == 0; !p.leader {
			p.node = s.r.IntN(nodes)
		}
	}
	switch p.kind {
	case faultKillNode:
		target()
		p.hold = s.between(200*time.Millisecond, 2*time.Second)
	case faultKillProcessor:
		p.node = s.r.IntN(procs)
		p.hold = s.between(0, 2*time.Second)
	case faultPartition:
		target()
		p.hold = s.between(time.Second, 4*time.Second)
	case faultWipe:
		target()
		p.removeFirst = s.r.IntN(2) == 0
	}
	p.gap = s.between(200*time.Millisecond, 1500*time.Millisecond)
	return p
}

// pickTarget resolves p's node target among nodes nodes, leader being
// the node that leads now or -1. When p targets the leader and none
// leads (which depends on timing) it draws a node from other, not from
// the schedule's generator. how describes the choice for the fault line.
func pickTarget(p faultPlan, leader, nodes int, other *rand.Rand) (i int, how string) {
	switch {
	case !p.leader:
		return p.node, ""
	case leader >= 0:
		return leader, " (leader)"
	default:
		return other.IntN(nodes), " (no leader to target: drawn at random)"
	}
}

// target returns the node p targets, and its id as the fault line says it.
func (run *chaosRun) target(p faultPlan) (int, string) {
	leader := -1
	if p.leader {
		leader = run.cl.leader(run.ctx)
	}
	i, how := pickTarget(p, leader, len(run.cl.nodes), run.other)
	return i, run.cl.nodes[i].id + how
}

// inject applies one fault, holds it while the load runs, and heals it.
func (run *chaosRun) inject(p faultPlan) {
	t := run.t
	kind := p.kind
	switch kind {
	case faultKillNode:
		i, who := run.target(p)
		run.cl.nodes[i].kill()
		run.idle(p.hold)
		run.cl.restart(run.ctx, i)
		run.fault(kind, "SIGKILL stated %s, restarted after %s", who, p.hold.Round(time.Millisecond))
	case faultKillProcessor:
		s := p.node
		id := run.ck.procs[s].id
		run.ck.kill(s)
		run.idle(p.hold)
		run.ck.start(s)
		run.fault(kind, "SIGKILL processor %s, a new one started after %s", id, p.hold.Round(time.Millisecond))
	case faultPartition:
		i, who := run.target(p)
		run.cl.partition(i)
		run.idle(p.hold)
		run.cl.heal()
		run.fault(kind, "partition of stated %s (its cable unplugged) for %s", who, p.hold.Round(time.Millisecond))
	case faultWipe:
		i, who := run.target(p)
		how := "rejoined empty under its old id"
		if p.removeFirst {
			how = "removed from the cluster, rejoined empty"
		}
		began := time.Now()
		run.cl.wipe(run.ctx, i, p.removeFirst)
		run.fault(kind, "stated %s killed, its data dir deleted, %s and serving after %s", who, how, time.Since(began).Round(time.Millisecond))
	default:
		t.Fatalf("unknown fault %q", kind)
	}
}

// schedule runs random faults for the configured duration: first each
// kind once, in random order, then kinds drawn at random, with quiet
// gaps between them. It is bounded in count as well as time.
func (run *chaosRun) schedule() {
	began := time.Now()
	maxFaults := int(run.cfg.duration/(500*time.Millisecond)) + run.sched.firstRound()
	for n := 0; n < maxFaults && run.ctx.Err() == nil; n++ {
		if n >= run.sched.firstRound() && time.Since(began) >= run.cfg.duration {
			break
		}
		p := run.sched.next(len(run.cl.nodes), len(run.ck.procs))
		run.inject(p)
		run.idle(p.gap)
	}
}

// awaitLoad waits until every worker of g has a commit acknowledged since
// the last fault; past the bound it fails with a verdict (loadStalled).
func (run *chaosRun) awaitLoad(g *loadGen, since time.Time) {
	for !g.ackedSince(since) {
		if time.Since(since) > run.cfg.progressBound {
			run.loadStalled(fmt.Sprintf("progress did not resume: a load worker had no commit acknowledged within %s of the last fault", run.cfg.progressBound),
				g.notAckedSince(since))
		}
		run.idle(20 * time.Millisecond)
	}
}

// halt stops g's workers after their next acknowledged commit.
func (run *chaosRun) halt(g *loadGen) {
	if stuck := g.halt(run.cfg.progressBound); len(stuck) > 0 {
		run.loadStalled(fmt.Sprintf("load workers got no commit acknowledged within %s while stopping", run.cfg.progressBound), stuck)
	}
}

// loadStalled fails the test for the load workers that got nothing
// acknowledged; stalled says of each what loadWorker.describe says (when
// it was last acknowledged, its last errors since). The verdict says stated is stuck only when no
// node says it leads or an empty commit fails through every node;
// otherwise it is the workers' commits that fail while stated commits
// others'.
func (run *chaosRun) loadStalled(headline string, stalled []string) {
	ctx := context.Background()
	nodes, leader := run.cl.statusLine(ctx)
	var probes, through []string
	for _, n := range run.cl.nodes {
		err := probeCommit(ctx, n)
		if err == nil {
			through = append(through, n.id)
			probes = append(probes, n.id+": committed")
		} else {
			probes = append(probes, fmt.Sprintf("%s: %v", n.id, err))
		}
	}
	verdict := ""
	if !leader || len(through) == 0 {
		verdict = fmt.Sprintf("VERDICT: stated is stuck: leader=%v, probe commits succeed through %d of %d nodes", leader, len(through), len(run.cl.nodes))
	} else {
		verdict = fmt.Sprintf("VERDICT: the load workers' commits fail while stated commits others' (a node leads; probe commits through %s succeed): see each worker's errors", strings.Join(through, ", "))
	}
	run.t.Fatalf("%s\n%s\nload workers with nothing acknowledged:\n  %s\nstated nodes: %s\nprobe commits: %s",
		headline, verdict, strings.Join(stalled, "\n  "), nodes, strings.Join(probes, "; "))
}

func (run *chaosRun) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "chaos summary: seed %d (STATED_TEST_SEED=%d replays the schedule), %s, %s of faults, %s in all\n",
		run.seed, run.seed, map[bool]string{true: "long version", false: "short version"}[run.cfg.long],
		run.cfg.duration, time.Since(run.start).Round(time.Second))
	var kinds []string
	total := 0
	for k, n := range run.faults {
		kinds = append(kinds, fmt.Sprintf("%s: %d", k, n))
		total += n
	}
	sort.Strings(kinds)
	fmt.Fprintf(&b, "faults (%d): %s\n", total, strings.Join(kinds, ", "))
	for _, s := range run.skipped {
		fmt.Fprintf(&b, "skipped: %s\n", s)
	}
	// Whether the run passed or failed, and however far it got.
	if len(run.loads) > 0 {
		kinds, _ := errSummary(run.loads)
		fmt.Fprintf(&b, "load commits not acknowledged, by kind: %s\n", kinds)
	}
	if run.ck != nil {
		if crashes := run.ck.crashSummary(); len(crashes) > 0 {
			fmt.Fprintf(&b, "processors that exited by themselves and were restarted (%d):\n  %s\n", len(crashes), strings.Join(crashes, "\n  "))
		}
	}
	for _, c := range run.checks {
		fmt.Fprintf(&b, "check passed: %s\n", c)
	}
	return b.String()
}

// TestChaosLosesNoAcknowledgedCommitAndCountsEveryRecordOnce runs three
// `stated run` processes, load workers committing through the SDK and
// examples/counter processes counting a Kafka topic (kfake in the test
// process) while a seeded random schedule SIGKILLs and restarts stated
// nodes and processors, partitions a node (as root, in network
// namespaces), wipes a node's disk and lets it rejoin, and finally loses
// every node and restores the cluster from the checkpoint bucket with
// `stated restore`. It checks that every acknowledged commit is present
// and every commit was applied at most once (exactly, see checkLoad),
// that every record's count is exact after the restore and the replay
// from Kafka, and that progress resumed within a bound after the last
// fault, saying otherwise whether stated or the broker is stuck.
//
// The short version takes well under a minute; STATED_CHAOS_DURATION
// runs the long one (docs/TESTING.md).
func TestChaosLosesNoAcknowledgedCommitAndCountsEveryRecordOnce(t *testing.T) {
	t.Parallel()
	cfg := chaosConfigFromEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.duration+5*time.Minute)
	defer cancel()
	seed := chaosSeed(t)
	run := &chaosRun{t: t, ctx: ctx, cfg: cfg, seed: seed, faults: map[string]int{}, start: time.Now(),
		other: rand.New(rand.NewPCG(seed, 2)), load: rand.New(rand.NewPCG(seed, 3))}
	statedBinary(t)
	counterBinary(t)
	run.start = time.Now() // after the builds
	t.Cleanup(func() { t.Logf("%s", run.summary()) })

	partitions := true
	switch _, lookErr := exec.LookPath("ip"); {
	case os.Geteuid() != 0:
		partitions = false
		run.skipped = append(run.skipped, faultPartition+": network namespaces need root; the nodes share 127.0.0.1")
	case os.Getenv("STATED_CHAOS_NO_NETNS") != "":
		partitions = false
		run.skipped = append(run.skipped, faultPartition+": STATED_CHAOS_NO_NETNS is set; the nodes share 127.0.0.1")
	case lookErr != nil:
		partitions = false
		run.skipped = append(run.skipped, faultPartition+": the ip command (iproute2) is not installed")
	}
	for _, s := range run.skipped {
		t.Logf("skipped: %s", s)
	}
	run.sched = newChaosSchedule(seed, partitions)
	run.cl = newChaosCluster(ctx, t, partitions)
	run.ck = newChaosKafka(t, run.cl, run.other, cfg.processors)
	run.ck.produce(ctx, cfg.rate)
	run.ck.startAll()
	load1 := run.startLoad(1)

	// Phase 1: random faults, then every acknowledged commit is checked.
	run.schedule()
	healed := time.Now()
	run.awaitLoad(load1, healed)
	run.halt(load1)
	mon, err := stated.Dial(ctx, run.cl.sockets(0))
	if err != nil {
		t.Fatal(err)
	}
	tl := checkLoad(ctx, t, run.cl, mon, []*loadGen{load1}, nil)
	mon.Close()
	if t.Failed() {
		t.FailNow()
	}
	run.check("after %d faults every acknowledged commit is present and every commit applied at most once: %s", sum(run.faults), tl)
	checkReplicas(ctx, t, run.cl, []*loadGen{load1}, tl)
	if !t.Failed() {
		run.check("the three replicas hold the same load state (%d markers)", tl.markers)
	}

	// Phase 2: load until a checkpoint completes during it and a little
	// after, then every node is lost at once.
	before := run.cl.latestCheckpoint(ctx, 0, time.Minute)
	load2 := run.startLoad(2)
	run.cl.latestCheckpoint(ctx, before.Epoch, time.Minute)
	run.idle(run.sched.between(200*time.Millisecond, 1500*time.Millisecond))
	run.ck.killAll()
	run.cl.killAll()
	lost := time.Now()
	load2.abandon() // the nodes are dead: nothing in flight can land anywhere
	m := run.cl.latestCheckpoint(ctx, 0, time.Second)
	ri := run.sched.intN(len(run.cl.nodes))
	out := run.cl.restore(ctx, m, ri)
	healed = time.Now()
	run.fault(faultTotalLoss, "every node SIGKILLed and its data dir deleted; %s restored checkpoint %d (Raft index %d, %s old at the loss): %s",
		run.cl.nodes[ri].id, m.Epoch, m.RaftIndex, lost.Sub(m.CreatedAt).Round(time.Millisecond), restoredLine(out))

	// Phase 3: processing resumes on the restored cluster.
	run.ck.startAll()
	load3 := run.startLoad(3)
	run.awaitLoad(load3, healed)
	run.idle(run.sched.between(time.Second, 3*time.Second))
	run.ck.finishProducing()
	produced := run.ck.k.producedRecords()
	mon, err = stated.Dial(ctx, run.cl.sockets(1))
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	run.ck.waitDrained(ctx, mon, time.Until(healed.Add(run.cfg.progressBound)))
	run.check("processing resumed after the last fault: every one of %d records counted %s after the restore (bound %s)",
		produced, time.Since(healed).Round(time.Millisecond), cfg.progressBound)
	run.halt(load3)
	all := []*loadGen{load1, load2, load3}
	tl = checkLoad(ctx, t, run.cl, mon, all, map[int]uint64{1: m.RaftIndex, 2: m.RaftIndex})
	if !t.Failed() {
		run.check("after the restore every acknowledged commit up to the checkpoint and since the restore is present, none after the checkpoint survived, each applied at most once: %s", tl)
		checkReplicas(ctx, t, run.cl, []*loadGen{load3}, tl)
		if !t.Failed() {
			run.check("the three replicas of the restored cluster hold the same load state (%d markers)", tl.markers)
		}
	}
	run.ck.k.checkCounts(ctx, t, mon, chaosCounts)
	if !t.Failed() {
		run.check("every key's count is exact: %d records, each counted once (the checkpoint's counts plus Kafka's replay from its offsets)", produced)
	}

	// The summary lists the kinds of the errors and the processors that
	// exited by themselves, passed or failed.
	if _, refused := errSummary([]*loadGen{load1, load2, load3}); len(refused) > 0 {
		t.Errorf("stated refused load commits that no fault justifies:\n  %s", strings.Join(refused, "\n  "))
	}
}

// startLoad starts the load of phase, its workers seeded from run.load,
// and keeps it for the summary.
func (run *chaosRun) startLoad(phase int) *loadGen {
	run.t.Helper()
	g := startLoad(run.ctx, run.t, run.cl, run.load, phase, run.cfg.workers)
	run.loads = append(run.loads, g)
	return g
}

// restoredLine is the line of `stated restore`'s output that says what
// it restored.
func restoredLine(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "restored checkpoint") {
			return l
		}
	}
	return strings.TrimSpace(out)
}

// chaosSeed returns the run's seed: STATED_TEST_SEED when set (as for
// testRand), else the clock. The run's generators are derived from it
// (chaosRun).
func chaosSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("STATED_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("STATED_TEST_SEED=%q: want an unsigned integer: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (STATED_TEST_SEED=%d replays the schedule's choices)", seed, seed)
	return seed
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
