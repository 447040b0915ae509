package test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	stated "github.com/statedhq/stated/sdk/go"
)

func sessionizerBinary(t *testing.T) string { return exampleBinary(t, "sessionizer") }

// sessionLine is a session as the sessionizer prints it: "session USER
// FIRST LAST DURATION N clicks" ("1 click"), tab-separated.
var sessionLine = regexp.MustCompile(`^session (\S+)\t(\S+)\t(\S+)\t(\S+)\t(\d+) clicks?$`)

var summaryLine = regexp.MustCompile(`^summary: (\d+) sessions of (\d+) users, (\d+) of (\d+) clicks in sessions, (\d+) late clicks dropped$`)

// demoOutput is what a demo run printed.
type demoOutput struct {
	sessions []session // sorted
	summary  []int64   // sessions, users, clicks in sessions, clicks, late
}

func parseDemo(t *testing.T, out string) demoOutput {
	t.Helper()
	var d demoOutput
	for _, line := range strings.Split(out, "\n") {
		if m := sessionLine.FindStringSubmatch(line); m != nil {
			first, err1 := time.Parse(time.RFC3339, m[2])
			last, err2 := time.Parse(time.RFC3339, m[3])
			n, err3 := strconv.ParseInt(m[5], 10, 64)
			if err1 != nil || err2 != nil || err3 != nil {
				t.Fatalf("bad session line %q", line)
			}
			d.sessions = append(d.sessions, session{User: m[1], Start: first.UnixMilli(), Last: last.UnixMilli(), Clicks: n})
		}
		if m := summaryLine.FindStringSubmatch(line); m != nil {
			for _, v := range m[1:] {
				n, _ := strconv.ParseInt(v, 10, 64)
				d.summary = append(d.summary, n)
			}
		}
	}
	if d.summary == nil {
		t.Fatalf("no summary in the output:\n%s", out)
	}
	sortSessions(d.sessions)
	return d
}

