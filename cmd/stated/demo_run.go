package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

// demo is one run of `stated demo`: what it started and what it produced.
type demo struct {
	o      demoOptions
	dir    string
	bucket string // the checkpoint bucket's URL
	out    io.Writer
	start  time.Time
	procs  *children

	kafka    *kfake.Cluster
	brokers  string
	producer *kgo.Client
	admin    *kadm.Client

	nodes     []*demoNode
	monitor   *stated.Client // the demo's own reads, through every node
	processor *child

	produced int
	expected map[string]int64 // records produced per key
	ends     map[int32]int64  // end offset per partition
}

// demoNode is one stated node: its flags, its process and a client of it
// alone.
type demoNode struct {
	id, dataDir, socket, grpcAddr, raftAddr string
	args                                    []string
	proc                                    *child
	client                                  *stated.Client
}

func newDemo(o demoOptions, dir, bin string, stdout, stderr io.Writer) *demo {
	return &demo{
		o: o, dir: dir, out: stdout, start: time.Now(),
		bucket:   (&url.URL{Scheme: "file", Path: filepath.Join(dir, "bucket")}).String(),
		procs:    newChildren(bin, filepath.Join(dir, "logs"), o.verbose, stderr),
		expected: map[string]int64{},
		ends:     map[int32]int64{},
	}
}

// say prints one line of what happens, with the time since the start.
func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "%5.1fs  %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

// sayBlock prints a command a user would type and what it printed.
func (d *demo) sayBlock(args []string, output string) {
	d.say("$ stated %s", strings.Join(args, " "))
	for line := range strings.Lines(strings.TrimRight(output, "\n")) {
		fmt.Fprintf(d.out, "        %s", line)
		if !strings.HasSuffix(line, "\n") {
			fmt.Fprintln(d.out)
		}
	}
}

func (d *demo) port(i int) int { return d.o.basePort + i }

func (d *demo) addr(i int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(d.port(i))) }

// run runs every step; the caller cleans up.
func (d *demo) run(ctx context.Context) error {
	if d.o.keep || d.o.dir != "" {
		d.say("stated demo: everything on 127.0.0.1, files in %s", d.dir)
	} else {
		d.say("stated demo: everything on 127.0.0.1, files in %s (removed at the end; --keep keeps them)", d.dir)
	}
	if err := d.startKafka(); err != nil {
		return err
	}
	if err := d.startCluster(ctx); err != nil {
		return err
	}
	if err := d.nodeAndProcessorCrash(ctx); err != nil {
		return err
	}
	if err := d.totalLoss(ctx); err != nil {
		return err
	}
	if err := d.shutdown(); err != nil {
		return err
	}
	d.say("demo passed in %s: %d records over %d keys counted exactly once through a leader and processor crash and the loss of every node",
		time.Since(d.start).Round(100*time.Millisecond), d.produced, len(d.expected))
	return nil
}

// startKafka starts kfake in this process with the demo's topic.
func (d *demo) startKafka() error {
	kport := d.port(demoPorts - 1)
	cl, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(kport), kfake.SeedTopics(demoPartitions, demoTopic),
		kfake.GroupMinSessionTimeout(200*time.Millisecond))
	if err != nil {
		if strings.Contains(err.Error(), "address already in use") {
			return busyPortError(kport, d.o.basePort, err)
		}
		return fmt.Errorf("start kfake: %w", err)
	}
	d.kafka = cl
	d.brokers = strings.Join(cl.ListenAddrs(), ",")
	if d.producer, err = kgo.NewClient(kgo.SeedBrokers(cl.ListenAddrs()...), kgo.DefaultProduceTopic(demoTopic)); err != nil {
		return fmt.Errorf("kafka producer: %w", err)
	}
	d.admin = kadm.NewClient(d.producer)
	d.say("kafka (kfake, in this process) on %s: topic %q with %d partitions", d.brokers, demoTopic, demoPartitions)
	return nil
}

