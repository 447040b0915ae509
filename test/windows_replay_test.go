package test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
	"github.com/statedhq/stated/sdk/go/kafka"
)

// click is a generated click: a user's record at an event time.
type click struct {
	user string
	at   time.Time
}

var clicksStart = time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)

// genClicks generates n clicks of users users in bursts: clicks seconds
// to minutes apart, bursts more than gap apart or (now and then) a little
// less, which joins them. They come in event-time order except that a
// click may follow later ones by less than outOfOrder/2 (never late).
func genClicks(r *rand.Rand, n, users int, gap, outOfOrder time.Duration) []click {
	next := make([]time.Time, users)
	for u := range next {
		next[u] = clicksStart.Add(time.Duration(r.Int64N(int64(time.Hour))))
	}
	type produced struct {
		click
		order time.Time
	}
	out := make([]produced, 0, n)
	for range n {
		u := r.IntN(users)
		c := click{user: fmt.Sprintf("user-%03d", u), at: next[u]}
		out = append(out, produced{c, c.at.Add(time.Duration(r.Int64N(int64(outOfOrder / 2))))})
		switch x := r.IntN(25); {
		case x == 0:
			next[u] = next[u].Add(gap + time.Millisecond + time.Duration(r.Int64N(int64(2*time.Hour))))
		case x == 1:
			next[u] = next[u].Add(gap * 9 / 10)
		default:
			next[u] = next[u].Add(time.Duration(1+r.Int64N(240)) * time.Second)
		}
	}
	slices.SortStableFunc(out, func(a, b produced) int { return a.order.Compare(b.order) })
	clicks := make([]click, len(out))
	for i, p := range out {
		clicks[i] = p.click
	}
	return clicks
}

