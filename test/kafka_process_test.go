package test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/statedhq/stated/daemon/daemontest"
	stated "github.com/statedhq/stated/sdk/go"
)

// testRand returns a random source and logs its seed; STATED_TEST_SEED
// replays a run.
func testRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("STATED_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("STATED_TEST_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (STATED_TEST_SEED=%d replays it)", seed, seed)
	return rand.New(rand.NewPCG(seed, 1))
}

// counterProc is one examples/counter (or examples/sessionizer) process.
type counterProc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	logs *daemontest.Buffer
	done chan struct{} // closed when the process has exited
	err  error         // cmd.Wait's result, set before done is closed
}

// startCounterProc runs examples/counter with args. The process is killed
// when the test ends, and its output logged if the test failed.
func startCounterProc(t *testing.T, name string, args ...string) *counterProc {
	t.Helper()
	return startProc(t, name, counterBinary(t), args...)
}

// startProc runs the binary bin with args, as startCounterProc does.
func startProc(t *testing.T, name, bin string, args ...string) *counterProc {
	t.Helper()
	p := &counterProc{t: t, name: name, logs: &daemontest.Buffer{}, done: make(chan struct{})}
	p.cmd = daemontest.DieWithParent(exec.Command(bin, args...))
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("%s (%s) output:\n%s", name, strings.Join(args, " "), p.logs)
		}
	})
	return p
}

// exited returns a channel that yields an error once the process exits.
func (p *counterProc) exited() <-chan error {
	errc := make(chan error, 1)
	go func() {
		<-p.done
		errc <- fmt.Errorf("%s exited: %v", p.name, p.err)
	}()
	return errc
}

// signal sends sig and waits, bounded, for the process to exit.
func (p *counterProc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("%s: %v: %v", p.name, sig, err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Fatalf("%s did not exit within 30s of %v", p.name, sig)
	}
}

// committedRecords sums stated's offsets of group over the topic: the
// records committed so far.
func (k *kafkaEnv) committedRecords(ctx context.Context, c *stated.Client, group string) (int64, error) {
	offs, err := c.GetOffsets(ctx, group, stated.WithConsistency(stated.ConsistencyLinearizable))
	if err != nil {
		return 0, err
	}
	var n int64
	for _, o := range offs {
		if o.Topic == k.topic {
			n += o.Offset
		}
	}
	return n, nil
}

func (k *kafkaEnv) producedRecords() int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	var n int64
	for _, end := range k.ends {
		n += end
	}
	return n
}

// waitCommitted polls stated's offsets every few milliseconds until at
// least target records are committed, and returns how many are; it fails
// the test when errc yields or ctx ends first.
func (k *kafkaEnv) waitCommitted(ctx context.Context, t *testing.T, r *rand.Rand, c *stated.Client, group string, target int64, errc <-chan error) int64 {
	t.Helper()
	for {
		n, err := k.committedRecords(ctx, c, group)
		if err != nil && !errors.Is(err, stated.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatal(err)
		}
		if err == nil && n >= target {
			return n
		}
		select {
		case err := <-errc:
			t.Fatalf("processor stopped with %d of %d records committed: %v", n, target, err)
		case <-ctx.Done():
			t.Fatalf("%d of %d records committed: %v", n, target, ctx.Err())
		case <-time.After(time.Duration(1000+r.IntN(4000)) * time.Microsecond):
		}
	}
}

