package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/raftstore/raftstoretest"
	stated "github.com/statedhq/stated/sdk/go"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// statedBinary is BENCH_STATED_BIN (run.sh builds it once), or else a
// stated built from this tree into a temp dir once per test binary.
func statedBinary(tb testing.TB) string {
	tb.Helper()
	if bin := os.Getenv("BENCH_STATED_BIN"); bin != "" {
		return bin
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "stated-bench-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "stated")
		if out, err := exec.Command("go", "build", "-o", builtBin, "../cmd/stated").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building stated: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return builtBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

// safeBuffer collects a process's output.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *safeBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// node is one `stated run` process on 127.0.0.1 ports, with its data dir
// in TMPDIR (the data dir's filesystem under run.sh).
type node struct {
	id, dataDir, socket, grpcAddr, raftAddr string
	cmd                                     *exec.Cmd
	done                                    chan struct{}
	logs                                    *safeBuffer
}

// freeAddr returns a loopback address whose port was free just now,
// below the kernel's ephemeral range, so that a node restarted on its
// ports (BenchmarkRejoin) finds them free (raftstoretest.FreeLoopbackAddr).
func freeAddr(tb testing.TB) string {
	tb.Helper()
	addr, err := raftstoretest.FreeLoopbackAddr()
	if err != nil {
		tb.Fatal(err)
	}
	return addr
}

// socketDir is a short directory for unix sockets (their paths are
// limited to 107 bytes): in TMPDIR if its path is short, else in /tmp.
func socketDir(tb testing.TB) string {
	tb.Helper()
	parent := ""
	if len(os.TempDir()) > 60 {
		parent = "/tmp"
	}
	dir, err := os.MkdirTemp(parent, "sb")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startCluster starts n `stated run` processes, n1 bootstrapping and the
// others joining it, with the flags in BENCH_STATED_FLAGS (split on
// spaces) added to each; it returns once every node serves and n1 counts
// n voters. The processes are SIGKILLed at cleanup.
func startCluster(tb testing.TB, n int) []*node {
	tb.Helper()
	bin := statedBinary(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := make([]*node, n)
	for i := range nodes {
		nd := &node{id: fmt.Sprint("n", i+1), dataDir: tb.TempDir(), socket: filepath.Join(socketDir(tb), "s.sock")}
		nodes[i] = nd
		tb.Cleanup(func() {
			nd.kill()
			if tb.Failed() && nd.logs != nil {
				tb.Logf("%s logs:\n%s", nd.id, nd.logs)
			}
		})
		var join []string
		if i > 0 {
			join = []string{"--join", nodes[0].grpcAddr}
		}
		nd.start(ctx, tb, bin, join)
	}
	c := dial(tb, nodes[0])
	for {
		m, err := c.Members(ctx)
		voters := 0
		for _, mb := range m.Members {
			if mb.Voter {
				voters++
			}
		}
		if err == nil && voters == n && m.LeaderID != "" {
			break
		}
		if ctx.Err() != nil {
			tb.Fatalf("cluster of %d did not form: %+v %v", n, m, err)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline (ctx)
	}
	return nodes
}

// start runs the node until its health service says SERVING; a first
// start that loses a port to another process picks new ports, at most
// three times.
func (nd *node) start(ctx context.Context, tb testing.TB, bin string, extra []string) {
	tb.Helper()
	for attempt := 1; ; attempt++ {
		nd.grpcAddr, nd.raftAddr = freeAddr(tb), freeAddr(tb)
		args := append([]string{"run", "--node-id", nd.id, "--data-dir", nd.dataDir, "--socket", nd.socket,
			"--grpc-addr", nd.grpcAddr, "--raft-addr", nd.raftAddr, "--log-level", "warn"}, extra...)
		args = append(args, strings.Fields(os.Getenv("BENCH_STATED_FLAGS"))...)
		nd.logs = &safeBuffer{}
		nd.cmd = daemontest.DieWithParent(exec.Command(bin, args...))
		nd.cmd.Stdout, nd.cmd.Stderr = nd.logs, nd.logs
		if err := nd.cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		nd.done = make(chan struct{})
		go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(nd.cmd, nd.done)
		if nd.waitServing(ctx, tb) {
			return
		}
		if attempt == 3 || !strings.Contains(nd.logs.String(), "address already in use") {
			tb.Fatalf("%s: stated exited during start:\n%s", nd.id, nd.logs)
		}
	}
}

// conn returns a gRPC connection to the node's unix socket, closed when
// tb ends.
func (nd *node) conn(tb testing.TB) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient("unix://"+nd.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// waitServing polls the node's health until SERVING; false if the process
// exited first.
func (nd *node) waitServing(ctx context.Context, tb testing.TB) bool {
	conn, err := grpc.NewClient("unix://"+nd.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close() // now: a node started again many times dials each time
	hc := healthpb.NewHealthClient(conn)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING {
			return true
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("%s did not become healthy: %v (last: %v)\n%s", nd.id, ctx.Err(), err, nd.logs)
		case <-nd.done:
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// kill sends SIGKILL and waits for the process to exit.
func (nd *node) kill() {
	if nd.cmd == nil || nd.cmd.Process == nil {
		return
	}
	nd.cmd.Process.Signal(syscall.SIGKILL)
	<-nd.done
	nd.cmd = nil
}

// memory reads the process's peak and current resident set sizes
// (VmHWM, VmRSS) from /proc, in MB.
func (nd *node) memory() (hwmMB, rssMB float64, err error) {
	v, err := procStatusMB(nd.cmd.Process.Pid, "VmHWM", "VmRSS")
	if err != nil {
		return 0, 0, err
	}
	return v[0], v[1], nil
}

// procStatusMB reads the named fields (in kB) of process pid's
// /proc/PID/status, in MB, in the order named.
func procStatusMB(pid int, names ...string) ([]float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(data), "\n")
	out := make([]float64, len(names))
	for i, name := range names {
		found := false
		for _, line := range lines {
			if rest, ok := strings.CutPrefix(line, name+":"); ok {
				kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
				if err != nil {
					return nil, fmt.Errorf("/proc/%d/status: %s %q: %v", pid, name, rest, err)
				}
				out[i], found = kb/1024, true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("/proc/%d/status has no %s", pid, name)
		}
	}
	return out, nil
}

// dial opens an SDK Client on the node's unix socket, as the service
// beside it would.
func dial(tb testing.TB, nd *node) *stated.Client {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := stated.Dial(ctx, nd.socket, stated.WithBlock())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// leader returns the node whose daemon says it leads, polling until one
// does.
func leader(tb testing.TB, nodes []*node) *node {
	tb.Helper()
	clients := make([]*stated.Client, len(nodes))
	for i, nd := range nodes {
		clients[i] = dial(tb, nd)
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		for i, nd := range nodes {
			st, err := clients[i].NodeStatus(context.Background())
			if err == nil && st.Role == "leader" {
				return nd
			}
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	tb.Fatal("no leader within a minute")
	return nil
}

// otherThan is the first of nodes that is not nd: a follower, given the
// leader.
func otherThan(nodes []*node, nd *node) *node {
	for _, o := range nodes {
		if o != nd {
			return o
		}
	}
	return nil
}
