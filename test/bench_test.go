package test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore/fsm"
)

// The benchmarks run stated in-process (real Raft, its log store and Pebble
// in a temp dir) and talk to it over its unix socket, next to the
// machine's limits measured in the same run: a raw fsync and raw Pebble
// synced batch commits. Run them with:
//
//	go test ./test -run '^$' -bench . -benchtime 3s -count 5
//
// STATED_TEST_RAFT_LOG_STORE=wal|boltdb puts their Raft log in that store
// (stated's default otherwise); BenchmarkCommitLogStore measures both
// stores side by side in one run.

// benchClient starts stated with n nodes, its Raft log in the store
// STATED_TEST_RAFT_LOG_STORE names, and returns a client of the leader's
// unix socket.
func benchClient(b *testing.B, n int) statedv1.StateClient {
	return benchClientOn(b, n, testRaftLogStore)
}

// benchClientOn is benchClient with the Raft log in logStore ("" for
// stated's default).
func benchClientOn(b *testing.B, n int, logStore string) statedv1.StateClient {
	return startBench(b, n, logStore).client
}

// benchNodes is a started benchmark target: a client of the leader's
// unix socket, the nodes and their data dirs, in node order.
type benchNodes struct {
	client   statedv1.StateClient
	nodes    []*daemon.Daemon
	dataDirs []string
}

// startBench starts stated with n nodes, the Raft log in logStore.
func startBench(b *testing.B, n int, logStore string) *benchNodes {
	bn := &benchNodes{}
	opts := []func(*daemon.Config){daemontest.WithRaftLogStore(logStore), func(c *daemon.Config) {
		// Start applies the options once per node, in node order.
		c.DataDir = b.TempDir()
		bn.dataDirs = append(bn.dataDirs, c.DataDir)
	}}
	var leader *daemon.Daemon
	if n == 1 {
		leader = daemontest.Start(b, opts...)
		bn.nodes = []*daemon.Daemon{leader}
	} else {
		bn.nodes = daemontest.StartCluster(b, n, opts...)
		for _, d := range bn.nodes {
			if d.Store().IsLeader() {
				leader = d
			}
		}
		if leader == nil {
			b.Fatal("no leader")
		}
	}
	conn, err := grpc.NewClient("unix://"+leader.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20), grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	bn.client = statedv1.NewStateClient(conn)
	return bn
}

func commitRequest(muts int, base uint64) *statedv1.CommitRequest {
	req := &statedv1.CommitRequest{Mutations: make([]*statedv1.Mutation, muts)}
	value := make([]byte, 100)
	for i := range req.Mutations {
		req.Mutations[i] = &statedv1.Mutation{
			Kind:      statedv1.MutationKind_MUTATION_KIND_PUT,
			Namespace: "bench",
			Key:       binary.BigEndian.AppendUint64([]byte("key/"), base+uint64(i)),
			Value:     value,
		}
	}
	return req
}

// latencies collects per-operation latencies from parallel goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d []time.Duration) { l.mu.Lock(); l.d = append(l.d, d...); l.mu.Unlock() }

func (l *latencies) report(b *testing.B) {
	if len(l.d) == 0 {
		return
	}
	slices.Sort(l.d)
	q := func(p float64) float64 { return float64(l.d[int(p*float64(len(l.d)-1))].Microseconds()) }
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
}

// reportTail adds p999 and the slowest operation, in µs, to report's.
func (l *latencies) reportTail(b *testing.B) {
	if len(l.d) == 0 {
		return
	}
	slices.Sort(l.d)
	b.ReportMetric(float64(l.d[int(0.999*float64(len(l.d)-1))].Microseconds()), "p999-µs")
	b.ReportMetric(float64(l.d[len(l.d)-1].Microseconds()), "max-µs")
}

// commitCase is one shape of load. Commits carry a client id and sequence
// as the SDK's do, so the state machine records each for retries (a point
// read and two more keys per commit), unless noClientID is set.
type commitCase struct {
	muts, conc int
	noClientID bool
}

func (c commitCase) String() string {
	s := fmt.Sprintf("mutations=%d/concurrency=%d", c.muts, c.conc)
	if c.noClientID {
		s += "/no-client-id"
	}
	return s
}

// BenchmarkCommit measures Commit over the unix socket of a single node
// with 100-byte values: mutations per commit x concurrent clients.
func BenchmarkCommit(b *testing.B) {
	for _, tc := range []commitCase{
		{muts: 1, conc: 1}, {muts: 1, conc: 1, noClientID: true}, {muts: 1, conc: 64}, {muts: 1, conc: 64, noClientID: true},
		{muts: 100, conc: 1}, {muts: 100, conc: 8}, {muts: 1000, conc: 1}, {muts: 1000, conc: 4}, {muts: 1000, conc: 16},
	} {
		b.Run(tc.String(), func(b *testing.B) { runCommits(b, benchClient(b, 1), tc) })
	}
}

