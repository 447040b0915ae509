package raftstore_test

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/raftstoretest"
)

// BenchmarkWipedFollowerCatchUp times what DESIGN.md's "one node's disk"
// recovery costs: a follower of a three-node cluster loses its data dir,
// and restarts under its id and address; the leader adds it again and,
// its log compacted past anything the node has, sends it the state as a
// snapshot over Raft (sized, streamed, stored by the follower's snapshot
// store, then restored). Each round wipes the same follower again and
// times its restart until it has applied everything the leader had:
// received-s until the follower's Raft has the whole stream in its
// snapshot store (the join, the leader's sizing and sending, the file
// written and synced), restored-s from then until Restore has swapped the
// state in. The
// state is STATED_BENCH_SNAPSHOT_MB (default 256) MB of 1 KiB random
// values under distinct keys, committed 1,000 to a commit; on the
// default log store (wal). Every node runs in this process, on loopback.
//
//	go test ./raftstore -run '^$' -bench WipedFollowerCatchUp -benchtime 3x -timeout 30m
func BenchmarkWipedFollowerCatchUp(b *testing.B) {
	mb := 256
	if v := os.Getenv("STATED_BENCH_SNAPSHOT_MB"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("STATED_BENCH_SNAPSHOT_MB=%q: want a positive number of MB", v)
		}
		mb = n
	}
	rec := &recorder{msgs: map[string][]logLine{}}
	c := raftstoretest.NewCluster(b, 3, raftstoretest.WithLogger(slog.New(recordHandler{r: rec})), raftstoretest.WithConfig(func(cfg *raftstore.Config) {
		cfg.SnapshotThreshold = 64
		cfg.TrailingLogs = 16
		cfg.SnapshotInterval = time.Hour // snapshots only when the benchmark asks
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	fill := rand.NewChaCha8([32]byte{7})
	value := make([]byte, 1000<<10)
	for first := 0; first < mb<<10; first += 1000 {
		fill.Read(value)
		muts := make([]command.Mutation, 1000)
		for i := range muts {
			muts[i] = command.Mutation{Op: command.OpPut, Namespace: "bench",
				Key: binary.BigEndian.AppendUint64([]byte("key/"), uint64(first+i)), Value: value[i<<10 : (i+1)<<10]}
		}
		if _, err := c.Commit(ctx, &command.Commit{Mutations: muts}, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
	f := c.Index(c.Followers()[0].NodeID())
	var total, received, restored time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		c.Wipe(f)
		// One more commit, then a snapshot: the leader's log now starts
		// after anything the wiped node could be sent as entries.
		if _, err := c.Commit(ctx, &command.Commit{Mutations: []command.Mutation{{Op: command.OpPut, Namespace: "bench", Key: []byte("last"), Value: []byte("v")}}}, time.Minute); err != nil {
			b.Fatal(err)
		}
		l := c.Leader(b)
		if err := l.Snapshot(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
			b.Fatal(err)
		}
		want := l.AppliedIndex()
		b.StartTimer()
		start := time.Now()
		c.Restart(b, f)
		for c.Node(f).AppliedIndex() < want {
			if ctx.Err() != nil {
				b.Fatalf("the rejoined node applied %d of %d", c.Node(f).AppliedIndex(), want)
			}
			time.Sleep(time.Millisecond)
		}
		total += time.Since(start)
		// Raft logs the install once Restore returned, which may be
		// after the applied index moved.
		copied, installed := rec.firstSince(c.ID(f), copiedMsg, start), rec.firstSince(c.ID(f), installedMsg, start)
		for wait := time.Now(); installed.IsZero() && time.Since(wait) < 10*time.Second; installed = rec.firstSince(c.ID(f), installedMsg, start) {
			time.Sleep(time.Millisecond)
		}
		if copied.IsZero() || installed.IsZero() {
			b.Fatalf("%s caught up without receiving and installing a snapshot", c.ID(f))
		}
		received += copied.Sub(start)
		restored += installed.Sub(copied)
	}
	b.ReportMetric(received.Seconds()/float64(b.N), "received-s")
	b.ReportMetric(restored.Seconds()/float64(b.N), "restored-s")
	b.ReportMetric(total.Seconds()/float64(b.N), "catchup-s")
	b.ReportMetric(float64(mb)*(1<<20)/1e6/(total.Seconds()/float64(b.N)), "MB/s")
}

// The follower's Raft log lines that mark the phases of a snapshot
// install (hashicorp/raft's installSnapshot).
const (
	copiedMsg    = "copied to local snapshot"
	installedMsg = "Installed remote snapshot"
)
