// Command sessionizer turns a click stream into user sessions, exactly
// once, with its windows, offsets and output in stated.
//
// Each Kafka record is a click: its key is the user, its timestamp the
// click's event time. The stated SDK's franz-go processor (sdk/go/kafka)
// adds every click to a session window namespace (a 30-minute gap by
// default), with the click's partition as its watermark source, in the
// same stated transaction as the partition's next offset. stated closes a
// user's session once every partition's watermark has passed its last
// click plus the gap and the grace, and hands it to the processor's
// OnWindowClosed callback, which prints it and records it in stated in a
// transaction that also acknowledges it. Kill the sessionizer at any
// point and start it again: every session is recorded once, and one the
// crash left unacknowledged is delivered again.
//
// Against a running Kafka and stated:
//
//	go run ./examples/sessionizer --brokers localhost:9092 --stated ./stated-data/stated.sock --topic clicks
//
// With no --brokers it starts an in-process Kafka (franz-go's kfake),
// produces --demo-records generated clicks of --demo-users users to a
// 4-partition topic (the same ones for the same --seed), sessionizes
// them, closes the last sessions by advancing the watermark past the end
// of the demo stream, and prints a summary (a stated daemon must still be
// running):
//
//	go run ./cmd/stated run &
//	go run ./examples/sessionizer --demo-records 2000 --seed 7
//
// Each session is printed when it closes: the user, its first and last
// click, and its clicks. Printing is an effect outside stated, so a
// session whose acknowledgement a crash cut off is printed again when it is
// delivered again; what the callback records in stated (the namespace's
// keyed state: a map of each user's sessions by start, and the counters
// "sessions" and "clicks") is recorded once.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	stated "github.com/statedhq/stated/sdk/go"
	"github.com/statedhq/stated/sdk/go/kafka"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sessionizer:", err)
		os.Exit(1)
	}
}

// config is the sessionizer's flags.
type config struct {
	brokers, addr, group, topic, ns, clientID string
	dialTimeout                               time.Duration
	gap, grace, outOfOrder, idleTimeout       time.Duration
	demoRecords, demoUsers, maxPoll           int
	seed                                      uint64
	sessionTimeout, rebalanceTimeout, waitLog time.Duration
	verbose                                   bool
}

func parseFlags() *config {
	c := &config{}
	flag.StringVar(&c.brokers, "brokers", "", "comma-separated Kafka brokers; empty starts an in-process kfake cluster with generated demo clicks")
	flag.StringVar(&c.addr, "stated", "./stated-data/stated.sock", "stated daemon address(es), comma-separated: a unix socket path or host:port")
	flag.DurationVar(&c.dialTimeout, "dial-timeout", 30*time.Second, "how long to wait at start for stated to answer")
	flag.StringVar(&c.group, "group", "sessionizer", "Kafka consumer group")
	flag.StringVar(&c.topic, "topic", "clicks", "topic of clicks: key = user, timestamp = the click's event time")
	flag.StringVar(&c.ns, "namespace", "sessions", "stated window namespace of the sessions, and keyed-state namespace of the recorded sessions")
	flag.StringVar(&c.clientID, "client-id", "", "stated client id (default: random)")
	flag.DurationVar(&c.gap, "gap", 30*time.Minute, "inactivity that ends a session")
	flag.DurationVar(&c.grace, "grace", 0, "how long after its end a session still accepts late clicks")
	flag.DurationVar(&c.outOfOrder, "max-out-of-order", 10*time.Second, "how far a partition's clicks may arrive out of event-time order")
	flag.DurationVar(&c.idleTimeout, "idle-timeout", 0, "a partition silent this long stops holding the sessions open (0: stated's default, 1m)")
	flag.IntVar(&c.demoRecords, "demo-records", 2000, "clicks to produce when --brokers is empty")
	flag.IntVar(&c.demoUsers, "demo-users", 40, "users of the demo clicks")
	flag.Uint64Var(&c.seed, "seed", 1, "seed of the demo clicks: the same seed gives the same clicks and sessions")
	flag.IntVar(&c.maxPoll, "max-poll-records", 0, "records per poll and per stated commit (0: the helper's default)")
	flag.DurationVar(&c.sessionTimeout, "session-timeout", 0, "Kafka group session timeout: how soon a crashed member's partitions move (0: franz-go's 45s)")
	flag.DurationVar(&c.rebalanceTimeout, "rebalance-timeout", 0, "Kafka group rebalance timeout (0: the session timeout when --session-timeout is set, else franz-go's 60s); keep it at or below the session timeout")
	flag.DurationVar(&c.waitLog, "wait-log-interval", 0, "warn when the processor waits this long on the Kafka group or on stated, and again at this interval (0: 10s; negative: never)")
	flag.BoolVar(&c.verbose, "v", false, "log the helper's decisions")
	flag.Parse()
	return c
}