// BenchmarkCommitLogStore is BenchmarkCommit's single-commit rows on
// each Raft log store, side by side in one run: raft-boltdb syncs bbolt
// twice per append, raft-wal once.
func BenchmarkCommitLogStore(b *testing.B) {
	for _, store := range []string{"boltdb", "wal"} {
		for _, tc := range []commitCase{{muts: 1, conc: 1}, {muts: 1, conc: 64}, {muts: 100, conc: 8}} {
			b.Run("store="+store+"/"+tc.String(), func(b *testing.B) { runCommits(b, benchClientOn(b, 1, store), tc) })
		}
	}
}

// BenchmarkClusterCommit is BenchmarkCommit against the leader of a
// three-node cluster on loopback: every commit is fsynced by a majority.
// It also reports p999 and the slowest commit. With
// STATED_BENCH_TIMELINE=dir each run writes its commits and the nodes'
// progress over time to dir (see timeline.go), to line a tail up with
// what the nodes were doing.
func BenchmarkClusterCommit(b *testing.B) {
	for _, tc := range []commitCase{{muts: 1, conc: 1}, {muts: 1, conc: 64}, {muts: 100, conc: 8}, {muts: 1000, conc: 4}, {muts: 1000, conc: 16}} {
		b.Run(tc.String(), func(b *testing.B) {
			bn := startBench(b, 3, testRaftLogStore)
			tl := startTimeline(b, bn)
			lat := runCommitsTimed(b, bn.client, tc, tl)
			tl.stop(b)
			lat.reportTail(b)
		})
	}
}

// runCommits has exactly tc.conc clients share b.N commits of tc.muts puts
// each and reports mutations/s and the commit latency percentiles.
func runCommits(b *testing.B, client statedv1.StateClient, tc commitCase) {
	runCommitsTimed(b, client, tc, nil)
}

// runCommitsTimed is runCommits, recording each commit in tl if it is not
// nil; it returns the latencies it reported.
func runCommitsTimed(b *testing.B, client statedv1.StateClient, tc commitCase, tl *timeline) *latencies {
	var lat latencies
	var mu sync.Mutex
	base, issued := uint64(0), 0
	var session uint64
	if !tc.noClientID {
		// As the SDK does: one session, a lane per client in flight.
		resp, err := client.OpenSession(context.Background(), &statedv1.OpenSessionRequest{ClientId: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		session = resp.GetSessionId()
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	for lane := range tc.conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seq := uint64(0)
			var mine []time.Duration
			defer func() { lat.add(mine) }()
			for {
				mu.Lock()
				if issued == b.N {
					mu.Unlock()
					return
				}
				issued++
				req := commitRequest(tc.muts, base)
				if !tc.noClientID {
					seq++
					req.ClientId, req.SessionId, req.Lane, req.Sequence = "bench", session, uint32(lane), seq
				}
				base += uint64(tc.muts)
				mu.Unlock()
				start := time.Now()
				resp, err := client.Commit(context.Background(), req)
				if err != nil {
					b.Error(err)
					return
				}
				took := time.Since(start)
				mine = append(mine, took)
				tl.commit(start, took, lane, resp.GetIndex())
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N*tc.muts)/b.Elapsed().Seconds(), "mutations/s")
	lat.report(b)
	return &lat
}

// BenchmarkGet measures a local-consistency Get of a 100-byte value over
// the unix socket, one client.
func BenchmarkGet(b *testing.B) {
	client := benchClient(b, 1)
	if _, err := client.Commit(context.Background(), commitRequest(1000, 0)); err != nil {
		b.Fatal(err)
	}
	var lat latencies
	d := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		resp, err := client.Get(context.Background(), &statedv1.GetRequest{
			Namespace: "bench", Kind: statedv1.Kind_KIND_VALUE,
			Key: binary.BigEndian.AppendUint64([]byte("key/"), uint64(i%1000)),
		})
		if err != nil || !resp.Found {
			b.Fatal(err, resp)
		}
		d = append(d, time.Since(start))
	}
	lat.add(d)
	lat.report(b)
}

// BenchmarkRawPebbleSyncedBatch is the baseline: Pebble alone, with the
// options the state machine uses, committing batches of the same 100-byte
// puts with fsync, one writer.
func BenchmarkRawPebbleSyncedBatch(b *testing.B) {
	for _, muts := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("mutations=%d", muts), func(b *testing.B) {
			db, err := pebble.Open(filepath.Join(b.TempDir(), "p"), fsm.PebbleOptions())
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			value := make([]byte, 100)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				batch := db.NewBatch()
				for j := 0; j < muts; j++ {
					batch.Set(binary.BigEndian.AppendUint64([]byte("key/"), uint64(i*muts+j)), value, nil)
				}
				if err := batch.Commit(pebble.Sync); err != nil {
					b.Fatal(err)
				}
				batch.Close()
			}
			b.ReportMetric(float64(b.N*muts)/b.Elapsed().Seconds(), "mutations/s")
		})
	}
}

// BenchmarkFsync is the disk's limit: a 4 KiB write and fsync of one file.
func BenchmarkFsync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "f"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}