// TestKafkaExactlyOnceAcrossSIGKILLedProcessors runs the counter example as
// a process and kills it with SIGKILL at random points while it consumes,
// several times, each time starting a new one, as a crashed and restarted
// service would be; nothing of the dead process shuts down cleanly (no
// group leave, no claim release, commits cut off anywhere). When the
// topic is drained every key's count is exact.
func TestKafkaExactlyOnceAcrossSIGKILLedProcessors(t *testing.T) {
	t.Parallel()
	// A bound, not a speed check: under the race detector on a loaded
	// 2-core machine the final drain of about 100,000 records once
	// outlasted 2 minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r := testRand(t)
	counterBinary(t) // built before the rounds start
	d := daemontest.Start(t)
	k := newKafka(t, "events", 4)
	// Enough records that every kill lands while the processor is busy.
	k.produce(ctx, t, 150_000, 97)
	c := sdkDial(ctx, t, d.SocketPath())
	argsPolling := func(records int) []string {
		return []string{"-v", "--brokers", strings.Join(k.brokers, ","), "--stated", "unix://" + d.SocketPath(),
			"--group", "g", "--topic", k.topic, "--namespace", "counts", "--session-timeout", "1s",
			"--max-poll-records", strconv.Itoa(records)}
	}
	args := func() []string { return argsPolling(20 + r.IntN(281)) }

	const kills = 5
	committed, err := k.committedRecords(ctx, c, "g")
	if err != nil {
		t.Fatal(err)
	}
	for round := range kills {
		start := time.Now()
		p := startCounterProc(t, fmt.Sprint("counter ", round), args()...)
		// Kill once stated's offsets moved a random distance since the
		// last kill; the offsets are polled at random intervals of a few
		// milliseconds, so the kill lands anywhere in the cycle of poll,
		// handle and commit.
		target := committed + 2000 + int64(r.IntN(14000))
		at := k.waitCommitted(ctx, t, r, c, "g", target, p.exited())
		p.signal(syscall.SIGKILL)
		if done, err := k.drained(ctx, c, "g"); err != nil || done {
			t.Fatalf("round %d: drained=%v err=%v: the kill should land mid-topic", round, done, err)
		}
		prev := committed
		if committed, err = k.committedRecords(ctx, c, "g"); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: SIGKILL after %s with %d records committed (%d this round; %d when stated was last read)",
			round, time.Since(start).Round(time.Millisecond), committed, committed-prev, at)
		if round == 2 {
			// More records while no processor runs.
			k.produce(ctx, t, 5000, 97)
		}
	}

	// The final round only drains what is left (about 100,000 records),
	// in polls of up to 500: each poll is one commit, and with small
	// polls the drain took more than the bound on the loaded race pass,
	// where four packages' tests share the disk's fsyncs (125,000
	// records in polls of 39 did not drain in 3 minutes).
	start := time.Now()
	p := startCounterProc(t, "counter final", argsPolling(500)...)
	k.waitDrained(ctx, t, c, "g", p.exited())
	p.signal(syscall.SIGTERM)
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("final counter: exit code %d after SIGTERM, want 0", code)
	}
	t.Logf("final round drained the remaining %d records in %s", k.producedRecords()-committed, time.Since(start).Round(time.Millisecond))
	k.checkCounts(ctx, t, c, "counts")
}

// TestKafkaExactlyOnceWhileTheStatedLeaderIsKilled runs a processor
// against a three-process stated cluster and kills the stated leader with
// SIGKILL while the processor commits: commits in flight at the kill are
// retried by the SDK (with their sequence numbers) against the new leader,
// and the processor goes on. The killed node is restarted; when the topic
// is drained every key's count is exact.
func TestKafkaExactlyOnceWhileTheStatedLeaderIsKilled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := testRand(t)
	nodes := startCluster(ctx, t, 3)
	k := newKafka(t, "events", 4)
	// Enough records that processing goes on well after the election.
	k.produce(ctx, t, 150_000, 97)
	total := k.producedRecords()

	c, err := stated.Dial(ctx, addrs(nodes))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The test's own reads go through another Client.
	mon, err := stated.Dial(ctx, addrs(nodes))
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()

	cfg := k.countingConfig(c, "g", "counts")
	cfg.MaxPollRecords = 50 + r.IntN(251)
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	start := time.Now()
	errc := startProcessor(pctx, t, cfg)

	// Kill the leader once part of the topic is processed.
	target := total/20 + int64(r.IntN(int(total/5)))
	before := k.waitCommitted(ctx, t, r, mon, "g", target, errc)
	t.Logf("%d of %d records committed after %s (MaxPollRecords %d)", before, total, time.Since(start).Round(time.Millisecond), cfg.MaxPollRecords)
	old := leaderOf(ctx, t, nodes)
	killed := time.Now()
	nodes[old].kill()
	rest := append(append([]*node{}, nodes[:old]...), nodes[old+1:]...)
	newLeader := leaderOf(ctx, t, rest)
	// Offsets only grow: not drained now means not drained at the kill.
	atElection, err := k.committedRecords(ctx, mon, "g")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGKILL leader %s with %d records committed; new leader %s after %s; %d committed then",
		nodes[old].id, before, rest[newLeader].id, time.Since(killed).Round(time.Millisecond), atElection)
	if atElection >= total {
		t.Fatalf("the topic was drained (%d records) by the time a new leader was elected; the kill should land mid-topic", atElection)
	}

	// The processor goes on with the two remaining nodes.
	k.waitCommitted(ctx, t, r, mon, "g", atElection+int64(min(5000, (total-atElection)/2)), errc)
	t.Logf("processing resumed %s after the kill", time.Since(killed).Round(time.Millisecond))

	nodes[old].start(ctx)
	k.waitDrained(ctx, t, mon, "g", errc)
	t.Logf("drained %s after the kill", time.Since(killed).Round(time.Millisecond))
	pcancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	k.checkCounts(ctx, t, mon, "counts")
}