func run() error {
	cfg := parseFlags()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	level := slog.LevelWarn
	if cfg.verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	kopts, err := groupTimeouts(logger, cfg.sessionTimeout, cfg.rebalanceTimeout)
	if err != nil {
		return err
	}
	if cfg.demoUsers < 1 {
		return fmt.Errorf("--demo-users: %d, want at least 1", cfg.demoUsers)
	}
	if cfg.demoRecords < 0 {
		return fmt.Errorf("--demo-records: negative (%d)", cfg.demoRecords)
	}

	var demo *demoStream
	if cfg.brokers == "" {
		// Each demo run has a fresh topic, so it sessionizes into a fresh
		// group and namespace unless told otherwise.
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		run := time.Now().UTC().Format("20060102-150405.000")
		if !set["group"] {
			cfg.group += "-demo-" + run
		}
		if !set["namespace"] {
			cfg.ns += "-demo-" + run
		}
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, cfg.topic))
		if err != nil {
			return fmt.Errorf("start kfake: %w", err)
		}
		defer cluster.Close()
		cfg.brokers = strings.Join(cluster.ListenAddrs(), ",")
		clicks := demoClicks(cfg.seed, cfg.demoRecords, cfg.demoUsers, cfg.gap, cfg.outOfOrder)
		if demo, err = produceDemo(ctx, cfg.brokers, cfg.topic, clicks); err != nil {
			return err
		}
		fmt.Printf("kfake on %s: produced %d clicks of %d users to %q (seed %d); sessionizing as group %q into namespace %q\n",
			cfg.brokers, len(clicks), cfg.demoUsers, cfg.topic, cfg.seed, cfg.group, cfg.ns)
	}

	// stated may come up after the sessionizer (a sidecar in the same
	// pod, or `stated run &` a moment earlier): wait for it, within
	// --dial-timeout.
	opts := []stated.Option{stated.WithWaitForDaemon(0)}
	if cfg.clientID != "" {
		opts = append(opts, stated.WithClientID(cfg.clientID))
	}
	dctx, dcancel := context.WithTimeout(ctx, cfg.dialTimeout)
	client, err := stated.Dial(dctx, cfg.addr, opts...)
	dcancel()
	if err != nil {
		return fmt.Errorf("dial stated at %s (waited up to --dial-timeout %s): %w", cfg.addr, cfg.dialTimeout, err)
	}
	defer client.Close()

	// Defining the namespace at every start is safe: the same spec is a
	// no-op, and a different one is refused naming the field that differs.
	spec := stated.WindowSpec{
		Namespace: cfg.ns, Shape: stated.Session, Gap: cfg.gap, Grace: cfg.grace,
		MaxOutOfOrder: cfg.outOfOrder, IdleTimeout: cfg.idleTimeout,
		Aggregate: stated.Count, Emit: stated.EmitFinal, Late: stated.LateDrop,
	}
	if err := client.DefineWindows(ctx, spec); err != nil {
		return fmt.Errorf("define window namespace %q: %w", cfg.ns, err)
	}

	kopts = append(kopts, kgo.SeedBrokers(strings.Split(cfg.brokers, ",")...))
	p, err := kafka.New(kafka.Config{
		State:           client,
		Group:           cfg.group,
		Topics:          []string{cfg.topic},
		KafkaOptions:    kopts,
		MaxPollRecords:  cfg.maxPoll,
		WaitLogInterval: cfg.waitLog,
		Logger:          logger,
		Handler: func(_ context.Context, txn *stated.Txn, r *kgo.Record) error {
			txn.AddWindow(cfg.ns, r.Key, r.Timestamp, stated.NoValue())
			return nil
		},
	})
	if err != nil {
		return err
	}
	sessions := stated.NewMap(client, cfg.ns, stated.String())
	totals := stated.NewCounter(client, cfg.ns)
	p.OnWindowClosed(cfg.ns, func(_ context.Context, txn *stated.Txn, ems []stated.Emission) error {
		for _, e := range ems {
			if e.Kind != stated.EmissionFinal {
				continue
			}
			last := e.End.Add(-time.Millisecond) // a session's End is its last click + 1ms
			fmt.Printf("session %s\t%s\t%s\t%s\t%s\n", e.Key, e.Start.UTC().Format(time.RFC3339),
				last.UTC().Format(time.RFC3339), last.Sub(e.Start), plural(e.Count, "click"))
			sessions.In(txn).Put(string(e.Key), sessionKey(e.Start), sessionValue(last, e.Count))
			totals.In(txn).Add("sessions", 1)
			totals.In(txn).Add("clicks", e.Count)
		}
		return nil
	})
	if demo == nil {
		return p.Run(ctx)
	}

	// Demo: run until stated's offsets reach the end of every partition,
	// then tell stated the stream has ended (each partition's watermark
	// moves past the last session's close), wait until every session has
	// been delivered, and summarize.
	// The summary is this run's: a namespace given with --namespace may
	// hold an earlier run's sessions, counts and late clicks.
	n0, clicks0, late0, err := demoTotals(ctx, client, totals, cfg.ns)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- p.Run(runCtx) }()
	if err := waitDrained(ctx, client, cfg.group, cfg.topic, demo.ends, errc); err != nil {
		return err
	}
	end := demo.last.Add(cfg.gap + cfg.grace)
	txn := client.Txn()
	for part := range demo.ends {
		txn.AdvanceWatermark(cfg.ns, cfg.topic+"/"+strconv.Itoa(int(part)), end)
	}
	if _, err := txn.Commit(ctx); err != nil {
		return fmt.Errorf("advance the watermark past the demo's end: %w", err)
	}
	if _, err := waitDelivered(ctx, client, cfg.ns, errc); err != nil {
		return err
	}
	cancel()
	if err := <-errc; err != nil {
		return err
	}
	n, clicks, late, err := demoTotals(ctx, client, totals, cfg.ns)
	if err != nil {
		return err
	}
	n, clicks, late = n-n0, clicks-clicks0, late-late0
	fmt.Printf("summary: %d sessions of %d users, %d of %d clicks in sessions, %d late clicks dropped\n",
		n, demo.users, clicks, demo.clicks, late)
	if n > 0 {
		fmt.Printf("summary: %.1f clicks per session on average\n", float64(clicks)/float64(n))
	}
	return nil
}