// startCluster starts n1 (which bootstraps), then n2 and n3 (which join
// it), and waits for three members with a leader.
func (d *demo) startCluster(ctx context.Context) error {
	var grpcAddrs []string
	for i := range demoNodes {
		id := fmt.Sprintf("n%d", i+1)
		n := &demoNode{id: id, dataDir: filepath.Join(d.dir, id), socket: demoSocket(d.dir, id),
			grpcAddr: d.addr(2 * i), raftAddr: d.addr(2*i + 1)}
		n.args = []string{"run", "--node-id", id, "--data-dir", n.dataDir, "--socket", n.socket,
			"--grpc-addr", n.grpcAddr, "--raft-addr", n.raftAddr,
			"--checkpoint-url", d.bucket, "--checkpoint-interval", "2s", "--kafka-brokers", d.brokers}
		if i > 0 {
			n.args = append(n.args, "--join", d.nodes[0].grpcAddr)
		}
		c, err := stated.Dial(ctx, n.grpcAddr, stated.WithLazySession())
		if err != nil {
			return err
		}
		n.client = c
		d.nodes = append(d.nodes, n)
		grpcAddrs = append(grpcAddrs, n.grpcAddr)
	}
	mon, err := stated.Dial(ctx, strings.Join(grpcAddrs, ","), stated.WithLazySession())
	if err != nil {
		return err
	}
	d.monitor = mon
	for i, n := range d.nodes {
		how := "bootstraps the cluster"
		if i > 0 {
			how = "joins n1"
		}
		if err := d.startNode(ctx, n); err != nil {
			return err
		}
		d.say("%s up (%s): gRPC %s, Raft %s", n.id, how, n.grpcAddr, n.raftAddr)
	}
	leader, err := d.waitMembers(ctx)
	if err != nil {
		return err
	}
	d.say("cluster up: 3 members, leader %s; checkpoints every 2s to %s", leader, d.bucket)
	return nil
}

// startNode starts n's process and waits until it serves.
func (d *demo) startNode(ctx context.Context, n *demoNode) error {
	p, err := d.procs.start(n.id, n.args...)
	if err != nil {
		return err
	}
	n.proc = p
	health := healthpb.NewHealthClient(n.client.Conn())
	return d.waitFor(ctx, fmt.Sprintf("%s to serve gRPC on %s", n.id, n.grpcAddr), 30*time.Second, func(ctx context.Context) (bool, error) {
		if p.exited() {
			return false, fatal(d.exitedError(p))
		}
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING, err
	})
}

// exitedError says that a child exited when it should not have, and why
// if its log tells.
func (d *demo) exitedError(p *child) error {
	if p.logged("address already in use") {
		for i := range demoPorts {
			if p.logged(d.addr(i) + ": bind: address already in use") {
				return busyPortError(d.port(i), d.o.basePort, errors.New("address already in use"))
			}
		}
		return fmt.Errorf("%s exited: an address it needs is in use; pick other ports with --base-port (log %s)", p.name, p.log)
	}
	if tail := p.tail(5); tail != "" {
		return fmt.Errorf("%s exited (%v); the end of its log %s:\n%s", p.name, p.err, p.log, tail)
	}
	return fmt.Errorf("%s exited: %v", p.name, p.err)
}

// waitMembers waits until the cluster has three voters and a leader, and
// returns the leader's id.
func (d *demo) waitMembers(ctx context.Context) (string, error) {
	var leader string
	err := d.waitFor(ctx, "3 members with a leader", 30*time.Second, func(ctx context.Context) (bool, error) {
		m, err := d.monitor.Members(ctx)
		if err != nil {
			return false, err
		}
		voters := 0
		for _, mb := range m.Members {
			if mb.Voter {
				voters++
			}
		}
		leader = m.LeaderID
		return voters == demoNodes && leader != "", nil
	})
	return leader, err
}

// leader returns the index of the live node that says it leads.
func (d *demo) leader(ctx context.Context) (int, error) {
	at := -1
	err := d.waitFor(ctx, "a leader", 30*time.Second, func(ctx context.Context) (bool, error) {
		for i, n := range d.nodes {
			if n.proc == nil || n.proc.exited() {
				continue
			}
			if st, err := n.client.NodeStatus(ctx); err == nil && st.Role == "leader" {
				at = i
				return true, nil
			}
		}
		return false, nil
	})
	return at, err
}

// startProcessor starts the counter as a child process.
func (d *demo) startProcessor() error {
	var socks []string
	for _, n := range d.nodes {
		socks = append(socks, n.socket)
	}
	args := []string{"demo", "processor", "--stated", strings.Join(socks, ","), "--brokers", d.brokers,
		"--topic", demoTopic, "--group", demoGroup, "--namespace", demoNamespace}
	if d.o.verbose {
		args = append(args, "-v")
	}
	p, err := d.procs.start("processor", args...)
	if err != nil {
		return err
	}
	d.processor = p
	return nil
}

