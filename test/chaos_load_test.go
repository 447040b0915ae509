package test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

// The load generator's namespace, and its shared counters c/00..c/15.
const (
	loadNS       = "chaos"
	loadCounters = 16
	// loadCommitTimeout bounds one Commit, retries included, unless the
	// worker draws a short bound (one commit in four): a commit that runs
	// out during a fault has an unknown outcome, which the check allows
	// to have been applied once or not at all, never twice.
	loadCommitTimeout      = 10 * time.Second
	loadShortCommitTimeout = time.Second
)

// Outcomes of a load commit.
const (
	outcomeNone    uint8 = iota // not sent yet
	outcomeAcked                // Commit returned its index
	outcomeUnknown              // Commit failed: applied once or not at all
)

// loadCommit is one commit of a load worker: it writes the marker key
// m/<worker>/<seq> with the name of the counter it adds 1 to, in the same
// transaction.
type loadCommit struct {
	counter uint8
	outcome uint8
	index   uint64 // when acknowledged
}

// loadWorker commits one transaction at a time through a Client of its
// own, as one application process would.
type loadWorker struct {
	id      string // phase and number, e.g. p1w3
	phase   int
	mu      sync.Mutex
	commits []loadCommit // by sequence - 1
	lastAck time.Time
	sentAt  time.Time // of the commit in flight; zero when none is
	// Since the last acknowledged commit: how many failed, and the
	// distinct errors they returned, oldest first, for a failure message
	// (describe).
	failed int
	recent []recentErr
}

// recentErr is an error a worker's commits returned since its last
// acknowledged one: how often, and when last.
type recentErr struct {
	msg  string
	n    int
	last time.Time
}

// A worker keeps up to keptErrs distinct errors (past that the one seen
// least recently goes); describe shows the shownErrs newest.
const (
	keptErrs  = 32
	shownErrs = 3
)

func (w *loadWorker) send(c loadCommit) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.commits = append(w.commits, c)
	w.sentAt = time.Now()
}

func (w *loadWorker) record(seq int, c loadCommit) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.commits[seq-1] = c
	w.sentAt = time.Time{}
	if c.outcome == outcomeAcked {
		w.lastAck = time.Now()
		w.failed, w.recent = 0, nil
	}
}

// fail notes the error a commit returned, counted with the same errors
// since the last acknowledged commit.
func (w *loadWorker) fail(err error) {
	msg := err.Error()
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failed++
	e := recentErr{msg: msg}
	for i, r := range w.recent {
		if r.msg == msg {
			e = r
			w.recent = append(w.recent[:i], w.recent[i+1:]...)
			break
		}
	}
	e.n++
	e.last = time.Now()
	w.recent = append(w.recent, e)
	if len(w.recent) > keptErrs {
		w.recent = append([]recentErr(nil), w.recent[len(w.recent)-keptErrs:]...)
	}
}

// describe says, for a failure message, when the worker last had a commit
// acknowledged, what its commits returned since (the last distinct
// errors, newest first, with their counts) and whether one is in flight.
func (w *loadWorker) describe() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	var b strings.Builder
	b.WriteString(w.id + ": ")
	if w.lastAck.IsZero() {
		b.WriteString("no commit acknowledged yet")
	} else {
		fmt.Fprintf(&b, "last commit acknowledged %s ago", now.Sub(w.lastAck).Round(time.Millisecond))
	}
	fmt.Fprintf(&b, " (%d commits sent in all); %d failed since", len(w.commits), w.failed)
	if !w.sentAt.IsZero() {
		fmt.Fprintf(&b, ", one in flight for %s", now.Sub(w.sentAt).Round(time.Millisecond))
	}
	switch n := len(w.recent); {
	case n == 0:
		return b.String()
	case n > shownErrs:
		fmt.Fprintf(&b, "; the last %d of %d distinct errors, newest first:", shownErrs, n)
	default:
		fmt.Fprintf(&b, "; %d distinct errors, newest first:", n)
	}
	for i := len(w.recent) - 1; i >= max(0, len(w.recent)-shownErrs); i-- {
		e := w.recent[i]
		fmt.Fprintf(&b, "\n      %dx (last %s ago) %s", e.n, now.Sub(e.last).Round(time.Millisecond), e.msg)
	}
	return b.String()
}

// loadGen is a set of load workers started together (one phase).
type loadGen struct {
	phase   int
	workers []*loadWorker
	halting atomic.Bool
	stop    context.CancelFunc
	wg      sync.WaitGroup

	mu      sync.Mutex
	refused map[string]int // errors other than "unavailable", by message
	errs    map[string]int // error kinds of unknown outcomes, for the summary
}

