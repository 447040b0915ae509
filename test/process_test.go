package test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/internal/s3test"
	"github.com/statedhq/stated/internal/testenv"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore/raftstoretest"
)

var (
	binDirOnce sync.Once
	binDirErr  error
	buildOnce  sync.Once
	binDir     string
	statedBin  string
	buildErr   error
)

// binaryDir creates binDir, where the tests' binaries are built, once;
// TestMain removes it.
func binaryDir() (string, error) {
	binDirOnce.Do(func() { binDir, binDirErr = os.MkdirTemp("", "stated-bin") })
	return binDir, binDirErr
}

// statedBinary builds cmd/stated once for the package's tests that run it
// as a process, and returns its path.
func statedBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if _, buildErr = binaryDir(); buildErr != nil {
			return
		}
		statedBin = filepath.Join(binDir, "stated")
		out, err := exec.Command("go", "build", "-o", statedBin, "../cmd/stated").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("building stated: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return statedBin
}

// exampleBuild is one examples/<name> binary, built once per test run.
type exampleBuild struct {
	once sync.Once
	path string
	err  error
}

var (
	examplesMu sync.Mutex
	examples   = map[string]*exampleBuild{}
)

// exampleBinary builds examples/<name> once for the package's tests that
// run it as a process, and returns its path.
func exampleBinary(t *testing.T, name string) string {
	t.Helper()
	examplesMu.Lock()
	b := examples[name]
	if b == nil {
		b = &exampleBuild{}
		examples[name] = b
	}
	examplesMu.Unlock()
	b.once.Do(func() {
		dir, err := binaryDir()
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, name)
		if out, err := exec.Command("go", "build", "-o", b.path, "../examples/"+name).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("building examples/%s: %v\n%s", name, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func counterBinary(t *testing.T) string { return exampleBinary(t, "counter") }

// testRaftLogStore is STATED_TEST_RAFT_LOG_STORE: the Raft log store (wal
// or boltdb) of every `stated run` and `stated restore` the tests start,
// so that the crash and chaos suite runs on either. Empty: stated's
// default. A test that gives --raft-log-store itself keeps its own.
var testRaftLogStore = os.Getenv("STATED_TEST_RAFT_LOG_STORE")

func TestMain(m *testing.M) {
	switch testRaftLogStore {
	case "", "wal", "boltdb":
	default:
		fmt.Fprintf(os.Stderr, "STATED_TEST_RAFT_LOG_STORE %q: want wal or boltdb\n", testRaftLogStore)
		os.Exit(2)
	}
	if testRaftLogStore != "" {
		// `stated restore --node-id` creates a Raft log too; it reads
		// STATED_RAFT_LOG_STORE, which every stated the tests start
		// inherits.
		os.Setenv("STATED_RAFT_LOG_STORE", testRaftLogStore)
	}
	s3TestEnv()
	testenv.DefaultParallel(testParallel, raceTestParallel)
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// s3TestEnv gives this process, and so every stated it starts, the
// credentials of the tests' S3 servers (newCkptS3): set once here rather
// than with t.Setenv, which would keep those tests from running in
// parallel.
func s3TestEnv() {
	for k, v := range s3test.Env {
		os.Setenv(k, v)
	}
}

// testParallel is how many of this package's tests run at once unless
// go test is given -parallel. They spend most of their time waiting on
// the processes they start: on 2 cores the package took 5.8 minutes of
// wall time and 4.3 of CPU at go test's default of GOMAXPROCS (2), and
// 4.0 minutes of wall time and 4.1 of CPU at 4.
const testParallel = 6

// raceTestParallel is testParallel under the race detector, where the
// tests' in-process daemons and clients are race builds, several times
// the CPU, and CI runs other race-built packages beside them: at 6 the
// 2-core machine stayed over 80% CPU pressure for minutes (the stall
// report of a daemontest start that took 32 s: "some avg60=88"), and
// Raft leaders missed their 500 ms leases one after the other.
const raceTestParallel = 3

// node is one `stated run` process and the directories it keeps across
// restarts.
type node struct {
	t        testing.TB
	id       string
	args     []string // extra flags for `stated run`
	wrap     []string // a command that runs stated, e.g. ip netns exec NS
	dataDir  string
	socket   string
	grpcAddr string
	raftAddr string

	mu   sync.Mutex
	cmd  *exec.Cmd
	logs *daemontest.Buffer
	done chan struct{}
	// started is set once stated first became healthy.
	started bool
}

// Addresses freeAddr has handed out: the tests run in parallel, and a
// port closed here is free again for the kernel to give to the next
// caller before the first caller's process has bound it.
var (
	freeAddrsMu sync.Mutex
	freeAddrs   = map[string]bool{}
)

// freeAddr returns a loopback address whose port was free just now and
// that no other caller in this process has been given, below the
// kernel's ephemeral range (raftstoretest.FreeLoopbackAddr), so that no
// outgoing connection takes the port of a node killed to be restarted.
func freeAddr(t testing.TB) string {
	t.Helper()
	for range 100 {
		addr, err := raftstoretest.FreeLoopbackAddr()
		if err != nil {
			t.Fatal(err)
		}
		freeAddrsMu.Lock()
		given := freeAddrs[addr]
		freeAddrs[addr] = true
		freeAddrsMu.Unlock()
		if !given {
			return addr
		}
	}
	t.Fatal("freeAddr: 100 ports in a row had been handed out before")
	return ""
}

func newNode(t testing.TB) *node { return newNamedNode(t, "n1") }

// newNamedNode is a node with its own id, data dir, socket and ports.
func newNamedNode(t testing.TB, id string) *node {
	sockDir, err := os.MkdirTemp("", "stated")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	n := &node{
		t:        t,
		id:       id,
		dataDir:  t.TempDir(),
		socket:   filepath.Join(sockDir, "s.sock"),
		grpcAddr: freeAddr(t),
		raftAddr: freeAddr(t),
	}
	t.Cleanup(func() {
		n.kill()
		if t.Failed() && n.logs != nil {
			t.Logf("stated logs:\n%s", n.logs)
		}
	})
	return n
}

// start runs `stated run` and waits until its health service says SERVING.
//
// The ports freeAddr picked are free when picked, not when stated binds
// them: another process of the test run may take one in between. So the
// first start of a node whose stated exits because an address is in use
// picks new ports and starts again (a few times at most); a restart keeps
// its addresses, which its cluster knows it by.
func (n *node) start(ctx context.Context) {
	n.t.Helper()
	for attempt := 1; ; attempt++ {
		exited := n.startOnce(ctx)
		if !exited {
			n.started = true
			return
		}
		if n.started || attempt == 3 || len(n.wrap) > 0 || !strings.Contains(n.logs.String(), "address already in use") {
			n.t.Fatalf("stated exited during start")
		}
		n.t.Logf("%s: a port was taken between picking and binding it; starting again on new ports", n.id)
		oldGRPC, oldRaft := n.grpcAddr, n.raftAddr
		n.grpcAddr, n.raftAddr = freeAddr(n.t), freeAddr(n.t)
		n.args = withNewPorts(n.args, map[string]string{oldGRPC: n.grpcAddr, oldRaft: n.raftAddr})
	}
}

// withNewPorts returns args with every address whose port moved (a key
// of moved, the old address, to its value) following it, under any host
// name: a test that passes --advertise-raft-addr localhost:PORT for the
// node's --raft-addr must advertise the port it binds after a start on
// new ports, or its cluster adds it at an address nobody serves.
func withNewPorts(args []string, moved map[string]string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		for old, now := range moved {
			_, oldPort, err1 := net.SplitHostPort(old)
			_, newPort, err2 := net.SplitHostPort(now)
			if err1 != nil || err2 != nil {
				continue
			}
			a = portRef(oldPort).ReplaceAllString(a, "${1}:"+newPort+"${2}")
		}
		out[i] = a
	}
	return out
}

// portRef matches ":port" as a whole port in a host:port, alone or in a
// comma-separated list.
func portRef(port string) *regexp.Regexp {
	return regexp.MustCompile(`(^|[^,\s]+):` + regexp.QuoteMeta(port) + `($|,)`)
}

// startOnce runs stated and waits until it is healthy; it reports whether
// stated exited first.
func (n *node) startOnce(ctx context.Context) (exited bool) {
	n.t.Helper()
	// Built before n.mu is taken: a failed build ends the test, and the
	// cleanup's kill takes n.mu.
	bin := statedBinary(n.t)
	n.mu.Lock()
	n.logs = &daemontest.Buffer{}
	argv := append([]string{bin, "run", "--node-id", n.id, "--data-dir", n.dataDir,
		"--socket", n.socket, "--grpc-addr", n.grpcAddr, "--raft-addr", n.raftAddr}, n.args...)
	if host, _, err := net.SplitHostPort(n.grpcAddr); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsLoopback() {
			// A network namespace lab's address: a network the test made
			// itself, which nobody else reaches; stated refuses to serve
			// a non-loopback address open unless told so.
			argv = append(argv, "--insecure")
		}
	}
	if testRaftLogStore != "" && !slices.Contains(n.args, "--raft-log-store") {
		argv = append(argv, "--raft-log-store", testRaftLogStore)
	}
	argv = append(append([]string{}, n.wrap...), argv...)
	n.cmd = daemontest.DieWithParent(exec.Command(argv[0], argv[1:]...))
	n.cmd.Stdout, n.cmd.Stderr = n.logs, n.logs
	if err := n.cmd.Start(); err != nil {
		n.mu.Unlock()
		n.t.Fatal(err)
	}
	n.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(n.cmd, n.done)
	n.mu.Unlock()

	conn := n.dial()
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{})
		cancel()
		// Healthy, and the banner printed: stated serves before it
		// prints the banner (in one write), and tests read it.
		if err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING &&
			strings.Contains(n.logs.String(), "stated: node "+n.id+" serving\n") {
			return false
		}
		select {
		case <-ctx.Done():
			n.t.Fatalf("stated did not become healthy: %v (last: %v)", ctx.Err(), err)
		case <-n.done:
			n.mu.Lock()
			n.cmd = nil
			n.mu.Unlock()
			return true
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// kill sends SIGKILL and waits for the process to die.
func (n *node) kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.done
	n.cmd = nil
}

func (n *node) dial() *grpc.ClientConn {
	n.t.Helper()
	conn, err := grpc.NewClient("unix://"+n.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		n.t.Fatal(err)
	}
	return conn
}

func (n *node) client() (statedv1.StateClient, func()) {
	conn := n.dial()
	return statedv1.NewStateClient(conn), func() { conn.Close() }
}

// stop sends sig and waits, bounded, for the process to exit; it returns
// the exit code.
func (n *node) stop(sig syscall.Signal) int {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		n.t.Fatal("stop: not running")
	}
	n.cmd.Process.Signal(sig)
	select {
	case <-n.done:
	case <-time.After(30 * time.Second):
		n.cmd.Process.Kill()
		<-n.done
		n.t.Fatalf("stated did not exit within 30s of %v", sig)
	}
	code := n.cmd.ProcessState.ExitCode()
	n.cmd = nil
	return code
}

// skipLong skips a long end-to-end test under -race or -short: in the
// CI's second stage (.ci/run), which runs test/ on raft-boltdb with
// -short beside the race detector's run of the other packages, and in
// any race run. The README's test command runs it; what it runs in this
// process (the SDK, the Kafka processor, an in-process daemon's window
// code) runs under -race in the tests of sdk/go, sdk/go/kafka, daemon
// and raftstore, and the stated processes it starts are not built with
// -race. Skipping keeps the CI under 20 minutes on two cores.
func skipLong(t *testing.T) {
	t.Helper()
	if testenv.Race || testing.Short() {
		t.Skip("long end-to-end test: runs in go test ./... (not under -race or -short); its in-process code runs under -race in its own packages")
	}
}

// TestWithNewPortsFollowsTheMovedPorts: the arguments of a node started
// again on new ports name the new ones, under any host name, alone or in
// a list, and nothing else changes.
func TestWithNewPortsFollowsTheMovedPorts(t *testing.T) {
	t.Parallel()
	got := withNewPorts([]string{"--join", "127.0.0.1:40001,127.0.0.1:40002,127.0.0.1:400011", "--advertise-raft-addr", "localhost:40002", "--x", "40002", "a:40001b"},
		map[string]string{"127.0.0.1:40001": "127.0.0.1:50001", "127.0.0.1:40002": "127.0.0.1:50002"})
	want := []string{"--join", "127.0.0.1:50001,127.0.0.1:50002,127.0.0.1:400011", "--advertise-raft-addr", "localhost:50002", "--x", "40002", "a:40001b"}
	if !slices.Equal(got, want) {
		t.Fatalf("withNewPorts = %q, want %q", got, want)
	}
}
