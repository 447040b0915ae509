package test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

// BenchmarkSDKCommit runs the same single commit (one put of a 100-byte
// value, in a session) four ways in one run, with 1 and 64 concurrent
// callers, to tell the SDK's cost from the process boundary's:
//
//   - raw-inproc: a raw statedv1 client and the daemon in this process
//     (what BenchmarkCommit measures);
//   - sdk-inproc: the public SDK, stated.Dial on the same daemon's socket;
//   - raw-process: a raw client against a `stated run` process;
//   - sdk-process: the SDK against a `stated run` process, as a user's
//     service runs it;
//   - sdk-process-uncoalesced: the same with WithCommitCoalescing(false),
//     every commit its own call.
//
// Every variant talks over a unix socket. The 64 callers share one
// connection (one *stated.Client, as the SDK documentation asks). Run:
//
//	go test ./test -run '^$' -bench BenchmarkSDKCommit -benchtime 3s -count 3
func BenchmarkSDKCommit(b *testing.B) {
	for _, target := range []string{"raw-inproc", "sdk-inproc", "raw-process", "sdk-process", "sdk-process-uncoalesced"} {
		b.Run(target, func(b *testing.B) {
			socket := benchSocket(b, target)
			var raw statedv1.StateClient
			var sdk *stated.Client
			switch target {
			case "raw-inproc", "raw-process":
				raw = rawClient(b, socket)
			case "sdk-process-uncoalesced":
				sdk = sdkBenchClient(b, socket, stated.WithCommitCoalescing(false))
			default:
				sdk = sdkBenchClient(b, socket)
			}
			for _, conc := range []int{1, 64} {
				b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
					if raw != nil {
						runCommits(b, raw, commitCase{muts: 1, conc: conc})
						return
					}
					runSDKCommits(b, sdk, conc)
				})
			}
		})
	}
}

// benchSocket starts the daemon for target, in this process or as a
// `stated run` process, and returns its unix socket.
func benchSocket(b *testing.B, target string) string {
	switch target {
	case "raw-inproc", "sdk-inproc":
		return daemontest.Start(b).SocketPath()
	}
	statedBinary(b) // built before the start's deadline runs
	n := newNode(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n.start(ctx)
	return n.socket
}

func rawClient(b testing.TB, socket string) statedv1.StateClient {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return statedv1.NewStateClient(conn)
}

func sdkBenchClient(b *testing.B, socket string, opts ...stated.Option) *stated.Client {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := stated.Dial(ctx, socket, append([]stated.Option{stated.WithBlock()}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// runSDKCommits has conc goroutines share b.N single-put commits through
// c and reports commits/s and the latency percentiles.
func runSDKCommits(b *testing.B, c *stated.Client, conc int) {
	var lat latencies
	var mu sync.Mutex
	issued := 0
	value := make([]byte, 100)
	b.ResetTimer()
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			defer func() { lat.add(mine) }()
			key := make([]byte, 0, 16)
			for {
				mu.Lock()
				if issued == b.N {
					mu.Unlock()
					return
				}
				issued++
				n := issued
				mu.Unlock()
				key = binary.BigEndian.AppendUint64(append(key[:0], "key/"...), uint64(n))
				start := time.Now()
				if _, err := c.Txn().Put("bench", key, value).Commit(context.Background()); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(start))
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "mutations/s") // one per commit, as runCommits counts
	lat.report(b)
}

// BenchmarkSDKCommitPaired tells apart, on a shared and noisy machine,
// what the SDK and the process boundary each add to a single commit: one
// caller commits in turn (in a random order each round) through the four ways of
// BenchmarkSDKCommit, against one daemon in this process and one
// `stated run` process, so that whatever else runs on the machine slows
// all four alike. It reports each way's median latency and the median of
// its per-round difference from raw-inproc.
//
//	go test ./test -run '^$' -bench BenchmarkSDKCommitPaired -benchtime 2000x -count 3
func BenchmarkSDKCommitPaired(b *testing.B) {
	ctx := context.Background()
	inproc, process := benchSocket(b, "raw-inproc"), benchSocket(b, "raw-process")
	value := make([]byte, 100)
	type way struct {
		name   string
		commit func(key []byte, seq uint64)
		lat    []time.Duration
	}
	rawWay := func(name, socket string) *way {
		c := rawClient(b, socket)
		resp, err := c.OpenSession(ctx, &statedv1.OpenSessionRequest{ClientId: "paired"})
		if err != nil {
			b.Fatal(err)
		}
		return &way{name: name, commit: func(key []byte, seq uint64) {
			_, err := c.Commit(ctx, &statedv1.CommitRequest{
				Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "bench", Key: key, Value: value}},
				ClientId:  "paired", SessionId: resp.GetSessionId(), Sequence: seq,
			})
			if err != nil {
				b.Fatal(err)
			}
		}}
	}
	sdkWay := func(name, socket string) *way {
		c := sdkBenchClient(b, socket)
		return &way{name: name, commit: func(key []byte, _ uint64) {
			if _, err := c.Txn().Put("bench", key, value).Commit(ctx); err != nil {
				b.Fatal(err)
			}
		}}
	}
	ways := []*way{rawWay("raw-inproc", inproc), sdkWay("sdk-inproc", inproc), rawWay("raw-process", process), sdkWay("sdk-process", process)}
	diffs := make([][]time.Duration, len(ways))
	rng := rand.New(rand.NewPCG(1, 2))
	b.ResetTimer()
	for i := range b.N {
		key := binary.BigEndian.AppendUint64([]byte("key/"), uint64(i))
		took := make([]time.Duration, len(ways))
		// A random order each round: a way that always ran after the same
		// other one would always find the machine as that one left it
		// (one runtime warm, the other's threads asleep).
		for _, k := range rng.Perm(len(ways)) {
			start := time.Now()
			ways[k].commit(key, uint64(i+1))
			took[k] = time.Since(start)
		}
		for k, w := range ways {
			w.lat = append(w.lat, took[k])
			diffs[k] = append(diffs[k], took[k]-took[0])
		}
	}
	b.StopTimer()
	med := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Microseconds())
	}
	for k, w := range ways {
		b.ReportMetric(med(w.lat), w.name+"-p50-µs")
		if k > 0 {
			b.ReportMetric(med(diffs[k]), w.name+"-minus-raw-inproc-µs")
		}
	}
}
