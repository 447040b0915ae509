package daemontest

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon"
)

// startTimeout bounds how long Start waits for the daemon to elect itself.
const startTimeout = 30 * time.Second

// Start starts a single-node daemon for the test and closes it when the
// test ends. opts adjust the configuration before the daemon starts, e.g.
//
//	d := daemontest.Start(t, func(c *daemon.Config) { c.MaxMessageBytes = 1 << 20 })
//
// Clients reach it on d.SocketPath() or d.TCPAddr().
func Start(t testing.TB, opts ...func(*daemon.Config)) *daemon.Daemon {
	t.Helper()
	// Unix socket paths are limited to ~104 bytes; t.TempDir() can be
	// longer, so the socket gets a short directory of its own.
	sockDir, err := os.MkdirTemp("", "stated")
	if err != nil {
		t.Fatalf("daemontest: socket dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })

	logs := newTestHandler(t)
	cfg := daemon.DefaultConfig()
	cfg.NodeID = "node1"
	cfg.DataDir = t.TempDir()
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.RaftAddr = "127.0.0.1:0"
	cfg.SocketPath = filepath.Join(sockDir, "stated.sock")
	cfg.Logger = slog.New(logs)
	for _, o := range opts {
		o(&cfg)
	}

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	d, err := daemon.Start(ctx, cfg)
	if err != nil {
		logs.flush()
		t.Fatalf("daemontest: start daemon: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("daemontest: close daemon: %v", err)
		}
	})
	return d
}
