package daemon_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	stated "github.com/statedhq/stated/sdk/go"
)

// TestADaemonStopsWithoutWaitingForItsClientsCommitStreams: a connected
// Client keeps a CommitStream open for as long as it lives. A daemon
// that stops ends it (the graceful stop waits for every stream to end)
// instead of waiting out its graceful stop's bound and cutting the
// calls in flight off.
func TestADaemonStopsWithoutWaitingForItsClientsCommitStreams(t *testing.T) {
	t.Parallel()
	var logs daemontest.Buffer
	d := daemontest.Start(t, func(c *daemon.Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := stated.Dial(ctx, d.SocketPath(), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Txn().Put("ns", []byte("k"), []byte("v")).Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if out := logs.String(); strings.Contains(out, "did not finish") {
		t.Fatalf("the daemon waited for the Client's stream and cut it off:\n%s", out)
	}
}