// processorWait is one "kafka: processor waiting" warning of a processor's
// text log (examples/counter writes slog's text format to stderr).
type processorWait struct {
	WaitingOn string        // a kafka.WaitKind: kafka_group, stated_commit, ...
	Side      string        // "kafka" (the broker) or "stated"
	For       time.Duration // how long the wait had lasted
	Detail    string
}

var logField = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S*)`)

// processorWaits returns the wait warnings in a processor's log, in the
// order logged. A chaos test tells a stall of the broker (Side "kafka")
// from a stall of stated (Side "stated") with it; ended reports the waits
// whose end was logged since ("kafka: processor no longer waiting").
func processorWaits(log string) (waits []processorWait, ended map[string]int) {
	ended = map[string]int{}
	for line := range strings.Lines(log) {
		fields := map[string]string{}
		for _, m := range logField.FindAllStringSubmatch(line, -1) {
			v := m[2]
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
			fields[m[1]] = v
		}
		switch fields["msg"] {
		case "kafka: processor waiting":
			d, _ := time.ParseDuration(fields["for"])
			waits = append(waits, processorWait{WaitingOn: fields["waiting_on"], Side: fields["side"], For: d, Detail: fields["detail"]})
		case "kafka: processor no longer waiting":
			ended[fields["waiting_on"]]++
		}
	}
	return waits, ended
}

// TestCounterProcessNamesAStalledGroupInItsLog: a counter process whose
// consumer group cannot complete a rebalance (a member joined and went
// silent) says in its log, at every --wait-log-interval, that it waits on
// the Kafka group and which request; when the member leaves, it logs that
// the wait ended and counts every record. This is what the chaos suite
// reads to tell a stalled broker from a stalled stated.
func TestCounterProcessNamesAStalledGroupInItsLog(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	counterBinary(t)
	d := daemontest.Start(t)
	k := newKafka(t, "events", 2)
	k.produce(ctx, t, 2000, 23)
	c := sdkDial(ctx, t, d.SocketPath())

	g := &rawGroup{t: t, brokers: k.brokers, name: "g"}
	g.admin = g.client()
	silent := g.member(2*time.Minute, 2*time.Minute)
	silent.protocol, silent.topic = "cooperative-sticky", k.topic
	g.stable(ctx, silent)

	p := startCounterProc(t, "counter", "--brokers", strings.Join(k.brokers, ","), "--stated", "unix://"+d.SocketPath(),
		"--group", "g", "--topic", k.topic, "--namespace", "counts", "--session-timeout", "1s", "--wait-log-interval", "200ms")
	// The first logs may come before the JoinGroup is sent (on a slow
	// machine, under the race detector): they then say the processor is
	// joining the group. Every one after names the JoinGroup in flight.
	var waits []processorWait
	joinGroup := func(w processorWait) bool { return strings.Contains(w.Detail, "JoinGroup") }
	eventually(t, 30*time.Second, "the counter logs twice that it waits on a JoinGroup", func() bool {
		waits, _ = processorWaits(p.logs.String())
		return len(slices.DeleteFunc(slices.Clone(waits), func(w processorWait) bool { return !joinGroup(w) })) >= 2
	})
	sent := false
	for _, w := range waits {
		sent = sent || joinGroup(w)
		if w.Side != "kafka" || w.WaitingOn != "kafka_group" || w.For < 200*time.Millisecond ||
			!joinGroup(w) && (sent || w.Detail != "joining the group") {
			t.Fatalf("wait %+v, want kafka_group on the kafka side, a JoinGroup in flight (or, before it is sent, joining the group), at least 200ms", w)
		}
	}

	leave := kmsg.NewPtrLeaveGroupRequest()
	leave.Group = g.name
	leave.Members = []kmsg.LeaveGroupRequestMember{{MemberID: silent.id}}
	if _, err := leave.RequestWith(ctx, silent.cl); err != nil {
		t.Fatal(err)
	}
	k.waitDrained(ctx, t, c, "g", p.exited())
	eventually(t, 30*time.Second, "the counter logs the end of the wait", func() bool {
		_, ended := processorWaits(p.logs.String())
		return ended["kafka_group"] > 0
	})
	p.signal(syscall.SIGTERM)
	k.checkCounts(ctx, t, c, "counts")
}

// reclaimLog is what a processor logs when it claims a fenced partition
// Kafka still assigns to it again (sdk/go/kafka, reclaimFenced).
const reclaimLog = "fenced partition still assigned here by Kafka after the reclaim delay"

// TestKafkaCountingResumesAfterMembersAreKilledWhileJoining: a counter
// runs; again and again a second one starts, joins the group and is
// SIGKILLed a random moment later, often while its JoinGroup is parked at
// the coordinator. Counting must resume every time: the killed member's
// partitions move back once its session times out, and the group never
// keeps a ghost member (the kfake bug fixed in third_party/kfake) that
// holds partitions nobody consumes.
func TestKafkaCountingResumesAfterMembersAreKilledWhileJoining(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := testRand(t)
	counterBinary(t)
	d := daemontest.Start(t)
	k := newKafka(t, "events", 4)
	c := sdkDial(ctx, t, d.SocketPath())
	args := []string{"--brokers", strings.Join(k.brokers, ","), "--stated", "unix://" + d.SocketPath(),
		"--group", "g", "--topic", k.topic, "--namespace", "counts", "--session-timeout", "1s",
		"--max-poll-records", "200", "--wait-log-interval", "2s"}
	a := startCounterProc(t, "counter a", args...)
	k.produce(ctx, t, 5000, 31)
	k.waitDrained(ctx, t, c, "g", a.exited())

	const rounds = 6
	for round := range rounds {
		b := startCounterProc(t, fmt.Sprint("counter b", round), args...)
		k.produce(ctx, t, 2000, 31)
		time.Sleep(time.Duration(20+r.IntN(400)) * time.Millisecond) // a random moment of b's join
		b.signal(syscall.SIGKILL)
		// Within the killed member's 1s session, a rebalance and franz-go's
		// fetch wait (5s) counting resumes. Unpatched kfake fails this in
		// about half the runs, and stalls 11s in most (a member expired
		// mid-join waits for its request timeout). When the killed member
		// had claimed partitions in stated that Kafka then left with
		// counter a, a is fenced on them and claims them again after
		// ReclaimFencedAfter (1 minute with a 1s session): the processor's
		// designed way out, seen once on the loaded race pass. 90s leaves
		// room for that, not for a ghost, which never lets counting resume.
		start := time.Now()
		reclaimed := strings.Count(a.logs.String(), reclaimLog)
		rctx, rcancel := context.WithTimeout(ctx, 90*time.Second)
		k.waitDrained(rctx, t, c, "g", a.exited())
		rcancel()
		t.Logf("round %d: drained %s after the kill (fenced partitions claimed again: %d)", round, time.Since(start).Round(time.Millisecond),
			strings.Count(a.logs.String(), reclaimLog)-reclaimed)
	}
	a.signal(syscall.SIGTERM)
	k.checkCounts(ctx, t, c, "counts")
}