func markerKey(worker string, seq int) string { return fmt.Sprintf("m/%s/%08d", worker, seq) }
func counterKey(c uint8) string               { return fmt.Sprintf("c/%02d", c) }

// startLoad starts n workers of phase, each with its own Client to the
// cluster (through every node's socket, starting at a different one).
func startLoad(ctx context.Context, t *testing.T, cl *chaosCluster, r *rand.Rand, phase, n int) *loadGen {
	t.Helper()
	wctx, stop := context.WithCancel(ctx)
	g := &loadGen{phase: phase, stop: stop, refused: map[string]int{}, errs: map[string]int{}}
	for i := range n {
		c, err := stated.Dial(ctx, cl.sockets(i))
		if err != nil {
			t.Fatal(err)
		}
		w := &loadWorker{id: fmt.Sprintf("p%dw%d", phase, i), phase: phase}
		g.workers = append(g.workers, w)
		wr := rand.New(rand.NewPCG(r.Uint64(), uint64(i)))
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer c.Close()
			g.run(wctx, c, w, wr)
		}()
	}
	return g
}

// run commits until ctx ends, or, once halting, until a commit is
// acknowledged: with client sessions no earlier commit of the worker can
// be applied after that, so the state is final for the check.
func (g *loadGen) run(ctx context.Context, c *stated.Client, w *loadWorker, r *rand.Rand) {
	acked := false
	for seq := 1; ctx.Err() == nil; seq++ {
		if acked && g.halting.Load() {
			return
		}
		lc := loadCommit{counter: uint8(r.IntN(loadCounters)), outcome: outcomeUnknown}
		w.send(lc)
		timeout := loadCommitTimeout
		if r.IntN(4) == 0 {
			timeout = loadShortCommitTimeout
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		res, err := c.Txn().
			Put(loadNS, []byte(markerKey(w.id, seq)), []byte(counterKey(lc.counter))).
			CounterAdd(loadNS, []byte(counterKey(lc.counter)), 1).
			Commit(cctx)
		cancel()
		acked = err == nil
		if acked {
			lc.outcome, lc.index = outcomeAcked, res.Index
		} else {
			g.noteErr(ctx, err)
			w.fail(err)
		}
		w.record(seq, lc)
		time.Sleep(time.Duration(1+r.IntN(4)) * time.Millisecond)
	}
}

// noteErr counts a failed commit by kind. Unavailable and timed-out
// commits are expected while nodes are down; anything else is a refusal
// that none of the suite's faults justifies.
func (g *loadGen) noteErr(ctx context.Context, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case ctx.Err() != nil:
		g.errs["abandoned at the end of the phase"]++
	case errors.Is(err, stated.ErrUnavailable), errors.Is(err, context.DeadlineExceeded),
		status.Code(err) == codes.DeadlineExceeded, status.Code(err) == codes.Unavailable:
		g.errs["unavailable or timed out"]++
	default:
		g.errs["refused"]++
		msg := err.Error()
		if len(msg) > 200 {
			msg = msg[:200]
		}
		g.refused[msg]++
	}
}

// halt stops the workers after their next acknowledged commit and waits,
// bounded, for them. It returns the workers that got no acknowledgement
// within the bound, as describe says them (they are stopped all the
// same).
func (g *loadGen) halt(within time.Duration) []string {
	g.halting.Store(true)
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	var stuck []string
	select {
	case <-done:
	case <-time.After(within):
		for _, w := range g.workers {
			w.mu.Lock()
			n := len(w.commits)
			acked := n > 0 && w.commits[n-1].outcome == outcomeAcked
			w.mu.Unlock()
			if !acked {
				stuck = append(stuck, w.describe())
			}
		}
	}
	g.stop()
	<-done
	return stuck
}

// abandon stops the workers at once: their commits in flight end with an
// unknown outcome.
func (g *loadGen) abandon() { g.stop(); g.wg.Wait() }

// ackedSince says whether every worker had a commit acknowledged after t.
func (g *loadGen) ackedSince(t time.Time) bool {
	for _, w := range g.workers {
		w.mu.Lock()
		ok := w.lastAck.After(t)
		w.mu.Unlock()
		if !ok {
			return false
		}
	}
	return true
}

// notAckedSince describes (describe) the workers that had no commit
// acknowledged after t.
func (g *loadGen) notAckedSince(t time.Time) []string {
	var out []string
	for _, w := range g.workers {
		w.mu.Lock()
		ok := w.lastAck.After(t)
		w.mu.Unlock()
		if !ok {
			out = append(out, w.describe())
		}
	}
	return out
}

