package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

// BenchmarkStated measures stated as a user's service meets it: `stated
// run` processes built from the tree (1 node, and 3 nodes on 127.0.0.1),
// driven through the public Go SDK (stated.Dial on the leader's unix
// socket, one Client shared by the goroutines, Txn/Commit) with 100-byte
// values under new keys. commit=M/clients=C has C goroutines commit Txns
// of M puts; read=L reads existing keys at consistency L; grpc-roundtrip
// times a gRPC health check on the leader's socket, the cost of any call
// before stated does anything; stream-roundtrip an empty request on an
// open CommitStream, the message each SDK commit rides; rss reports the
// processes' memory after the rows before it.
func BenchmarkStated(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			nodes := startCluster(b, n)
			c := dial(b, leader(b, nodes))
			var key atomic.Uint64
			for _, shape := range []struct{ muts, clients int }{{1, 1}, {30, 1}, {1, 64}, {100, 8}, {1000, 4}} {
				b.Run(fmt.Sprintf("commit=%d/clients=%d", shape.muts, shape.clients), func(b *testing.B) {
					benchCommits(b, c, &key, shape.muts, shape.clients)
				})
			}
			for _, cons := range []stated.Consistency{stated.ConsistencyLocal, stated.ConsistencySession, stated.ConsistencyLinearizable} {
				b.Run("read="+cons.String(), func(b *testing.B) { benchReads(b, c, &key, cons) })
			}
			b.Run("grpc-roundtrip", func(b *testing.B) { benchRoundTrip(b, leader(b, nodes)) })
			b.Run("stream-roundtrip", func(b *testing.B) { benchStreamRoundTrip(b, leader(b, nodes)) })
			b.Run("rss", func(b *testing.B) { benchRSS(b, nodes) })
		})
	}
}

const benchNamespace = "bench"

var benchValue = make([]byte, 100)

func benchKey(k uint64) []byte { return binary.BigEndian.AppendUint64([]byte("key/"), k) }

// benchCommits has clients goroutines share b.N commits of muts puts each
// through c, and reports mutations/s and the commit latency quantiles.
func benchCommits(b *testing.B, c *stated.Client, key *atomic.Uint64, muts, clients int) {
	ctx := context.Background()
	parallel(b, clients, muts, "mutations/s", true, func(_, _ int) error {
		first := key.Add(uint64(muts)) - uint64(muts)
		txn := c.Txn()
		for j := range uint64(muts) {
			txn.Put(benchNamespace, benchKey(first+j), benchValue)
		}
		_, err := txn.Commit(ctx)
		return err
	})
}

// benchReads reads keys written before (writing 1000 first if none were)
// one at a time at consistency cons, and reports the latency quantiles.
func benchReads(b *testing.B, c *stated.Client, key *atomic.Uint64, cons stated.Consistency) {
	ctx := context.Background()
	if key.Load() == 0 { // run alone (-bench .../read=...)
		txn := c.Txn()
		for k := range uint64(1000) {
			txn.Put(benchNamespace, benchKey(k), benchValue)
		}
		if _, err := txn.Commit(ctx); err != nil {
			b.Fatal(err)
		}
		key.Store(1000)
	}
	written := key.Load()
	parallel(b, 1, 1, "reads/s", false, func(_, i int) error {
		k := uint64(i) % written
		_, found, err := c.Get(ctx, benchNamespace, benchKey(k), stated.WithConsistency(cons))
		if err == nil && !found {
			err = fmt.Errorf("read=%s: key %d not found", cons, k)
		}
		return err
	})
}

// benchRoundTrip times one client's gRPC health checks on nd's unix
// socket: the same transport, framing and connection handling as every
// SDK call, with no state read or written. A commit's latency is at
// least this plus its fsync.
func benchRoundTrip(b *testing.B, nd *node) {
	h := healthpb.NewHealthClient(nd.conn(b))
	ctx := context.Background()
	if _, err := h.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil { // connect outside the timing
		b.Fatal(err)
	}
	parallel(b, 1, 1, "calls/s", false, func(_, _ int) error {
		_, err := h.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	})
}

// benchStreamRoundTrip times one client's empty requests on an open
// CommitStream on nd's unix socket: the message every SDK commit rides
// (a request and its answer on a stream already open), through the
// daemon's stream handler and CommitBatch with nothing to propose. A
// commit's latency is at least this plus its log's sync.
func benchStreamRoundTrip(b *testing.B, nd *node) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := statedv1.NewStateClient(nd.conn(b)).CommitStream(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var id uint64
	roundTrip := func() error {
		id++
		if err := s.Send(&statedv1.CommitStreamRequest{Id: id, Batch: &statedv1.CommitBatchRequest{}}); err != nil {
			return err
		}
		resp, err := s.Recv()
		if err == nil && (resp.GetId() != id || resp.GetError() != nil) {
			err = fmt.Errorf("request %d answered %v", id, resp)
		}
		return err
	}
	if err := roundTrip(); err != nil { // open the stream outside the timing
		b.Fatal(err)
	}
	parallel(b, 1, 1, "calls/s", false, func(_, _ int) error { return roundTrip() })
}

// benchRSS reports the peak (VmHWM) and current (VmRSS) resident memory of
// each of the cluster's processes ("n1-VmHWM-MB") and the largest over
// them ("VmHWM-MB"), in MB. Its b.N loop times reading them, which is not
// a figure of stated.
func benchRSS(b *testing.B, nodes []*node) {
	hwm, rss := make([]float64, len(nodes)), make([]float64, len(nodes))
	for range b.N {
		for i, nd := range nodes {
			h, r, err := nd.memory()
			if err != nil {
				b.Fatal(err)
			}
			hwm[i], rss[i] = h, r
		}
	}
	for i, nd := range nodes {
		b.ReportMetric(hwm[i], nd.id+"-VmHWM-MB")
		b.ReportMetric(rss[i], nd.id+"-VmRSS-MB")
	}
	b.ReportMetric(slices.Max(hwm), "VmHWM-MB")
	b.ReportMetric(slices.Max(rss), "VmRSS-MB")
}
