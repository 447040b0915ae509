package daemon_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dial(t *testing.T, target string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// shortDir is a temporary directory short enough for a unix socket path.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "stated")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func testConfig(t *testing.T) daemon.Config {
	cfg := daemon.DefaultConfig()
	cfg.NodeID = "n1"
	cfg.DataDir = t.TempDir()
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.RaftAddr = "127.0.0.1:0"
	cfg.SocketPath = filepath.Join(shortDir(t), "s.sock")
	return cfg
}

func TestDaemonServesHealthAndReflectionOnBothListeners(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	for _, target := range []string{d.TCPAddr(), "unix://" + d.SocketPath()} {
		conn := dial(t, target)
		resp, err := healthpb.NewHealthClient(conn).Check(testContext(t), &healthpb.HealthCheckRequest{Service: "stated.v1.State"})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("%s: health = %v, %v; want SERVING", target, resp, err)
		}
		stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(testContext(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatal(err)
		}
		rr, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range rr.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		if !strings.Contains(strings.Join(names, " "), "stated.v1.State") {
			t.Errorf("%s: reflection lists %v, want stated.v1.State", target, names)
		}
	}
}

func TestStartRefusesASocketAnotherDaemonServes(t *testing.T) {
	t.Parallel()
	first := daemontest.Start(t)
	cfg := testConfig(t)
	cfg.SocketPath = first.SocketPath()
	d, err := daemon.Start(testContext(t), cfg)
	if err == nil {
		d.Close()
		t.Fatal("second daemon started on a live socket")
	}
	if !strings.Contains(err.Error(), "another daemon is serving on "+first.SocketPath()) {
		t.Errorf("error = %v", err)
	}
	// The first daemon still serves.
	if _, err := statedv1.NewStateClient(dial(t, "unix://"+first.SocketPath())).GetOffsets(testContext(t), &statedv1.GetOffsetsRequest{Group: "g"}); err != nil {
		t.Errorf("first daemon after the refused start: %v", err)
	}
}

func TestStartReplacesAStaleSocketFile(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	ln, err := net.Listen("unix", cfg.SocketPath)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // leaves the file behind, as a crash would
	d, err := daemon.Start(testContext(t), cfg)
	if err != nil {
		t.Fatalf("start over a stale socket: %v", err)
	}
	d.Close()
}

func TestStartRefusesToRemoveAFileThatIsNotASocket(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	if err := os.WriteFile(cfg.SocketPath, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	if d, err := daemon.Start(testContext(t), cfg); err == nil {
		d.Close()
		t.Fatal("started over a regular file")
	} else if !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("error = %v", err)
	}
	if b, _ := os.ReadFile(cfg.SocketPath); string(b) != "precious" {
		t.Error("the file was changed")
	}
}