// loadTally is what a check of the load's state found.
type loadTally struct {
	attempted, acked, unknown     int
	unknownApplied, rolledBack    int
	markers                       int
	counted                       int64
	missing, unexpected, mismatch []string
}

// checkLoad reads the load namespace (linearizable, after every worker
// stopped, so nothing changes while the scan runs) and checks it against
// what the workers of gens recorded. It is exact:
//   - every acknowledged commit's marker is present, except those of a
//     phase in rolledBack acknowledged at an index above the restored
//     checkpoint's, which must be absent (a total loss restores the
//     checkpoint, no more);
//   - a commit with an unknown outcome was applied at most once: its
//     marker may or may not be present;
//   - no marker exists that no worker sent, and each names the counter
//     its commit added to;
//   - every counter equals the number of markers that name it: each
//     applied commit was applied whole and exactly once (a commit applied
//     twice adds twice but writes one marker).
//
// So for each counter: acknowledged ≤ counted ≤ attempted, and exactly
// acknowledged + the unknown commits that were applied.
func checkLoad(ctx context.Context, t *testing.T, cl *chaosCluster, c *stated.Client, gens []*loadGen, rolledBack map[int]uint64) loadTally {
	t.Helper()
	present := map[string]string{}
	counters := map[string]int64{}
	for e, err := range c.Scan(ctx, stated.ScanQuery{Namespace: loadNS}, stated.WithConsistency(stated.ConsistencyLinearizable)) {
		if err != nil {
			t.Fatalf("scan of the load namespace: %v", err)
		}
		k := string(e.Key)
		switch {
		case strings.HasPrefix(k, "m/"):
			present[k] = string(e.Value)
		case strings.HasPrefix(k, "c/"):
			counters[k] = e.Counter
		default:
			t.Errorf("load namespace holds a key no worker writes: %q", k)
		}
	}
	var tl loadTally
	named := map[string]int64{}
	seen := map[string]bool{}
	for _, g := range gens {
		restored, rolled := rolledBack[g.phase]
		for _, w := range g.workers {
			w.mu.Lock()
			commits := append([]loadCommit(nil), w.commits...)
			w.mu.Unlock()
			for i, lc := range commits {
				key := markerKey(w.id, i+1)
				val, ok := present[key]
				seen[key] = true
				tl.attempted++
				if ok {
					named[val]++
					if val != counterKey(lc.counter) {
						tl.mismatch = append(tl.mismatch, fmt.Sprintf("%s names %s, its commit added to %s", key, val, counterKey(lc.counter)))
					}
				}
				switch lc.outcome {
				case outcomeAcked:
					tl.acked++
					switch {
					case rolled && lc.index > restored:
						tl.rolledBack++
						if ok {
							tl.unexpected = append(tl.unexpected, fmt.Sprintf("%s acknowledged at index %d survived the restore of a checkpoint at index %d", key, lc.index, restored))
						}
					case !ok:
						tl.missing = append(tl.missing, fmt.Sprintf("%s (acknowledged at index %d)", key, lc.index))
					}
				default:
					tl.unknown++
					if ok {
						tl.unknownApplied++
					}
				}
			}
		}
	}
	for key := range present {
		if !seen[key] {
			tl.unexpected = append(tl.unexpected, key+" exists but no worker sent it")
		}
	}
	for i := range loadCounters {
		k := counterKey(uint8(i))
		tl.counted += counters[k]
		if counters[k] != named[k] {
			tl.mismatch = append(tl.mismatch, fmt.Sprintf("counter %s is %d but %d applied commits name it: a commit was applied twice or in part", k, counters[k], named[k]))
		}
	}
	tl.markers = len(present)
	report := func(what string, list []string) {
		if len(list) == 0 {
			return
		}
		sort.Strings(list)
		t.Errorf("%d %s, e.g.:\n  %s", len(list), what, strings.Join(list[:min(10, len(list))], "\n  "))
	}
	report("acknowledged commits missing", tl.missing)
	report("markers that must not exist", tl.unexpected)
	report("counters or markers that disagree", tl.mismatch)
	if len(tl.missing)+len(tl.unexpected)+len(tl.mismatch) > 0 {
		t.Errorf("the linearizable read found %d markers and counters summing to %d; %s\neach node's own state:\n  %s",
			tl.markers, tl.counted, tl, strings.Join(toStrings(cl.loadOnEachNode(ctx, maxAckedIndex(gens))), "\n  "))
	}
	return tl
}

