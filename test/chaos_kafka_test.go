package test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	stated "github.com/statedhq/stated/sdk/go"
)

// chaosGroup and chaosCounts are where the chaos suite's processors count.
const (
	chaosGroup  = "g"
	chaosCounts = "counts"
	// chaosSessionTimeout is the processors' Kafka session timeout: a
	// SIGKILLed processor's partitions move after it.
	chaosSessionTimeout = 2 * time.Second
	// chaosWaitLogInterval is how often a waiting processor says what it
	// waits on.
	chaosWaitLogInterval = time.Second
	// maxProcessorCrashes bounds the restarts of processors that exit by
	// themselves: past it the run fails instead of restarting them.
	maxProcessorCrashes = 20
)

// chaosKafka is the broker (kfake in the test process), a producer that
// writes records at a steady rate, and the examples/counter processes
// that count them into stated, each restarted when it is killed.
type chaosKafka struct {
	t  *testing.T
	k  *kafkaEnv
	cl *chaosCluster
	// r draws each start's --max-poll-records. Starts of processors that
	// exited by themselves depend on timing: r is not the schedule's
	// generator (chaosRun.other).
	r     *rand.Rand
	procs []*chaosProc

	stopProducing context.CancelFunc
	producerDone  chan error

	mu      sync.Mutex
	starts  int
	crashes []string // processors that exited without being killed
}

// chaosProc is one processor slot: the process running in it now.
type chaosProc struct {
	slot int
	p    *counterProc
	id   string // its stated client id, which owns its claims
}

func newChaosKafka(t *testing.T, cl *chaosCluster, r *rand.Rand, processors int) *chaosKafka {
	t.Helper()
	ck := &chaosKafka{t: t, k: newKafka(t, "events", 4), cl: cl, r: r}
	for i := range processors {
		ck.procs = append(ck.procs, &chaosProc{slot: i})
	}
	return ck
}

// produce writes about rate records a second, in batches, until stop is
// called; keys cycle through 97 values.
func (ck *chaosKafka) produce(ctx context.Context, rate int) {
	pctx, stop := context.WithCancel(ctx)
	ck.stopProducing = stop
	ck.producerDone = make(chan error, 1)
	go func() { ck.producerDone <- ck.producer(pctx, rate) }()
}

func (ck *chaosKafka) producer(ctx context.Context, rate int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(ck.k.brokers...), kgo.DefaultProduceTopic(ck.k.topic))
	if err != nil {
		return err
	}
	defer cl.Close()
	const tick = 50 * time.Millisecond
	per := max(1, rate*int(tick/time.Millisecond)/1000)
	next := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(tick):
		}
		recs := make([]*kgo.Record, per)
		for i := range recs {
			recs[i] = &kgo.Record{Key: fmt.Appendf(nil, "k%03d", next%97), Value: fmt.Appendf(nil, "%d", next)}
			next++
		}
		// Not ctx: a batch is produced whole, so that what the test
		// expects is what the broker holds.
		res := cl.ProduceSync(context.Background(), recs...)
		ck.k.mu.Lock()
		for _, r := range res {
			if r.Err != nil {
				ck.k.mu.Unlock()
				return fmt.Errorf("produce: %w", r.Err)
			}
			ck.k.expected[string(r.Record.Key)]++
			ck.k.ends[r.Record.Partition] = max(ck.k.ends[r.Record.Partition], r.Record.Offset+1)
		}
		ck.k.mu.Unlock()
	}
}

// finishProducing stops the producer; from then on the topic's end is
// fixed.
func (ck *chaosKafka) finishProducing() {
	ck.t.Helper()
	ck.stopProducing()
	if err := <-ck.producerDone; err != nil {
		ck.t.Fatal(err)
	}
}

// start starts a processor in slot s. Slot 0's processes all have the
// fixed client id proc0, as a service with a fixed --client-id restarted
// on the same host: each new session of that id fences the dead
// process's. The other slots' processes get ids of their own, procS-N.
// Either way stated's claims name the slot that made them.
func (ck *chaosKafka) start(s int) {
	ck.t.Helper()
	ck.mu.Lock()
	ck.starts++
	id := fmt.Sprintf("proc%d-%d", s, ck.starts)
	ck.mu.Unlock()
	if s == 0 {
		id = "proc0"
	}
	args := []string{"--brokers", strings.Join(ck.k.brokers, ","), "--stated", ck.cl.sockets(s),
		"--group", chaosGroup, "--topic", ck.k.topic, "--namespace", chaosCounts, "--client-id", id,
		"--session-timeout", chaosSessionTimeout.String(), "--max-poll-records", strconv.Itoa(ck.maxPollRecords())}
	// The rebalance timeout below the session timeout: a member does not
	// heartbeat while it joins, so a longer rebalance lets the broker
	// expire it mid-join (see examples/counter). A processor that waits
	// on the group or on stated says so at the wait-log interval, which
	// the diagnosis of a stall reads.
	args = append(args, "--rebalance-timeout", (chaosSessionTimeout * 3 / 4).String(),
		"--wait-log-interval", chaosWaitLogInterval.String())
	ck.procs[s].p = startCounterProc(ck.t, id, args...)
	ck.procs[s].id = id
}