// TestSessionizerDemoSessionizesEveryClickTheSameWayForTheSameSeed runs
// examples/sessionizer in its demo mode (an in-process kfake and
// generated clicks) against a `stated run` process, twice with one seed.
// Every click is in exactly one printed session, a user's sessions are
// more than the 30-minute gap apart, the summary agrees with the printed
// sessions, and the second run prints the same sessions.
func TestSessionizerDemoSessionizesEveryClickTheSameWayForTheSameSeed(t *testing.T) {
	t.Parallel()
	skipLong(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := sessionizerBinary(t)
	n := newNode(t)
	n.start(ctx)
	demo := func() demoOutput {
		out, err := exec.CommandContext(ctx, bin, "--stated", "unix://"+n.socket, "--demo-records", "800", "--demo-users", "15", "--seed", "7").CombinedOutput()
		if err != nil {
			t.Fatalf("sessionizer: %v\n%s", err, out)
		}
		return parseDemo(t, string(out))
	}
	first := demo()
	sum := first.summary
	if sum[0] != int64(len(first.sessions)) || sum[2] != 800 || sum[3] != 800 || sum[4] != 0 {
		t.Fatalf("summary %v with %d printed sessions; want every one of the 800 clicks in a printed session and none late", sum, len(first.sessions))
	}
	var clicks int64
	users := map[string]bool{}
	for i, s := range first.sessions {
		clicks += s.Clicks
		users[s.User] = true
		if s.Last < s.Start || s.Clicks < 1 {
			t.Fatalf("session %s is malformed", s)
		}
		if i > 0 && first.sessions[i-1].User == s.User && s.Start-first.sessions[i-1].Last <= (30*time.Minute).Milliseconds() {
			t.Fatalf("sessions %s and %s are within the gap of each other: they should be one", first.sessions[i-1], s)
		}
	}
	if clicks != 800 || int64(len(users)) != sum[1] {
		t.Fatalf("the printed sessions hold %d clicks of %d users; the summary says 800 clicks of %d users", clicks, len(users), sum[1])
	}
	second := demo()
	if !slices.Equal(first.sessions, second.sessions) {
		t.Fatalf("the same seed printed other sessions:\nfirst  %v\nsecond %v", first.sessions, second.sessions)
	}
	t.Logf("%d sessions of %d users, the same in both runs", len(first.sessions), len(users))
}

// TestSessionizerKilledMidStreamRecordsEverySessionOnce runs
// examples/sessionizer against a Kafka of the test's (--brokers) and a
// `stated run` process, and SIGKILLs it while it sessionizes, twice, each
// time between a commit that closed sessions and the commit that
// acknowledges them (the test freezes it with SIGSTOP at random moments
// until the outbox holds unacknowledged sessions, then kills it); a third
// one runs until the topic is drained and the test has moved every
// partition's watermark past the end. The sessions recorded in stated (in
// the transactions that acknowledged them) are the reference
// sessionizer's, each once: those the kills left unacknowledged were
// delivered again, none twice.
func TestSessionizerKilledMidStreamRecordsEverySessionOnce(t *testing.T) {
	t.Parallel()
	skipLong(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := sessionizerBinary(t)
	r := testRand(t)
	n := newNode(t)
	n.start(ctx)
	k := newKafka(t, "clicks", 4)
	clicks := genClicks(r, 40_000, 40, 30*time.Minute, 10*time.Second)
	want := sessionize(clicks, 30*time.Minute)
	k.produceClicks(ctx, t, clicks)
	c := sdkDial(ctx, t, "unix://"+n.socket)
	args := []string{"-v", "--brokers", strings.Join(k.brokers, ","), "--stated", "unix://" + n.socket,
		"--group", "g", "--topic", k.topic, "--namespace", "sessions", "--session-timeout", "1s",
		"--max-poll-records", "100"}

	start := func(name string) *counterProc { return startProc(t, name, bin, args...) }
	// Round 0 is killed with closed sessions unacknowledged; round 1
	// delivers them before anything else, and is killed anywhere.
	var left []stated.Emission
	for round := range 2 {
		p := start(fmt.Sprint("sessionizer ", round))
		if round == 1 {
			waitAcknowledged(ctx, t, p, c, "sessions", left[len(left)-1].ID)
			t.Logf("round 1 delivered the %d sessions round 0 left unacknowledged (ids %d to %d)", len(left), left[0].ID, left[len(left)-1].ID)
		}
		done, _ := k.committedRecords(ctx, c, "g")
		// The kills land in the first half of the stream.
		k.waitCommitted(ctx, t, r, c, "g", min(done+2000+int64(r.IntN(4000)), int64(len(clicks))/2), p.exited())
		if round == 0 {
			left = killWithPending(ctx, t, r, p, c, "sessions")
		} else {
			p.signal(syscall.SIGKILL)
		}
		committed, err := k.committedRecords(ctx, c, "g")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: SIGKILL with %d of %d clicks committed", round, committed, len(clicks))
	}
	p := start("sessionizer final")
	k.waitDrained(ctx, t, c, "g", p.exited())
	var last time.Time
	for _, cl := range clicks {
		if cl.at.After(last) {
			last = cl.at
		}
	}
	txn := c.Txn()
	for part := range k.partitions {
		txn.AdvanceWatermark("sessions", fmt.Sprintf("%s/%d", k.topic, part), last.Add(30*time.Minute))
	}
	if _, err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		all, err := c.WindowStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) == 1 && all[0].OpenWindows == 0 && all[0].Pending == 0 {
			if all[0].LateDropped != 0 {
				t.Fatalf("%d clicks dropped as late", all[0].LateDropped)
			}
			break
		}
		select {
		case err := <-p.exited():
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatalf("sessions not all delivered: %v (status %+v)", ctx.Err(), all)
		case <-time.After(50 * time.Millisecond):
		}
	}
	p.signal(syscall.SIGTERM)

	// What the sessionizer recorded: a map of each user's sessions by
	// start, and the counters sessions and clicks.
	var got []session
	for e, err := range c.Scan(ctx, stated.ScanQuery{Namespace: "sessions"}) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind != stated.KindMap {
			continue // the counters
		}
		start, err := time.Parse(time.RFC3339Nano, string(e.SubKey))
		if err != nil {
			t.Fatalf("session key %q: %v", e.SubKey, err)
		}
		var lastAt string
		var n int64
		if _, err := fmt.Sscanf(string(e.Value), "last=%s clicks=%d", &lastAt, &n); err != nil {
			t.Fatalf("session value %q: %v", e.Value, err)
		}
		l, err := time.Parse(time.RFC3339Nano, lastAt)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, session{User: string(e.Key), Start: start.UnixMilli(), Last: l.UnixMilli(), Clicks: n})
	}
	sortSessions(got)
	diffSessions(t, "the sessions recorded", got, want)
	sessions, err := c.GetCounter(ctx, "sessions", []byte("sessions"))
	must(t, err)
	recorded, err := c.GetCounter(ctx, "sessions", []byte("clicks"))
	must(t, err)
	if sessions != int64(len(want)) || recorded != int64(len(clicks)) {
		t.Fatalf("counters: %d sessions of %d clicks; want %d of %d: a session was recorded twice or not at all", sessions, recorded, len(want), len(clicks))
	}
	t.Logf("%d sessions of %d clicks, each recorded once", sessions, recorded)
}

// killWithPending freezes p (SIGSTOP) at random moments until the window
// namespace ns holds emissions p has not acknowledged, and then kills it
// (SIGKILL); it returns them.
func killWithPending(ctx context.Context, t *testing.T, r *rand.Rand, p *counterProc, c *stated.Client, ns string) []stated.Emission {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; {
		if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatalf("%s: SIGSTOP: %v", p.name, err)
		}
		ems, err := c.Emissions(ctx, ns, 0, 10000)
		if err != nil {
			t.Fatal(err)
		}
		if len(ems) > 0 {
			p.signal(syscall.SIGKILL)
			return ems
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never stopped between a commit that closed sessions and their acknowledgement in a minute", p.name)
		}
		if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatalf("%s: SIGCONT: %v", p.name, err)
		}
		time.Sleep(time.Duration(r.IntN(3000)) * time.Microsecond)
	}
}

// waitAcknowledged waits until no emission of ns up to id is pending.
func waitAcknowledged(ctx context.Context, t *testing.T, p *counterProc, c *stated.Client, ns string, id uint64) {
	t.Helper()
	for {
		ems, err := c.Emissions(ctx, ns, 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(ems) == 0 || ems[0].ID > id {
			return
		}
		select {
		case err := <-p.exited():
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatalf("emission %d of %s still pending: %v", ems[0].ID, ns, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
