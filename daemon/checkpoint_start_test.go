package daemon_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
)

// dirEntries names what dir holds.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// startRefused starts a daemon with cfg and fails the test unless Start
// fails with an error that contains want.
func startRefused(ctx context.Context, t *testing.T, cfg daemon.Config, want string) {
	t.Helper()
	d, err := daemon.Start(ctx, cfg)
	if err == nil {
		d.Close()
		t.Fatal("Start succeeded")
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
}

// TestABadCheckpointURLStopsAJoiningNodeBeforeItJoins: a node given
// --join and a checkpoint URL it cannot use fails to start without
// asking the cluster to add it, so that a one-node cluster is not left
// with a dead second voter (and no majority).
func TestABadCheckpointURLStopsAJoiningNodeBeforeItJoins(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 1)
	cfg := daemontest.Config(t, "node2")
	cfg.Join = []string{nodes[0].TCPAddr()}
	cfg.CheckpointURL = "foo://bar"
	d, err := daemon.Start(testContext(t), cfg)
	if err == nil {
		d.Close()
		t.Fatal("Start succeeded with checkpoint URL foo://bar")
	}
	if !strings.Contains(err.Error(), `unknown scheme "foo"`) {
		t.Errorf("error %q does not name the unknown scheme", err)
	}
	members, _, err := nodes[0].Store().Members()
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 1 || members[0].ID != "node1" {
		t.Errorf("the cluster's configuration after the refused start = %+v, want node1 alone", members)
	}
	if got := dirEntries(t, cfg.DataDir); len(got) != 0 {
		t.Errorf("the joining node's data dir holds %v, want nothing", got)
	}
	// The cluster still has its majority: a commit goes through at once.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := stateClient(t, nodes[0]).Commit(ctx, putReq("k", "v")); err != nil {
		t.Errorf("commit after the refused start: %v", err)
	}
}

// TestABadCheckpointConfigStopsAStandaloneNodeBeforeItBootstraps: a
// checkpoint bucket (or Kafka client) that cannot be used fails Start
// before the store is opened, so the data dir holds no Raft state (no
// raft/, no state/) and the next start, with a good config, bootstraps
// it as new.
func TestABadCheckpointConfigStopsAStandaloneNodeBeforeItBootstraps(t *testing.T) {
	t.Parallel()
	// A file:// bucket whose directory cannot be created: its parent is
	// a regular file.
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	underFile := (&url.URL{Scheme: "file", Path: filepath.Join(file, "bucket")}).String()
	for name, tc := range map[string]struct {
		set  func(*daemon.Config)
		want string
	}{
		"unknown scheme":           {func(c *daemon.Config) { c.CheckpointURL = "foo://bar" }, `unknown scheme "foo"`},
		"file bucket under a file": {func(c *daemon.Config) { c.CheckpointURL = underFile }, "daemon: checkpoint bucket: uploader: open bucket"},
		"s3 bucket that cannot be reached": {func(c *daemon.Config) {
			c.CheckpointURL = "s3://ckpt?endpoint=http://127.0.0.1:1&use_path_style=true&region=us-east-1&disable_https=true"
		}, "checkpoint bucket s3://ckpt"},
		"kafka broker without a port number": {func(c *daemon.Config) { c.KafkaBrokers = []string{"kafka:notaport"} }, "daemon: kafka client for kafka:notaport"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := daemontest.Config(t, "n1")
			cfg.CheckpointURL = fileBucket(t)
			tc.set(&cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			startRefused(ctx, t, cfg, tc.want)
			if got := dirEntries(t, cfg.DataDir); len(got) != 0 {
				t.Fatalf("the data dir holds %v after the refused start, want nothing (no Raft state)", got)
			}
			if _, err := os.Lstat(cfg.SocketPath); !os.IsNotExist(err) {
				t.Errorf("socket file after the refused start: %v", err)
			}
			// With a usable config the same data dir starts as a new node.
			cfg.CheckpointURL, cfg.KafkaBrokers = fileBucket(t), nil
			d, err := daemon.Start(ctx, cfg)
			if err != nil {
				t.Fatalf("start with a good bucket after the refused one: %v", err)
			}
			defer d.Close()
			if _, err := stateClient(t, d).Commit(ctx, putReq("k", "v")); err != nil {
				t.Errorf("commit: %v", err)
			}
		})
	}
}

// TestARefusedStartRemovesTheDataDirItCreated: a start refused before the
// store opens changes nothing on disk. A data dir that did not exist is
// not left behind (empty, with the empty default checkpoint directory);
// one that existed is kept, with whatever it held.
func TestARefusedStartRemovesTheDataDirItCreated(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		set  func(*daemon.Config)
		want string
	}{
		"unknown checkpoint scheme": {func(c *daemon.Config) { c.CheckpointURL = "foo://bar" }, `unknown scheme "foo"`},
		"kafka broker without a port number, default bucket": {func(c *daemon.Config) {
			c.CheckpointURL, c.KafkaBrokers = "", []string{"kafka:notaport"}
		}, "daemon: kafka client for kafka:notaport"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := daemontest.Config(t, "n1")
			cfg.DataDir = filepath.Join(t.TempDir(), "new", "data")
			tc.set(&cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			startRefused(ctx, t, cfg, tc.want)
			if _, err := os.Lstat(cfg.DataDir); !os.IsNotExist(err) {
				t.Errorf("the data dir after the refused start: %v, want it absent", err)
			}
			// A data dir that existed stays, and so does what it holds.
			if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
				t.Fatal(err)
			}
			kept := filepath.Join(cfg.DataDir, "operator-notes")
			if err := os.WriteFile(kept, []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			startRefused(ctx, t, cfg, tc.want)
			if _, err := os.Stat(kept); err != nil {
				t.Errorf("a file in the existing data dir after the refused start: %v", err)
			}
		})
	}
}