func TestCloseRemovesTheSocketAndIsIdempotent(t *testing.T) {
	t.Parallel()
	d, err := daemon.Start(testContext(t), testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := os.Lstat(d.SocketPath()); !os.IsNotExist(err) {
		t.Errorf("socket file after Close: %v", err)
	}
	if conn, err := net.DialTimeout("tcp", d.TCPAddr(), time.Second); err == nil {
		conn.Close()
		t.Error("TCP address still accepts connections after Close")
	}
}

func TestRestartedDaemonKeepsCommittedState(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	d, err := daemon.Start(testContext(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := statedv1.NewStateClient(dial(t, d.TCPAddr()))
	_, err = c.Commit(testContext(t), &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{
		Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "ns", Key: []byte("k"), Value: []byte("v"),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	d, err = daemon.Start(testContext(t), cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer d.Close()
	c = statedv1.NewStateClient(dial(t, d.TCPAddr()))
	r, err := c.Get(testContext(t), &statedv1.GetRequest{Namespace: "ns", Key: []byte("k"), Kind: statedv1.Kind_KIND_VALUE})
	if err != nil || string(r.GetValue()) != "v" {
		t.Errorf("after restart: %v, %v; want v", r, err)
	}
}

func TestLeaderProposesExpiryOnlyOnceEntriesAreDue(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t, func(c *daemon.Config) { c.ExpiryInterval = 20 * time.Millisecond })
	c := statedv1.NewStateClient(dial(t, d.TCPAddr()))
	resp, err := c.Commit(testContext(t), &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{
		Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "ns", Key: []byte("k"), Value: []byte("v"), TtlMillis: 200,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	// The expiry entry is the next one after the commit.
	deadline := time.Now().Add(10 * time.Second)
	for d.Store().AppliedIndex() <= resp.GetIndex() {
		if time.Now().After(deadline) {
			t.Fatalf("no expiry entry was proposed; applied index %d", d.Store().AppliedIndex())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := d.Store().AppliedIndex(); got != resp.GetIndex()+1 {
		t.Errorf("applied index %d, want exactly one expiry entry after %d", got, resp.GetIndex())
	}
}

func TestConfigValidateNamesTheBadField(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		change func(*daemon.Config)
		want   string
	}{
		{"empty node id", func(c *daemon.Config) { c.NodeID = "" }, "NodeID"},
		{"empty data dir", func(c *daemon.Config) { c.DataDir = "" }, "DataDir"},
		{"grpc address without port", func(c *daemon.Config) { c.GRPCAddr = "localhost" }, "GRPCAddr"},
		{"grpc address with a port above 65535", func(c *daemon.Config) { c.GRPCAddr = "127.0.0.1:70000" }, "GRPCAddr"},
		{"raft address with a port above 65535", func(c *daemon.Config) { c.RaftAddr = "127.0.0.1:99999" }, "RaftAddr"},
		{"raft advertised with a port above 65535", func(c *daemon.Config) { c.AdvertiseRaftAddr = "stated-0.peers:99999" }, "AdvertiseRaftAddr"},
		{"grpc advertised with a port above 65535", func(c *daemon.Config) { c.AdvertiseGRPCAddr = "stated-0.peers:99999" }, "AdvertiseGRPCAddr"},
		{"metrics address with a port above 65535", func(c *daemon.Config) { c.MetricsAddr = "127.0.0.1:99999" }, "MetricsAddr"},
		{"join address with a port above 65535", func(c *daemon.Config) { c.Join = []string{"stated-0.peers:99999"} }, "Join[0]"},
		{"empty raft address", func(c *daemon.Config) { c.RaftAddr = "" }, "RaftAddr"},
		{"socket path too long", func(c *daemon.Config) { c.SocketPath = "/tmp/" + strings.Repeat("s", 120) }, "SocketPath"},
		{"data dir too deep for the default socket", func(c *daemon.Config) { c.DataDir = "/tmp/" + strings.Repeat("d", 120) }, "SocketPath"},
		{"tiny message size", func(c *daemon.Config) { c.MaxMessageBytes = 1000 }, "MaxMessageBytes"},
		{"tiny in-flight budget", func(c *daemon.Config) { c.MaxInflightRequestBytes = 1000 }, "MaxInflightRequestBytes"},
		{"negative in-flight budget", func(c *daemon.Config) { c.MaxInflightRequestBytes = -1 }, "MaxInflightRequestBytes"},
		{"negative free disk minimum", func(c *daemon.Config) { c.MinFreeDiskBytes = -1 }, "MinFreeDiskBytes"},
		{"negative expiry interval", func(c *daemon.Config) { c.ExpiryInterval = -time.Second }, "ExpiryInterval"},
		{"raft bound to every interface, not advertised", func(c *daemon.Config) { c.RaftAddr = "0.0.0.0:7421" }, "AdvertiseRaftAddr"},
		{"raft bound to an empty host, not advertised", func(c *daemon.Config) { c.RaftAddr = ":7421" }, "AdvertiseRaftAddr"},
		{"raft advertised without a port", func(c *daemon.Config) { c.AdvertiseRaftAddr = "stated-0.peers" }, "AdvertiseRaftAddr"},
		{"raft advertised on every interface", func(c *daemon.Config) { c.AdvertiseRaftAddr = "0.0.0.0:7421" }, "AdvertiseRaftAddr"},
		{"raft advertised on port 0", func(c *daemon.Config) { c.AdvertiseRaftAddr = "stated-0.peers:0" }, "AdvertiseRaftAddr"},
		{"bootstrap node without a join list", func(c *daemon.Config) { c.BootstrapNodeID = "n1" }, "BootstrapNodeID"},
		{"unknown raft log store", func(c *daemon.Config) { c.RaftLogStore = "bolt" }, "RaftLogStore"},
		{"block cache below 1 MiB", func(c *daemon.Config) { c.CacheSize = 1000 }, "CacheSize"},
		{"negative window cache", func(c *daemon.Config) { c.WindowCacheSize = -1 }, "WindowCacheSize"},
		{"negative raft snapshot bytes", func(c *daemon.Config) { c.SnapshotBytes = -1 }, "SnapshotBytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := daemon.DefaultConfig()
			tc.change(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want an error naming %s", err, tc.want)
			}
		})
	}
	cfg := daemon.DefaultConfig()
	cfg.GRPCAddr = ""
	if err := cfg.Validate(); err != nil {
		t.Errorf("default config with TCP disabled: %v", err)
	}
	cfg = daemon.DefaultConfig()
	cfg.RaftAddr, cfg.AdvertiseRaftAddr = "0.0.0.0:7421", "stated-0.stated-peers.default.svc.cluster.local:7421"
	cfg.Join, cfg.BootstrapNodeID = []string{"stated-0.stated-peers:7420", "stated-1.stated-peers:7420"}, "stated-0"
	if err := cfg.Validate(); err != nil {
		t.Errorf("a StatefulSet member's config: %v", err)
	}
}