func maxAckedIndex(gens []*loadGen) uint64 {
	var m uint64
	for _, g := range gens {
		for _, w := range g.workers {
			w.mu.Lock()
			for _, c := range w.commits {
				if c.outcome == outcomeAcked {
					m = max(m, c.index)
				}
			}
			w.mu.Unlock()
		}
	}
	return m
}

// nodeLoad is what one node's own state holds of the load.
type nodeLoad struct {
	id, role string
	markers  int
	sum      int64
	err      error
}

func (l nodeLoad) String() string {
	if l.err != nil {
		return fmt.Sprintf("%s (%s): %v", l.id, l.role, l.err)
	}
	return fmt.Sprintf("%s (%s): %d markers, counters sum %d", l.id, l.role, l.markers, l.sum)
}

// loadOnEachNode reads the load namespace from each node's own state (at
// session consistency: once it applied minIndex).
func (c *chaosCluster) loadOnEachNode(ctx context.Context, minIndex uint64) []nodeLoad {
	var out []nodeLoad
	for _, n := range c.nodes {
		l := nodeLoad{id: n.id}
		st, err := nodeStatus(ctx, n)
		l.role = fmt.Sprint(err)
		if err == nil {
			l.role = fmt.Sprintf("%s, term %d, applied %d", st.Role, st.Term, st.AppliedIndex)
		}
		client, closeConn := n.client()
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		l.markers, l.sum, l.err = scanLoad(cctx, client, minIndex)
		cancel()
		closeConn()
		out = append(out, l)
	}
	return out
}

// checkReplicas checks that every node's own state holds what the
// linearizable read found: once the load stopped, the replicas agree.
// Every load commit the cluster applied is at or below the newest
// acknowledged index of the workers that ran on it (gens): each worker
// stopped after an acknowledged commit, and a session never applies an
// earlier sequence after a later one.
func checkReplicas(ctx context.Context, t *testing.T, cl *chaosCluster, gens []*loadGen, tl loadTally) {
	t.Helper()
	nodes := cl.loadOnEachNode(ctx, maxAckedIndex(gens))
	for _, l := range nodes {
		if l.err != nil || l.markers != tl.markers || l.sum != tl.counted {
			t.Errorf("replicas disagree: the linearizable read found %d markers and counters summing to %d; each node's own state:\n  %s",
				tl.markers, tl.counted, strings.Join(toStrings(nodes), "\n  "))
			return
		}
	}
}

func toStrings[T fmt.Stringer](v []T) []string {
	out := make([]string, len(v))
	for i, x := range v {
		out[i] = x.String()
	}
	return out
}

func scanLoad(ctx context.Context, client statedv1.StateClient, minIndex uint64) (markers int, sum int64, err error) {
	stream, err := client.Scan(ctx, &statedv1.ScanRequest{Namespace: loadNS, Read: &statedv1.ReadOptions{
		Consistency: statedv1.Consistency_CONSISTENCY_SESSION, MinIndex: minIndex}})
	if err != nil {
		return 0, 0, err
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return markers, sum, nil
		}
		if err != nil {
			return markers, sum, err
		}
		for _, e := range resp.Entries {
			if strings.HasPrefix(string(e.Key), "m/") {
				markers++
			} else {
				sum += e.Counter
			}
		}
	}
}

func (tl loadTally) String() string {
	s := fmt.Sprintf("%d commits sent, %d acknowledged, %d with an unknown outcome (%d of them applied), counters sum %d = %d markers",
		tl.attempted, tl.acked, tl.unknown, tl.unknownApplied, tl.counted, tl.markers)
	if tl.rolledBack > 0 {
		s += fmt.Sprintf("; %d acknowledged after the restored checkpoint, rolled back by the restore as documented", tl.rolledBack)
	}
	return s
}

// errSummary merges the error kinds of gens for the summary.
func errSummary(gens []*loadGen) (kinds string, refused []string) {
	all := map[string]int{}
	for _, g := range gens {
		g.mu.Lock()
		for k, n := range g.errs {
			all[k] += n
		}
		for m, n := range g.refused {
			refused = append(refused, fmt.Sprintf("%dx %s", n, m))
		}
		g.mu.Unlock()
	}
	var parts []string
	for k, n := range all {
		parts = append(parts, k+": "+strconv.Itoa(n))
	}
	sort.Strings(parts)
	sort.Strings(refused)
	if len(parts) == 0 {
		return "none", refused
	}
	return strings.Join(parts, ", "), refused
}