// nodeAndProcessorCrash streams records in three bursts and SIGKILLs the
// leader and the processor in the middle of the stream; both restart and
// every count must come out exact.
func (d *demo) nodeAndProcessorCrash(ctx context.Context) error {
	if err := d.startProcessor(); err != nil {
		return err
	}
	d.say("processor started (pid %d): counts each key in namespace %q, committing counters and offsets together, group %q",
		d.processor.cmd.Process.Pid, demoNamespace, demoGroup)
	burst1 := d.o.records * 2 / 5
	burst2 := d.o.records * 3 / 10
	burst3 := d.o.records - burst1 - burst2
	if err := d.produce(ctx, burst1); err != nil {
		return err
	}
	d.say("produced %d records over %d keys (burst 1 of 3)", burst1, d.o.keys)

	at, err := d.waitCommitted(ctx, int64(burst1/2))
	if err != nil {
		return err
	}
	li, err := d.leader(ctx)
	if err != nil {
		return err
	}
	old := d.nodes[li]
	d.processor.cmd.Process.Kill()
	old.proc.cmd.Process.Kill()
	if err := errors.Join(d.processor.kill(), old.proc.kill()); err != nil {
		return err
	}
	killed := time.Now()
	d.say("killed %s (the leader) and the processor with SIGKILL, %d of %d records committed", old.id, at, d.produced)

	nl, err := d.leader(ctx)
	if err != nil {
		return err
	}
	d.say("%s leads after %s", d.nodes[nl].id, time.Since(killed).Round(100*time.Millisecond))
	if err := d.produce(ctx, burst2); err != nil {
		return err
	}
	d.say("produced %d records while the processor was down (burst 2 of 3)", burst2)

	if err := d.startNode(ctx, old); err != nil {
		return err
	}
	if err := d.waitCaughtUp(ctx, old, nl); err != nil {
		return err
	}
	if _, err := d.waitMembers(ctx); err != nil {
		return err
	}
	d.say("%s back and caught up; 3 members", old.id)
	if err := d.startProcessor(); err != nil {
		return err
	}
	d.say("processor restarted: it resumes from the offsets stored in stated")
	if err := d.produce(ctx, burst3); err != nil {
		return err
	}
	d.say("produced %d records (burst 3 of 3)", burst3)
	if err := d.waitDrained(ctx); err != nil {
		return err
	}
	d.say("processor caught up: stated's offsets are at the end of every partition (%d records)", d.produced)
	return d.checkCounts(ctx, "after the crash")
}

// waitCaughtUp waits until n has applied what the leader had committed
// when n came back.
func (d *demo) waitCaughtUp(ctx context.Context, n *demoNode, leader int) error {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	st, err := d.nodes[leader].client.NodeStatus(sctx)
	cancel()
	if err != nil {
		return fmt.Errorf("status of the leader %s: %w", d.nodes[leader].id, err)
	}
	return d.waitFor(ctx, fmt.Sprintf("%s to catch up to index %d", n.id, st.CommitIndex), 30*time.Second, func(ctx context.Context) (bool, error) {
		s, err := n.client.NodeStatus(ctx)
		return err == nil && s.AppliedIndex >= st.CommitIndex, err
	})
}

// totalLoss takes a checkpoint, produces more, kills every node and the
// processor, wipes every data dir, restores from the bucket as a user
// would, and lets the processor replay from the checkpoint's offsets.
func (d *demo) totalLoss(ctx context.Context) error {
	sum, err := d.checkpointNow(ctx)
	if err != nil {
		return err
	}
	d.say("checkpoint %d completed: %d keys, %d files, offsets at %d records, in %s", sum.GetEpoch(), sum.GetKeys(), sum.GetFiles(), d.produced, d.bucket)

	extra := max(d.o.records/4, 1)
	before := d.produced
	if err := d.produce(ctx, extra); err != nil {
		return err
	}
	d.say("produced %d more records", extra)
	at, err := d.waitCommitted(ctx, int64(before+extra/4))
	if err != nil {
		return err
	}
	if err := d.killEverything(); err != nil {
		return err
	}
	d.say("total loss: killed n1 n2 n3 and the processor with SIGKILL, at least %d of %d records committed", at, d.produced)
	if at == int64(d.produced) {
		d.say("(the processor had processed every record by then; Kafka replays what the checkpoint lacks all the same)")
	}
	for _, n := range d.nodes {
		if err := os.RemoveAll(n.dataDir); err != nil {
			return fmt.Errorf("wipe %s: %w", n.dataDir, err)
		}
	}
	d.say("wiped the data dirs of n1 n2 n3: what is left is the bucket, and Kafka")

	// A restore resets the group's offsets in Kafka, which Kafka accepts
	// once the group has no members: the killed processor leaves it when
	// its session times out.
	if err := d.waitGroupEmpty(ctx); err != nil {
		return err
	}
	replay, lost, err := d.recoveryReport(ctx)
	if err != nil {
		return err
	}
	if err := d.restoreCluster(ctx); err != nil {
		return err
	}
	restored, err := d.committed(ctx)
	if err != nil {
		return fmt.Errorf("read the restored offsets: %w", err)
	}
	if restored+replay != int64(d.produced) || lost != 0 {
		return fmt.Errorf("CHECK FAILED: the restored offsets cover %d records and the report says Kafka replays %d and %d are lost; %d were produced",
			restored, replay, lost, d.produced)
	}
	d.say("cluster restored: 3 members; offsets at %d records, the checkpoint's; the %d or more records processed after it were lost with the nodes, and Kafka replays %d",
		restored, max(at-restored, 0), replay)
	if err := d.startProcessor(); err != nil {
		return err
	}
	d.say("processor restarted: it replays from the checkpoint's offsets")
	if err := d.waitDrained(ctx); err != nil {
		return err
	}
	d.say("processor caught up: stated's offsets are at the end of every partition (%d records)", d.produced)
	return d.checkCounts(ctx, "after the restore")
}

