package test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/sdk/go/kafka"
)

// logRecorder is a slog.Handler that keeps every record's level, message
// and attributes, for tests that check what a component logged.
type logRecorder struct {
	mu      sync.Mutex
	records []loggedRecord
}

type loggedRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	lr := loggedRecord{level: rec.Level, msg: rec.Message, attrs: map[string]string{}}
	rec.Attrs(func(a slog.Attr) bool {
		lr.attrs[a.Key] = a.Value.String()
		return true
	})
	r.mu.Lock()
	r.records = append(r.records, lr)
	r.mu.Unlock()
	return nil
}

// find returns the records with msg whose attributes include attrs.
func (r *logRecorder) find(msg string, attrs map[string]string) []loggedRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []loggedRecord
	for _, lr := range r.records {
		if lr.msg != msg {
			continue
		}
		match := true
		for k, v := range attrs {
			if lr.attrs[k] != v {
				match = false
			}
		}
		if match {
			out = append(out, lr)
		}
	}
	return out
}

// cutProxy forwards TCP connections to a target until it is cut: then it
// drops every connection, open and new, until it is mended. It stands for
// a stated that is unreachable.
type cutProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.setCut(true)
	})
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.mu.Unlock()
		go p.forward(c)
	}
}

func (p *cutProxy) forward(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// setCut cuts (closing every open connection) or mends the proxy.
func (p *cutProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
	}
}

// startWatchedProcessor is startProcessor that also returns the
// Processor, for its Stats.
func startWatchedProcessor(ctx context.Context, t *testing.T, cfg kafka.Config) (*kafka.Processor, <-chan error) {
	t.Helper()
	p, err := kafka.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	return p, errc
}

func waitingOn(s kafka.Stats, kind kafka.WaitKind) (kafka.Wait, bool) {
	for _, w := range s.Waiting {
		if w.Kind == kind {
			return w, true
		}
	}
	return kafka.Wait{}, false
}

func waitKinds(s kafka.Stats) []kafka.WaitKind {
	var out []kafka.WaitKind
	for _, w := range s.Waiting {
		out = append(out, w.Kind)
	}
	return out
}

// TestKafkaProcessorReportsAStatedOutage: while stated cannot be reached,
// the processor's commit is retried, and the processor says so, in Stats
// and in a warning at every WaitLogInterval, as a wait on stated (not on
// Kafka). When stated is back the commit goes through, the processor says
// the wait ended, and every count is exact.
func TestKafkaProcessorReportsAStatedOutage(t *testing.T) {
	t.Parallel()
	ctx := kafkaTestContext(t)
	d := daemontest.Start(t)
	proxy := newCutProxy(t, d.TCPAddr())
	k := newKafka(t, "events", 2)
	k.produce(ctx, t, 1000, 17)
	c := sdkDial(ctx, t, proxy.addr())
	logs := &logRecorder{}
	cfg := k.countingConfig(c, "g", "counts")
	cfg.Logger = slog.New(logs)
	cfg.WaitLogInterval = 200 * time.Millisecond
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p, errc := startWatchedProcessor(pctx, t, cfg)
	k.waitDrained(ctx, t, c, "g", errc)

	// The processor is stuck on stated, committing the new records or,
	// if its Kafka commit interval came first, reading the checkpointed
	// offsets it commits to Kafka.
	proxy.setCut(true)
	committed := p.Stats().Records
	k.produce(ctx, t, 500, 17)
	var stuck kafka.Wait
	eventually(t, 30*time.Second, "the processor reports waiting on stated, in Stats and in its log", func() bool {
		w, ok := p.Stats().Oldest()
		stuck = w
		return ok && !w.Kind.OnKafka() && len(logs.find("kafka: processor waiting", map[string]string{"waiting_on": string(w.Kind), "side": "stated"})) >= 2
	})
	t.Logf("waiting on %s: %s", stuck.Kind, stuck.Detail)
	for _, w := range p.Stats().Waiting {
		if w.Kind.OnKafka() {
			t.Errorf("stated is down, Kafka is not, yet the processor waits on %s (%s)", w.Kind, w.Detail)
		}
	}

	proxy.setCut(false)
	k.waitDrained(ctx, t, c, "g", errc)
	eventually(t, 30*time.Second, "the processor logs that the commit no longer waits", func() bool {
		return len(logs.find("kafka: processor no longer waiting", map[string]string{"waiting_on": string(stuck.Kind), "side": "stated"})) > 0
	})
	if s := p.Stats(); s.Records < committed+500 {
		t.Errorf("after the outage: %d records committed (before the new 500: %d); want all", s.Records, committed)
	}
	// The group may have rebalanced over the outage (the member's commit
	// hung as long as stated was cut off; seen with both partitions
	// revoked and not yet assigned again on the loaded race pass): the
	// processor owns them again once it settles.
	eventually(t, 30*time.Second, "the processor owns both partitions again", func() bool { return p.Stats().Owned == 2 })
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	k.checkCounts(ctx, t, c, "counts")
}