// maxPollRecords draws a new processor's --max-poll-records, 50 to 500.
func (ck *chaosKafka) maxPollRecords() int { return 50 + ck.r.IntN(451) }

func (ck *chaosKafka) startAll() {
	ck.t.Helper()
	for s := range ck.procs {
		ck.start(s)
	}
}

// kill SIGKILLs the processor in slot s.
func (ck *chaosKafka) kill(s int) {
	ck.t.Helper()
	if p := ck.procs[s].p; p != nil {
		p.signal(syscall.SIGKILL)
		ck.procs[s].p = nil
	}
}

func (ck *chaosKafka) killAll() {
	ck.t.Helper()
	for s := range ck.procs {
		ck.kill(s)
	}
}

// supervise restarts, as a service manager would, every processor that
// exited without being killed, and notes it for the summary.
func (ck *chaosKafka) supervise() {
	ck.t.Helper()
	for s, cp := range ck.procs {
		if cp.p == nil {
			continue
		}
		select {
		case <-cp.p.done:
		default:
			continue
		}
		ck.mu.Lock()
		ck.crashes = append(ck.crashes, fmt.Sprintf("%s exited (%v): %s", cp.id, cp.p.err, lastLines(cp.p.logs.String(), 3)))
		n := len(ck.crashes)
		ck.mu.Unlock()
		if n > maxProcessorCrashes {
			ck.t.Fatalf("processors exited by themselves %d times; the last: %s", n, ck.crashes[n-1])
		}
		ck.t.Logf("%s exited by itself (%v); restarting it", cp.id, cp.p.err)
		ck.start(s)
	}
}

// live lists the client ids of the processors running now.
func (ck *chaosKafka) live() []string {
	var ids []string
	for _, cp := range ck.procs {
		if cp.p != nil {
			select {
			case <-cp.p.done:
			default:
				ids = append(ids, cp.id)
			}
		}
	}
	return ids
}

// progress returns the records stated has committed for the group and
// the records produced.
func (ck *chaosKafka) progress(ctx context.Context, mon *stated.Client) (int64, int64, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := ck.k.committedRecords(cctx, mon, chaosGroup)
	return n, ck.k.producedRecords(), err
}

// waitDrained waits until stated's offsets reach the end of every
// partition, restarting crashed processors meanwhile. When that takes
// longer than bound it fails the test with a diagnosis that says what is
// stuck: stated or the broker's consumer group.
func (ck *chaosKafka) waitDrained(ctx context.Context, mon *stated.Client, bound time.Duration) time.Duration {
	ck.t.Helper()
	start := time.Now()
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		done, err := ck.k.drained(cctx, mon, chaosGroup)
		cancel()
		if done {
			return time.Since(start)
		}
		if time.Since(start) > bound || ctx.Err() != nil {
			n, total, _ := ck.progress(ctx, mon)
			ck.t.Fatalf("progress did not resume: %d of %d records counted %s after the last fault (bound %s; last read: %v)\n%s",
				n, total, time.Since(start).Round(time.Second), bound, err, ck.diagnose(context.Background()))
		}
		ck.supervise()
		time.Sleep(50 * time.Millisecond)
	}
}