// demoTotals reads the sessions and clicks the namespace's callback has
// counted and the clicks it dropped as late.
func demoTotals(ctx context.Context, client *stated.Client, totals *stated.Counter, ns string) (sessions, clicks, late int64, err error) {
	linearizable := stated.WithConsistency(stated.ConsistencyLinearizable)
	if sessions, err = totals.Get(ctx, "sessions", linearizable); err != nil {
		return 0, 0, 0, err
	}
	if clicks, err = totals.Get(ctx, "clicks", linearizable); err != nil {
		return 0, 0, 0, err
	}
	all, err := client.WindowStatus(ctx, linearizable)
	if err != nil {
		return 0, 0, 0, err
	}
	for _, s := range all {
		if s.Spec.Namespace == ns {
			return sessions, clicks, int64(s.LateDropped), nil
		}
	}
	return 0, 0, 0, fmt.Errorf("window namespace %q is gone", ns)
}

func plural(n int64, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// sessionKey is the map sub-key of a session: its start, so that a
// user's sessions scan in time order.
func sessionKey(start time.Time) string { return start.UTC().Format(time.RFC3339Nano) }

func sessionValue(last time.Time, clicks int64) string {
	return fmt.Sprintf("last=%s clicks=%d", last.UTC().Format(time.RFC3339Nano), clicks)
}

// groupTimeouts returns the franz-go options for the group's session and
// rebalance timeouts. A member does not heartbeat while it joins the
// group, so a short session timeout needs a rebalance timeout no longer
// than it; see examples/counter for the whole story.
func groupTimeouts(logger *slog.Logger, session, rebalance time.Duration) ([]kgo.Opt, error) {
	switch {
	case session < 0:
		return nil, fmt.Errorf("--session-timeout: negative (%s)", session)
	case rebalance < 0:
		return nil, fmt.Errorf("--rebalance-timeout: negative (%s)", rebalance)
	}
	var opts []kgo.Opt
	if session > 0 {
		opts = append(opts, kgo.SessionTimeout(session), kgo.HeartbeatInterval(session/5))
		if rebalance == 0 {
			rebalance = session
		}
	}
	if rebalance > 0 {
		opts = append(opts, kgo.RebalanceTimeout(rebalance))
	}
	if session > 0 && rebalance > session {
		logger.Warn("sessionizer: --rebalance-timeout is longer than --session-timeout; members do not heartbeat while they join, so a long rebalance can expire them mid-join on some brokers",
			"session_timeout", session, "rebalance_timeout", rebalance)
	}
	return opts, nil
}

// click is one generated click.
type click struct {
	user string
	at   time.Time
}

// demoStart is when the demo's clicks begin.
var demoStart = time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)

