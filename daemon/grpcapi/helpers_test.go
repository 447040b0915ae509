package grpcapi_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// startClient starts a daemon and returns a client connected to it over
// its unix socket.
func startDaemon(t *testing.T, opts ...func(*daemon.Config)) *daemon.Daemon {
	t.Helper()
	return daemontest.Start(t, opts...)
}

func startClient(t *testing.T, opts ...func(*daemon.Config)) (*daemon.Daemon, statedv1.StateClient) {
	t.Helper()
	d := daemontest.Start(t, opts...)
	return d, dial(t, "unix://"+d.SocketPath())
}

// noPeriodicCheckpoints turns the default checkpoint interval (10 s) off,
// for tests that compare the applied index before and after a refused
// call: a checkpoint's barrier and completion are entries of their own.
func noPeriodicCheckpoints(c *daemon.Config) { c.CheckpointInterval = 0 }

func dial(t *testing.T, target string, opts ...grpc.DialOption) statedv1.StateClient {
	t.Helper()
	opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		t.Fatalf("dial %s: %v", target, err)
	}
	t.Cleanup(func() { conn.Close() })
	return statedv1.NewStateClient(conn)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantStatus fails the test unless err is a status with code and a message
// that contains substr.
func wantStatus(t *testing.T, err error, code codes.Code, substr string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code {
		t.Fatalf("error = %v, want code %s", err, code)
	}
	if !strings.Contains(st.Message(), substr) {
		t.Fatalf("message %q does not contain %q", st.Message(), substr)
	}
}

func put(ns, key, value string) *statedv1.Mutation {
	return &statedv1.Mutation{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: ns, Key: []byte(key), Value: []byte(value)}
}

func mustCommit(t *testing.T, c statedv1.StateClient, r *statedv1.CommitRequest) uint64 {
	t.Helper()
	resp, err := c.Commit(testContext(t), r)
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	return resp.GetIndex()
}

func get(t *testing.T, c statedv1.StateClient, ns, key string) *statedv1.GetResponse {
	t.Helper()
	resp, err := c.Get(testContext(t), &statedv1.GetRequest{Namespace: ns, Key: []byte(key), Kind: statedv1.Kind_KIND_VALUE})
	if err != nil {
		t.Fatalf("get %s/%s: %v", ns, key, err)
	}
	return resp
}

// scanAll reads a whole scan stream.
func scanAll(t *testing.T, c statedv1.StateClient, r *statedv1.ScanRequest) (entries []*statedv1.Entry, responses int) {
	t.Helper()
	stream, err := c.Scan(testContext(t), r)
	if err != nil {
		t.Fatalf("scan: %v", err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return entries, responses
			}
			t.Fatalf("scan recv: %v", err)
		}
		responses++
		entries = append(entries, resp.GetEntries()...)
	}
}