// diagnose says whether stated or the broker's consumer group is stuck,
// and why it thinks so.
func (ck *chaosKafka) diagnose(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var b strings.Builder

	// stated: a leader, and a commit through some node.
	nodes, leader := ck.cl.statusLine(ctx)
	var commitErrs []string
	commits := false
	for _, n := range ck.cl.nodes {
		if err := probeCommit(ctx, n); err != nil {
			commitErrs = append(commitErrs, fmt.Sprintf("%s: %v", n.id, err))
		} else {
			commits = true
		}
	}

	// The broker's view of the group.
	adm, err := kgo.NewClient(kgo.SeedBrokers(ck.k.brokers...))
	var group kadm.DescribedGroup
	var groupErr error
	if err == nil {
		defer adm.Close()
		var gs kadm.DescribedGroups
		if gs, groupErr = kadm.NewClient(adm).DescribeGroups(ctx, chaosGroup); groupErr == nil {
			group = gs[chaosGroup]
			groupErr = group.Err
		}
	} else {
		groupErr = err
	}
	live := ck.live()
	assigned := map[string][]int32{}
	nAssigned := 0
	for _, m := range group.Members {
		if c, ok := m.Assigned.AsConsumer(); ok {
			for _, tp := range c.Topics {
				assigned[m.MemberID] = append(assigned[m.MemberID], tp.Partitions...)
				nAssigned += len(tp.Partitions)
			}
		}
	}

	// stated's view of the group: offsets against the topic's ends, and
	// which process claimed each partition last.
	var claims []string
	mon, derr := stated.Dial(ctx, ck.cl.sockets(0))
	if derr == nil {
		defer mon.Close()
		gs, err := mon.GetGroup(ctx, chaosGroup, stated.WithConsistency(stated.ConsistencyLinearizable))
		if err == nil {
			off := map[int32]int64{}
			for _, o := range gs.Offsets {
				off[o.Partition] = o.Offset
			}
			ck.k.mu.Lock()
			for _, c := range gs.Claims {
				claims = append(claims, fmt.Sprintf("p%d: offset %d of %d, claimed by %s (epoch %d, released %v, %s ago)",
					c.Partition, off[c.Partition], ck.k.ends[c.Partition], c.Owner, c.Epoch, c.Released, time.Since(c.ClaimedAt).Round(time.Second)))
			}
			ck.k.mu.Unlock()
		} else {
			claims = append(claims, "stated's group state unreadable: "+err.Error())
		}
	}

	// What the processors say they wait on now: the wait warnings they
	// log within a few intervals.
	waits := ck.currentWaits(3 * chaosWaitLogInterval)
	var onStated, onKafka []string
	for id, ws := range waits {
		for _, w := range ws {
			desc := fmt.Sprintf("%s waits on %s for %s (%s)", id, w.WaitingOn, w.For, w.Detail)
			if w.Side == "stated" {
				onStated = append(onStated, desc)
			} else {
				onKafka = append(onKafka, desc)
			}
		}
	}
	sort.Strings(onStated)
	sort.Strings(onKafka)

	switch {
	case !leader || !commits:
		fmt.Fprintf(&b, "VERDICT: stated is stuck: leader=%v, commits fail: %s\n", leader, strings.Join(commitErrs, "; "))
	case len(onStated) > 0:
		fmt.Fprintf(&b, "VERDICT: stated is stuck for the processors: %s\n", strings.Join(onStated, "; "))
	case len(onKafka) > 0:
		fmt.Fprintf(&b, "VERDICT: the broker's consumer group is stuck: %s; stated commits fine\n", strings.Join(onKafka, "; "))
	case len(live) == 0:
		fmt.Fprintf(&b, "VERDICT: no processor is running (see the exits below), stated commits fine\n")
	case groupErr != nil:
		fmt.Fprintf(&b, "VERDICT: the broker is stuck: the group cannot be described: %v\n", groupErr)
	case group.State != "Stable":
		fmt.Fprintf(&b, "VERDICT: the broker's consumer group is stuck in %s: processors are waiting on a join or sync, stated commits fine\n", group.State)
	case len(group.Members) != len(live):
		fmt.Fprintf(&b, "VERDICT: the broker's consumer group is stuck: %d members but %d live processors (a ghost member holds partitions), stated commits fine\n", len(group.Members), len(live))
	case nAssigned < int(ck.k.partitions):
		fmt.Fprintf(&b, "VERDICT: the broker's consumer group is stuck: %d of %d partitions assigned, stated commits fine\n", nAssigned, ck.k.partitions)
	default:
		fmt.Fprintf(&b, "VERDICT: stated commits and the group is stable with every partition assigned, yet counting does not advance: the processors are stuck (see their logs)\n")
	}
	fmt.Fprintf(&b, "stated nodes: %s\n", nodes)
	fmt.Fprintf(&b, "broker group %q: state %q, %d members %v (err %v); live processors %v\n", chaosGroup, group.State, len(group.Members), assigned, groupErr, live)
	fmt.Fprintf(&b, "stated claims:\n  %s\n", strings.Join(claims, "\n  "))
	for _, cp := range ck.procs {
		if cp.p != nil {
			fmt.Fprintf(&b, "%s, last lines:\n%s\n", cp.id, lastLines(cp.p.logs.String(), 8))
		}
	}
	return b.String()
}

// currentWaits watches the live processors' logs for window and returns
// the wait warnings each logs meanwhile (processorWaits), by client id.
func (ck *chaosKafka) currentWaits(window time.Duration) map[string][]processorWait {
	from := map[*chaosProc]int{}
	for _, cp := range ck.procs {
		if cp.p != nil {
			from[cp] = len(cp.p.logs.String())
		}
	}
	time.Sleep(window)
	out := map[string][]processorWait{}
	for cp, n := range from {
		log := cp.p.logs.String()
		if waits, _ := processorWaits(log[min(n, len(log)):]); len(waits) > 0 {
			// The newest warning of each kind says how long it has lasted.
			last := map[string]processorWait{}
			for _, w := range waits {
				last[w.WaitingOn] = w
			}
			for _, w := range last {
				out[cp.id] = append(out[cp.id], w)
			}
		}
	}
	return out
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// crashSummary lists the processors that exited by themselves.
func (ck *chaosKafka) crashSummary() []string {
	ck.mu.Lock()
	defer ck.mu.Unlock()
	out := append([]string(nil), ck.crashes...)
	sort.Strings(out)
	return out
}
