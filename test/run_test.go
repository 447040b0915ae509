package test

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestRunStopsCleanlyOnSignalsAndRestartsWithItsState checks that SIGTERM
// and SIGINT shut stated down with exit code 0 and leave a data dir that the
// next start opens with every commit in it.
func TestRunStopsCleanlyOnSignalsAndRestartsWithItsState(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := newNode(t)
	for i, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		n.start(ctx)
		client, closeConn := n.client()
		if _, err := client.Commit(ctx, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{
			Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, Namespace: "run", Key: []byte("starts"), Delta: 1,
		}}}); err != nil {
			t.Fatal(err)
		}
		resp, err := client.Get(ctx, &statedv1.GetRequest{Namespace: "run", Key: []byte("starts"), Kind: statedv1.Kind_KIND_COUNTER})
		closeConn()
		if err != nil || resp.Counter != int64(i+1) {
			t.Fatalf("start %d: counter = %v, %v; want %d", i+1, resp.GetCounter(), err, i+1)
		}
		logs := n.logs.String()
		if code := n.stop(sig); code != 0 {
			t.Fatalf("exit code after %v = %d, want 0\n%s", sig, code, n.logs)
		}
		for _, want := range []string{n.socket, n.grpcAddr} {
			if !strings.Contains(logs, want) {
				t.Errorf("start output does not name the address %s:\n%s", want, logs)
			}
		}
	}
}