// checkpointNow takes a checkpoint and waits until it is in the bucket.
func (d *demo) checkpointNow(ctx context.Context) (*statedv1.CheckpointSummary, error) {
	cps := statedv1.NewCheckpointsClient(d.monitor.Conn())
	var sum *statedv1.CheckpointSummary
	err := d.waitFor(ctx, "a checkpoint to complete", 30*time.Second, func(ctx context.Context) (bool, error) {
		tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		resp, err := cps.Trigger(tctx, &statedv1.TriggerCheckpointRequest{Wait: true})
		if err != nil {
			return false, err
		}
		sum = resp.GetSummary()
		return true, nil
	})
	return sum, err
}

// killEverything SIGKILLs the processor and every node at once.
func (d *demo) killEverything() error {
	all := []*child{d.processor}
	for _, n := range d.nodes {
		all = append(all, n.proc)
	}
	for _, c := range all {
		c.cmd.Process.Kill()
	}
	var errs []error
	for _, c := range all {
		errs = append(errs, c.kill())
	}
	return errors.Join(errs...)
}

// replayLine is the recovery report's summary of what Kafka replays.
var replayLine = regexp.MustCompile(`Kafka will replay (\d+) records; (\d+) records are lost`)

// recoveryReport runs `stated recovery` against the bucket and Kafka,
// prints it, and returns how many records it says Kafka replays and how
// many are lost.
func (d *demo) recoveryReport(ctx context.Context) (replay, lost int64, err error) {
	args := []string{"recovery", "--from", d.bucket, "--kafka-brokers", d.brokers}
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	report, err := d.procs.run(rctx, args...)
	d.sayBlock(args, report)
	if err != nil {
		return 0, 0, err
	}
	m := replayLine.FindStringSubmatch(report)
	if m == nil {
		return 0, 0, errors.New("the recovery report does not say what Kafka replays")
	}
	replay, _ = strconv.ParseInt(m[1], 10, 64)
	lost, _ = strconv.ParseInt(m[2], 10, 64)
	return replay, lost, nil
}

// restoreCluster restores n1 from the bucket with `stated restore`, as
// the README's total loss says, starts it, and starts n2 and n3 empty to
// join it (Raft sends them the state), then waits for three members.
func (d *demo) restoreCluster(ctx context.Context) error {
	n1 := d.nodes[0]
	args := []string{"restore", "--from", d.bucket, "--data-dir", n1.dataDir, "--node-id", n1.id,
		"--raft-addr", n1.raftAddr, "--kafka-brokers", d.brokers}
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	out, err := d.procs.run(rctx, args...)
	cancel()
	d.sayBlock(args, out)
	if err != nil {
		return err
	}
	for i, n := range d.nodes {
		how := "restored from the bucket"
		if i > 0 {
			how = "empty; joins n1 and gets the state from it"
		}
		if err := d.startNode(ctx, n); err != nil {
			return err
		}
		d.say("%s up (%s)", n.id, how)
	}
	_, err = d.waitMembers(ctx)
	return err
}

// waitGroupEmpty waits until the demo's consumer group has no members.
func (d *demo) waitGroupEmpty(ctx context.Context) error {
	return d.waitFor(ctx, fmt.Sprintf("Kafka to drop the killed processor from group %q (its session timeout)", demoGroup), 30*time.Second, func(ctx context.Context) (bool, error) {
		gs, err := d.admin.DescribeGroups(ctx, demoGroup)
		if err != nil {
			return false, err
		}
		g, ok := gs[demoGroup]
		if !ok {
			return true, nil
		}
		if g.Err != nil {
			return false, g.Err
		}
		return len(g.Members) == 0, nil
	})
}

// shutdown stops the processor and the nodes cleanly.
func (d *demo) shutdown() error {
	var errs []error
	if d.processor != nil {
		errs = append(errs, d.processor.stop())
	}
	for _, n := range d.nodes {
		if n.proc != nil {
			errs = append(errs, n.proc.stop())
		}
	}
	return errors.Join(errs...)
}

// close kills every child still running and closes what the demo holds.
func (d *demo) close() error {
	err := d.procs.killAll()
	if d.monitor != nil {
		d.monitor.Close()
	}
	for _, n := range d.nodes {
		n.client.Close()
	}
	if d.producer != nil {
		d.producer.Close()
	}
	if d.kafka != nil {
		d.kafka.Close()
	}
	return err
}