// TestKafkaProcessorReportsAStalledGroup: a member that joined the group
// and went silent (a process frozen, or a ghost of a broker bug) holds up
// the rebalance that admits the processor. The processor says it waits on
// the Kafka group, in Stats and in its log, naming the JoinGroup in
// flight; once the silent member leaves, it is assigned the partitions,
// says the wait ended, and counts every record.
func TestKafkaProcessorReportsAStalledGroup(t *testing.T) {
	t.Parallel()
	ctx := kafkaTestContext(t)
	d := daemontest.Start(t)
	k := newKafka(t, "events", 2)
	k.produce(ctx, t, 1000, 17)

	// The silent member, on franz-go's default protocol, with a session
	// and rebalance timeout longer than the test.
	g := &rawGroup{t: t, brokers: k.brokers, name: "g"}
	g.admin = g.client()
	silent := g.member(2*time.Minute, 2*time.Minute)
	silent.protocol = "cooperative-sticky"
	silent.topic = k.topic
	g.stable(ctx, silent)

	c := sdkDial(ctx, t, d.SocketPath())
	logs := &logRecorder{}
	cfg := k.countingConfig(c, "g", "counts")
	cfg.Logger = slog.New(logs)
	cfg.WaitLogInterval = 200 * time.Millisecond
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p, errc := startWatchedProcessor(pctx, t, cfg)

	eventually(t, 30*time.Second, "the processor reports waiting on the Kafka group, in Stats and in its log", func() bool {
		w, ok := waitingOn(p.Stats(), kafka.WaitKafkaGroup)
		return ok && strings.Contains(w.Detail, "JoinGroup sent") &&
			len(logs.find("kafka: processor waiting", map[string]string{"waiting_on": "kafka_group", "side": "kafka"})) >= 2
	})
	s := p.Stats()
	if kinds := waitKinds(s); !slices.Equal(kinds, []kafka.WaitKind{kafka.WaitKafkaGroup}) {
		t.Errorf("waits %v, want only %s", kinds, kafka.WaitKafkaGroup)
	}
	if s.Owned != 0 || s.Records != 0 || s.Assignments != 0 {
		t.Errorf("stats %+v: nothing may be assigned or committed yet", s)
	}

	leave := kmsg.NewPtrLeaveGroupRequest()
	leave.Group = g.name
	leave.Members = []kmsg.LeaveGroupRequestMember{{MemberID: silent.id}}
	resp, err := leave.RequestWith(ctx, silent.cl)
	if err == nil {
		err = kerr.ErrorForCode(resp.Members[0].ErrorCode)
	}
	if err != nil {
		t.Fatalf("silent member: LeaveGroup: %v", err)
	}
	k.waitDrained(ctx, t, c, "g", errc)
	eventually(t, 30*time.Second, "the processor logs that it no longer waits on the group", func() bool {
		return len(logs.find("kafka: processor no longer waiting", map[string]string{"waiting_on": "kafka_group"})) > 0
	})
	if s := p.Stats(); s.Assignments == 0 || s.Owned != 2 {
		t.Errorf("after the silent member left: %d assignments, %d partitions owned; want some and 2", s.Assignments, s.Owned)
	}
	cancel()
	if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	k.checkCounts(ctx, t, c, "counts")
}