// demoClicks generates n clicks of users users, the same for the same
// seed, in the order they are produced. Each user clicks in bursts:
// clicks a few seconds to a few minutes apart, bursts further apart than
// a gap or (now and then) a little less, which joins them into one
// session. They are produced in event-time order, except that a click may
// come after later ones by up to half of outOfOrder: never late, so every
// click lands in a session.
func demoClicks(seed uint64, n, users int, gap, outOfOrder time.Duration) []click {
	r := rand.New(rand.NewPCG(seed, 0x5e55))
	next := make([]time.Time, users)
	for u := range next {
		next[u] = demoStart.Add(time.Duration(r.Int64N(int64(2 * time.Hour))))
	}
	type produced struct {
		click
		order time.Time
	}
	out := make([]produced, 0, n)
	for range n {
		u := r.IntN(users)
		c := click{user: fmt.Sprintf("user-%03d", u), at: next[u]}
		jitter := time.Duration(0)
		if outOfOrder > 1 {
			jitter = time.Duration(r.Int64N(int64(outOfOrder / 2)))
		}
		out = append(out, produced{c, c.at.Add(jitter)})
		switch x := r.IntN(20); {
		case x == 0: // the burst ends: the next one starts after a gap
			next[u] = next[u].Add(gap + time.Duration(r.Int64N(int64(3*time.Hour))))
		case x == 1: // a pause just short of a gap: the session goes on
			next[u] = next[u].Add(gap * 9 / 10)
		default:
			next[u] = next[u].Add(time.Duration(1+r.Int64N(180)) * time.Second)
		}
	}
	slices.SortStableFunc(out, func(a, b produced) int { return a.order.Compare(b.order) })
	clicks := make([]click, len(out))
	for i, p := range out {
		clicks[i] = p.click
	}
	return clicks
}

// demoStream is what produceDemo wrote.
type demoStream struct {
	ends   map[int32]int64 // each partition's end offset
	last   time.Time       // the latest click
	clicks int
	users  int
}

// produceDemo writes the clicks, keyed by user, with their event times
// as the records' timestamps.
func produceDemo(ctx context.Context, brokers, topic string, clicks []click) (*demoStream, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	d := &demoStream{ends: map[int32]int64{}, clicks: len(clicks)}
	users := map[string]bool{}
	recs := make([]*kgo.Record, len(clicks))
	for i, c := range clicks {
		recs[i] = &kgo.Record{Key: []byte(c.user), Value: []byte("click"), Timestamp: c.at}
		if c.at.After(d.last) {
			d.last = c.at
		}
		users[c.user] = true
	}
	d.users = len(users)
	for _, r := range cl.ProduceSync(ctx, recs...) {
		if r.Err != nil {
			return nil, fmt.Errorf("produce: %w", r.Err)
		}
		d.ends[r.Record.Partition] = max(d.ends[r.Record.Partition], r.Record.Offset+1)
	}
	return d, nil
}

// waitDrained waits until stated's offsets of group reach the end of
// every partition.
func waitDrained(ctx context.Context, client *stated.Client, group, topic string, ends map[int32]int64, errc <-chan error) error {
	return poll(ctx, errc, "processor stopped before the topic was drained", func() (bool, error) {
		offs, err := client.GetOffsets(ctx, group)
		if err != nil {
			return false, err
		}
		done := 0
		for _, o := range offs {
			if o.Topic == topic && o.Offset >= ends[o.Partition] {
				done++
			}
		}
		return done == len(ends), nil
	})
}

// waitDelivered waits until the namespace has no open session and no
// emission left to acknowledge, and returns its status.
func waitDelivered(ctx context.Context, client *stated.Client, ns string, errc <-chan error) (stated.WindowStatus, error) {
	var st stated.WindowStatus
	err := poll(ctx, errc, "processor stopped before every session was delivered", func() (bool, error) {
		all, err := client.WindowStatus(ctx)
		if err != nil {
			return false, err
		}
		for _, s := range all {
			if s.Spec.Namespace == ns {
				st = s
				return s.OpenWindows == 0 && s.Pending == 0, nil
			}
		}
		return false, fmt.Errorf("window namespace %q is gone", ns)
	})
	return st, err
}

// poll calls done every 50ms until it reports true, fails, or the
// processor stops.
func poll(ctx context.Context, errc <-chan error, stopped string, done func() (bool, error)) error {
	for {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		select {
		case err := <-errc:
			if err == nil {
				err = errors.New(stopped)
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
