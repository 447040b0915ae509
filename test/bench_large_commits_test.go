package test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// vmHWM is process pid's peak resident set, VmHWM, in bytes.
func vmHWM(tb testing.TB, pid int) int64 {
	tb.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	tb.Fatal("no VmHWM")
	return 0
}

// BenchmarkLargeCommitsInFlight measures what clients sending 60 MiB
// commits at the same time cost one `stated run` process: each of
// `clients` connections sends one commit of 15 values of 4 MiB per
// iteration, all at once, while another client commits one small key
// every 50 ms. It reports the daemon's peak RSS over the run (VmHWM: a
// new process per sub-benchmark), the large commits' MB/s and the
// slowest small commit, and how many large commits failed (a commit that
// waits too long to be proposed fails DeadlineExceeded, "timed out
// enqueuing operation", whatever its deadline). budget is --max-inflight-request-bytes (1TiB: in
// effect none). GOMEMLIMIT, when set, is passed to the daemon.
//
//	go test -c -o /tmp/bench.test ./test && cd test && \
//	  /tmp/bench.test -test.run '^$' -test.bench BenchmarkLargeCommitsInFlight -test.benchtime 2x
func BenchmarkLargeCommitsInFlight(b *testing.B) {
	for _, clients := range []int{6, 16} {
		for _, budget := range []string{"1TiB", "128MiB"} {
			b.Run(fmt.Sprintf("clients=%d/budget=%s", clients, budget), func(b *testing.B) {
				benchLargeCommits(b, clients, budget)
			})
		}
	}
}

func benchLargeCommits(b *testing.B, clients int, budget string) {
	n := newNode(b)
	n.args = []string{"--max-inflight-request-bytes", budget, "--log-level", "warn"}
	if l := os.Getenv("GOMEMLIMIT"); l != "" {
		n.wrap = []string{"env", "GOMEMLIMIT=" + l}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n.start(ctx)
	conns := make([]statedv1.StateClient, clients+1)
	for i := range conns {
		cc, err := grpc.NewClient("unix://"+n.socket, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(100<<20)))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		conns[i] = statedv1.NewStateClient(cc)
	}
	const values, valueBytes = 15, 4<<20 - 1024
	val := make([]byte, valueBytes)

	stop := make(chan struct{})
	var small []time.Duration
	smallDone := make(chan struct{})
	go func() {
		defer close(smallDone)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			t0 := time.Now()
			if _, err := conns[clients].Commit(ctx, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{
				Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "small", Key: []byte("k"), Value: []byte("v")}}}); err != nil {
				b.Error(err)
				return
			}
			small = append(small, time.Since(t0))
		}
	}()
	var failed atomic.Int64
	b.ResetTimer()
	t0 := time.Now()
	for i := range b.N {
		var wg sync.WaitGroup
		for c := range clients {
			wg.Go(func() {
				req := &statedv1.CommitRequest{}
				for v := range values {
					req.Mutations = append(req.Mutations, &statedv1.Mutation{Kind: statedv1.MutationKind_MUTATION_KIND_PUT,
						Namespace: "big", Key: fmt.Appendf(nil, "k-%d-%d-%d", i, c, v), Value: val})
				}
				if _, err := conns[c].Commit(ctx, req); err != nil {
					failed.Add(1)
					b.Logf("a large commit failed: %v", err)
				}
			})
		}
		wg.Wait()
	}
	elapsed := time.Since(t0)
	b.StopTimer()
	close(stop)
	<-smallDone
	slices.Sort(small)
	b.ReportMetric(float64(failed.Load()), "failed-commits")
	b.ReportMetric(float64(vmHWM(b, n.pid()))/(1<<20), "peak-rss-MiB")
	b.ReportMetric(float64(b.N*clients*values*valueBytes)/(1<<20)/elapsed.Seconds(), "MiB/s")
	if len(small) > 0 {
		b.ReportMetric(small[len(small)-1].Seconds(), "small-commit-max-s")
		b.ReportMetric(small[len(small)/2].Seconds(), "small-commit-p50-s")
	}
}
