package metrics

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/statedhq/stated/internal/reqsize"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// LatencyBuckets are the histogram buckets, in seconds, of RPC, commit
// and read latency: from 100µs (a local read) to 10s (a commit waiting
// out an election).
var LatencyBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// commitMethod, commitBatchMethod and commitStreamMethod are the full
// gRPC methods of State.Commit, State.CommitBatch and State.CommitStream.
const (
	commitMethod       = statedv1.State_Commit_FullMethodName
	commitBatchMethod  = statedv1.State_CommitBatch_FullMethodName
	commitStreamMethod = statedv1.State_CommitStream_FullMethodName
)

// GRPC counts and times the RPCs a gRPC server answers. Install it with
// grpc.ChainUnaryInterceptor(g.Unary) and
// grpc.ChainStreamInterceptor(g.Stream), with grpc.StatsHandler(reqsize.Handler()),
// which gives the commit counters each Commit request's size.
//
// The commit counters count every commit answered OK: each Commit call's,
// and each of a CommitBatch call's commits that its result answers OK
// (the SDK coalesces concurrent commits into CommitBatch calls). The
// commit latency holds every commit answered, alone or in a batch.
type GRPC struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	commitDur prometheus.Histogram
	readDur   *prometheus.HistogramVec
	commits   prometheus.Counter
	mutations prometheus.Counter
	bytes     prometheus.Counter
}

// NewGRPC makes the gRPC instruments and registers them on reg.
func NewGRPC(reg prometheus.Registerer) *GRPC {
	g := &GRPC{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stated_grpc_requests_total",
			Help: "gRPC requests answered, by method and status code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "stated_grpc_request_duration_seconds", Buckets: LatencyBuckets,
			Help: "Time to answer a gRPC request (a stream: until it ended), by method.",
		}, []string{"method"}),
		commitDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "stated_commit_duration_seconds", Buckets: LatencyBuckets,
			Help: "Time to answer a commit, successful or not: a Commit call, or each commit of a CommitBatch call (answered when its call is).",
		}),
		readDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "stated_read_duration_seconds", Buckets: LatencyBuckets,
			Help: "Time to answer a read (a request with read options), by method and effective consistency level.",
		}, []string{"method", "consistency"}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stated_commits_total",
			Help: "Commits answered OK, alone (Commit) or in a CommitBatch call (a retried commit answered from its session counts again).",
		}),
		mutations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stated_commit_mutations_total",
			Help: "Mutations in the commits answered OK.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stated_commit_bytes_total",
			Help: "Encoded request size, in bytes, of the commits answered OK.",
		}),
	}
	reg.MustRegister(g.requests, g.duration, g.commitDur, g.readDur, g.commits, g.mutations, g.bytes)
	return g
}

// Unary is a grpc.UnaryServerInterceptor.
func (g *GRPC) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	g.observe(ctx, info.FullMethod, req, resp, err, time.Since(start))
	return resp, err
}

// Stream is a grpc.StreamServerInterceptor. A server stream's request is
// its first message, read by the handler; its read options label the read.
// A CommitStream is not observed as a request: each of its messages is,
// by ObserveStreamed.
func (g *GRPC) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if info.FullMethod == commitStreamMethod {
		return handler(srv, ss)
	}
	start := time.Now()
	w := &firstMsgStream{ServerStream: ss}
	err := handler(srv, w)
	g.observe(ss.Context(), info.FullMethod, w.first, nil, err, time.Since(start))
	return err
}

// ObserveStreamed observes one CommitBatch call served on a CommitStream
// (grpcapi.WithBatchObserver) as a request of method CommitStream, and
// its commits as a CommitBatch call's.
func (g *GRPC) ObserveStreamed(ctx context.Context, req *statedv1.CommitBatchRequest, resp *statedv1.CommitBatchResponse, err error, d time.Duration) {
	g.observe(ctx, commitStreamMethod, req, resp, err, d)
}

func (g *GRPC) observe(ctx context.Context, fullMethod string, req, resp any, err error, d time.Duration) {
	method := strings.TrimPrefix(fullMethod, "/")
	secs := d.Seconds()
	code := status.Code(err)
	g.requests.WithLabelValues(method, code.String()).Inc()
	g.duration.WithLabelValues(method).Observe(secs)
	switch fullMethod {
	case commitMethod:
		g.commitDur.Observe(secs)
		if c, ok := req.(*statedv1.CommitRequest); ok && err == nil {
			g.commits.Inc()
			g.mutations.Add(float64(len(c.GetMutations())))
			g.bytes.Add(float64(reqsize.Size(ctx, c)))
		}
		return
	case commitBatchMethod, commitStreamMethod:
		r, ok := req.(*statedv1.CommitBatchRequest)
		// Each commit of the call was answered when the call was, OK or
		// not: the commit latency holds it as a Commit call's.
		for range r.GetCommits() {
			g.commitDur.Observe(secs)
		}
		out, ok2 := resp.(*statedv1.CommitBatchResponse)
		if !ok || !ok2 || err != nil || len(out.GetResults()) != len(r.GetCommits()) {
			return
		}
		var commits, mutations, bytes int
		for i, res := range out.GetResults() {
			if res.GetError() != nil {
				continue
			}
			c := r.GetCommits()[i]
			commits++
			mutations += len(c.GetMutations())
			bytes += proto.Size(c) // small: the Go SDK batches commits of at most 16 writes
		}
		g.commits.Add(float64(commits))
		g.mutations.Add(float64(mutations))
		g.bytes.Add(float64(bytes))
		return
	}
	if r, ok := req.(interface{ GetRead() *statedv1.ReadOptions }); ok {
		g.readDur.WithLabelValues(method, Consistency(r.GetRead())).Observe(secs)
	}
}

// Consistency is the level a read with o runs at, as the label value:
// "local", "session" or "linearizable". Unspecified reads like session
// when o names a min index, else like local (see proto ReadOptions).
func Consistency(o *statedv1.ReadOptions) string {
	switch o.GetConsistency() {
	case statedv1.Consistency_CONSISTENCY_LOCAL:
		return "local"
	case statedv1.Consistency_CONSISTENCY_SESSION:
		return "session"
	case statedv1.Consistency_CONSISTENCY_LINEARIZABLE:
		return "linearizable"
	}
	if o.GetMinIndex() > 0 {
		return "session"
	}
	return "local"
}

// firstMsgStream keeps the first message a server stream receives.
type firstMsgStream struct {
	grpc.ServerStream
	first any
}

func (s *firstMsgStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil && s.first == nil {
		s.first = m
	}
	return err
}