// produceClicks writes the clicks keyed by user, with their event times
// as timestamps, and records the partitions' end offsets in k for
// k.waitDrained.
func (k *kafkaEnv) produceClicks(ctx context.Context, t *testing.T, clicks []click) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.brokers...), kgo.DefaultProduceTopic(k.topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	recs := make([]*kgo.Record, len(clicks))
	for i, c := range clicks {
		recs[i] = &kgo.Record{Key: []byte(c.user), Value: []byte("click"), Timestamp: c.at}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, r := range cl.ProduceSync(ctx, recs...) {
		if r.Err != nil {
			t.Fatalf("produce: %v", r.Err)
		}
		k.ends[r.Record.Partition] = max(k.ends[r.Record.Partition], r.Record.Offset+1)
	}
}

// session is a closed session as the application received it.
type session struct {
	User   string `json:"user"`
	Start  int64  `json:"start_ms"`
	Last   int64  `json:"last_ms"`
	Clicks int64  `json:"clicks"`
}

func (s session) String() string {
	return fmt.Sprintf("%s [%s, %s] %d clicks", s.User, time.UnixMilli(s.Start).UTC().Format(time.RFC3339),
		time.UnixMilli(s.Last).UTC().Format(time.RFC3339), s.Clicks)
}

// sessionize is the reference: each user's clicks in time order, a new
// session where a click comes more than gap after the previous one.
func sessionize(clicks []click, gap time.Duration) []session {
	byUser := map[string][]int64{}
	for _, c := range clicks {
		byUser[c.user] = append(byUser[c.user], c.at.UnixMilli())
	}
	var out []session
	for user, ts := range byUser {
		slices.Sort(ts)
		cur := session{User: user, Start: ts[0], Last: ts[0], Clicks: 1}
		for _, t := range ts[1:] {
			if t-cur.Last > gap.Milliseconds() {
				out = append(out, cur)
				cur = session{User: user, Start: t, Last: t}
			}
			cur.Last = t
			cur.Clicks++
		}
		out = append(out, cur)
	}
	sortSessions(out)
	return out
}

func sortSessions(ss []session) {
	slices.SortFunc(ss, func(a, b session) int {
		if c := strings.Compare(a.User, b.User); c != 0 {
			return c
		}
		return int(a.Start - b.Start)
	})
}

const (
	replayGap        = 30 * time.Minute
	replayGrace      = time.Minute
	replayOutOfOrder = 10 * time.Second
)

// sessionsApp is the application of the replay test: a processor that
// adds each click to the session window namespace "sessions" and, for
// each closed session, records it in stated in the transaction that
// acknowledges it. What it received is the keyed-state namespace
// "received" (one entry per session; key user/start, value the session)
// and the counter of each session in "receipts" (how many times it was
// received; more than 1 is a window emitted twice to the application).
type sessionsApp struct {
	c     *stated.Client
	topic string
	calls atomic.Int64
}

func (a *sessionsApp) define(ctx context.Context, t *testing.T) {
	t.Helper()
	err := a.c.DefineWindows(ctx, stated.WindowSpec{
		Namespace: "sessions", Shape: stated.Session, Gap: replayGap, Grace: replayGrace, MaxOutOfOrder: replayOutOfOrder,
		// Sessions close by the data alone, not by the wall clock: the
		// same whenever the processes run, crash or restart.
		IdleTimeout: 24 * time.Hour,
		Aggregate:   stated.Count, Emit: stated.EmitFinal, Late: stated.LateDrop,
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (a *sessionsApp) processor(t *testing.T, brokers []string) *kafka.Processor {
	t.Helper()
	p, err := kafka.New(kafka.Config{
		State: a.c, Group: "g", Topics: []string{a.topic}, MaxPollRecords: 300,
		KafkaOptions: []kgo.Opt{kgo.SeedBrokers(brokers...), kgo.SessionTimeout(time.Second),
			kgo.HeartbeatInterval(200 * time.Millisecond), kgo.RebalanceTimeout(3 * time.Second)},
		Logger: testLogger(),
		Handler: func(_ context.Context, txn *stated.Txn, r *kgo.Record) error {
			txn.AddWindow("sessions", r.Key, r.Timestamp, stated.NoValue(), stated.FromSource(kafka.SourceOf(r)))
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	p.OnWindowClosed("sessions", func(_ context.Context, txn *stated.Txn, ems []stated.Emission) error {
		a.calls.Add(1)
		for _, e := range ems {
			s := session{User: string(e.Key), Start: e.Start.UnixMilli(), Last: e.End.UnixMilli() - 1, Clicks: e.Count}
			v, err := json.Marshal(s)
			if err != nil {
				return err
			}
			k := fmt.Appendf(nil, "%s/%d", s.User, s.Start)
			txn.Put("received", k, v)
			txn.CounterAdd("receipts", k, 1)
		}
		return nil
	})
	return p
}

// closeAll tells stated the stream has ended: every partition's
// watermark moves past the last session's close.
func (a *sessionsApp) closeAll(ctx context.Context, t *testing.T, partitions int32, clicks []click) {
	t.Helper()
	var last time.Time
	for _, c := range clicks {
		if c.at.After(last) {
			last = c.at
		}
	}
	txn := a.c.Txn()
	for p := range partitions {
		txn.AdvanceWatermark("sessions", fmt.Sprintf("%s/%d", a.topic, p), last.Add(replayGap+replayGrace))
	}
	if _, err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// waitAllDelivered waits until no session is open and nothing is left to
// acknowledge.
func (a *sessionsApp) waitAllDelivered(ctx context.Context, t *testing.T, errc <-chan error) {
	t.Helper()
	for {
		all, err := a.c.WindowStatus(ctx, stated.WithConsistency(stated.ConsistencyLinearizable))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range all {
			if s.Spec.Namespace == "sessions" && s.OpenWindows == 0 && s.Pending == 0 {
				if s.LateDropped != 0 {
					t.Fatalf("%d clicks dropped as late; the generator makes none", s.LateDropped)
				}
				return
			}
		}
		select {
		case err := <-errc:
			t.Fatalf("processor stopped before every session was delivered: %v", err)
		case <-ctx.Done():
			t.Fatalf("sessions not all delivered: %v", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// received returns the sessions the application received, and fails the
// test if one was received twice.
func (a *sessionsApp) received(ctx context.Context, t *testing.T) []session {
	t.Helper()
	lin := stated.WithConsistency(stated.ConsistencyLinearizable)
	for e, err := range a.c.Scan(ctx, stated.ScanQuery{Namespace: "receipts"}, lin) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Counter != 1 {
			t.Errorf("session %s received %d times", e.Key, e.Counter)
		}
	}
	var out []session
	for e, err := range a.c.Scan(ctx, stated.ScanQuery{Namespace: "received"}, lin) {
		if err != nil {
			t.Fatal(err)
		}
		var s session
		if err := json.Unmarshal(e.Value, &s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	sortSessions(out)
	return out
}

// diffSessions fails the test where got and want differ.
func diffSessions(t *testing.T, what string, got, want []session) {
	t.Helper()
	g, w := map[session]bool{}, map[session]bool{}
	for _, s := range got {
		g[s] = true
	}
	for _, s := range want {
		w[s] = true
	}
	bad := 0
	for _, s := range want {
		if !g[s] {
			if bad++; bad <= 10 {
				t.Errorf("%s: missing %s", what, s)
			}
		}
	}
	for _, s := range got {
		if !w[s] {
			if bad++; bad <= 10 {
				t.Errorf("%s: unexpected %s", what, s)
			}
		}
	}
	if bad > 0 || len(got) != len(want) {
		t.Fatalf("%s: %d sessions, want %d (%d differ)", what, len(got), len(want), bad)
	}
}

// runToTheEnd runs a processor of app until the topic is drained and
// every session delivered.
func runToTheEnd(ctx context.Context, t *testing.T, app *sessionsApp, k *kafkaEnv, clicks []click) {
	t.Helper()
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	p := app.processor(t, k.brokers)
	errc := make(chan error, 1)
	go func() { errc <- p.Run(pctx) }()
	k.waitDrained(ctx, t, app.c, "g", errc)
	app.closeAll(ctx, t, k.partitions, clicks)
	app.waitAllDelivered(ctx, t, errc)
	stop()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestWindowReplayFromACheckpointEmitsEverySessionOnce is the issue's
// Replay: clicks go through the Kafka processor into session windows, and
// the application records every closed session it receives in the
// transaction that acknowledges it. One run has no crash. In the other, a
// checkpoint is taken mid-stream, the processor goes on past it, and every
// stated process is killed with SIGKILL and its data dir wiped; `stated
// restore` rebuilds the state from the bucket, and a new processor
// replays Kafka from the checkpoint's offsets, delivering first the
// emissions the checkpoint held unacknowledged. The sessions the
// application ends with (user, bounds, clicks) equal the run without a
// crash, which equals a reference sessionizer's, and none was received
// twice.
func TestWindowReplayFromACheckpointEmitsEverySessionOnce(t *testing.T) {
	t.Parallel()
	skipLong(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r := testRand(t)
	clicks := genClicks(r, 30_000, 60, replayGap, replayOutOfOrder)
	want := sessionize(clicks, replayGap)
	t.Logf("%d clicks of 60 users: %d sessions", len(clicks), len(want))

	// The run without a crash, on a daemon of its own.
	k0 := newKafka(t, "clicks", 4)
	k0.produceClicks(ctx, t, clicks)
	d := daemontest.Start(t)
	app0 := &sessionsApp{c: sdkDial(ctx, t, "unix://"+d.SocketPath()), topic: k0.topic}
	app0.define(ctx, t)
	runToTheEnd(ctx, t, app0, k0, clicks)
	clean := app0.received(ctx, t)
	diffSessions(t, "the run without a crash against the reference", clean, want)

	// The run with a crash.
	k := newKafka(t, "clicks", 4)
	k.produceClicks(ctx, t, clicks)
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	nodes := startCluster(ctx, t, 3, "--checkpoint-url", bucket, "--checkpoint-interval", "1s")
	app := &sessionsApp{c: sdkDial(ctx, t, addrs(nodes)), topic: k.topic}
	app.define(ctx, t)
	pctx, stop := context.WithCancel(ctx)
	p := app.processor(t, k.brokers)
	errc := make(chan error, 1)
	go func() { errc <- p.Run(pctx) }()

	// Wait for a checkpoint that holds part of the stream and some
	// received sessions, then let the processor go on past it.
	conn := nodes[0].dial()
	defer conn.Close()
	cps := statedv1.NewCheckpointsClient(conn)
	var ckpt uint64
	var ckptRecords int64
	for deadline := time.Now().Add(time.Minute); ckpt == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint with offsets and received sessions within a minute")
		}
		list, err := cps.List(ctx, &statedv1.ListCheckpointsRequest{})
		if err == nil && len(list.GetCheckpoints()) > 0 {
			last := list.GetCheckpoints()[len(list.GetCheckpoints())-1]
			m, err := cps.Get(ctx, &statedv1.GetCheckpointRequest{Epoch: last.GetEpoch()})
			if err == nil {
				var n int64
				for _, o := range m.GetOffsets() {
					n += o.GetOffset()
				}
				if n >= int64(len(clicks))/4 && app.calls.Load() > 0 {
					ckpt, ckptRecords = last.GetEpoch(), n
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	for {
		n, err := k.committedRecords(ctx, app.c, "g")
		if err != nil {
			t.Fatal(err)
		}
		if n >= ckptRecords+int64(len(clicks))/4 || n == int64(len(clicks)) {
			break
		}
		select {
		case err := <-errc:
			t.Fatalf("processor stopped: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	stop()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	before := app.received(ctx, t)
	t.Logf("checkpoint %d holds %d of %d clicks; %d sessions received when every node was killed", ckpt, ckptRecords, len(clicks), len(before))
	app.c.Close()

	// Every stated process dies, with its disk.
	for _, n := range nodes {
		n.kill()
		if err := os.RemoveAll(n.dataDir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(n.dataDir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.CommandContext(ctx, statedBinary(t), "recovery", "--from", bucket, "--no-verify").CombinedOutput()
	if err != nil {
		t.Fatalf("stated recovery: %v\n%s", err, out)
	}
	t.Logf("stated recovery:\n%s", out)
	windowsLine := regexp.MustCompile(`(?m)^window namespaces: 1;.*\n\s+NAMESPACE.*\n\s+sessions\s+\S+\s+\d+\s+\d+\s*$`)
	if !windowsLine.Match(out) {
		t.Fatalf("the recovery report does not list the window namespace sessions:\n%s", out)
	}
	out, err = exec.CommandContext(ctx, statedBinary(t), "restore", "--from", bucket, "--data-dir", nodes[0].dataDir).CombinedOutput()
	if err != nil {
		t.Fatalf("stated restore: %v\n%s", err, out)
	}
	if !windowsLine.Match(out) {
		t.Fatalf("the restore does not list the window namespace sessions:\n%s", out)
	}
	for _, n := range nodes {
		n.start(ctx)
	}
	app = &sessionsApp{c: sdkDial(ctx, t, addrs(nodes)), topic: k.topic}
	restored := app.received(ctx, t)
	if len(restored) > len(before) {
		t.Fatalf("the restored state holds %d received sessions, more than the %d received before the loss", len(restored), len(before))
	}
	app.define(ctx, t) // as the application does at every start: a no-op
	runToTheEnd(ctx, t, app, k, clicks)
	got := app.received(ctx, t)
	diffSessions(t, "the run with a crash against the run without", got, clean)
	t.Logf("%d sessions received before the loss, %d restored, %d at the end: each once, as without a crash", len(before), len(restored), len(got))
}
