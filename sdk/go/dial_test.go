package stated

import (
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

func TestDialAddressParsing(t *testing.T) {
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr     string
		want     string // the gRPC target
		wantPath string // for unix targets: the socket path gRPC will see
	}{
		{addr: "unix:///run/stated/stated.sock", want: "unix:///run/stated/stated.sock", wantPath: "/run/stated/stated.sock"},
		{addr: "unix:relative.sock", want: "unix://" + filepath.Join(cwd, "relative.sock"), wantPath: filepath.Join(cwd, "relative.sock")},
		{addr: "unix:./d/x.sock", want: "unix://" + filepath.Join(cwd, "d/x.sock"), wantPath: filepath.Join(cwd, "d/x.sock")},
		{addr: "unix:/run/x.sock", want: "unix:///run/x.sock", wantPath: "/run/x.sock"},
		{addr: "unix://./stated-data/stated.sock", want: "unix://" + filepath.Join(cwd, "stated-data/stated.sock"), wantPath: filepath.Join(cwd, "stated-data/stated.sock")},
		{addr: "unix://../x.sock", want: "unix://" + filepath.Join(filepath.Dir(cwd), "x.sock"), wantPath: filepath.Join(filepath.Dir(cwd), "x.sock")},
		{addr: "unix:///tmp/odd%20dir/s.sock", want: "unix:///tmp/odd%20dir/s.sock", wantPath: "/tmp/odd dir/s.sock"},
		{addr: "unix-abstract:stated", want: "unix-abstract:stated"},
		{addr: "/run/stated.sock", want: "unix:///run/stated.sock", wantPath: "/run/stated.sock"},
		{addr: "/run/stated/socket", want: "unix:///run/stated/socket", wantPath: "/run/stated/socket"},
		{addr: "./stated-data/stated.sock", want: "unix://" + filepath.Join(cwd, "stated-data/stated.sock"), wantPath: filepath.Join(cwd, "stated-data/stated.sock")},
		{addr: "../x/s", want: "unix://" + filepath.Join(filepath.Dir(cwd), "x/s"), wantPath: filepath.Join(filepath.Dir(cwd), "x/s")},
		{addr: "stated.sock", want: "unix://" + filepath.Join(cwd, "stated.sock"), wantPath: filepath.Join(cwd, "stated.sock")},
		{addr: "/tmp/odd dir/a?b#c%d.sock", want: "unix:///tmp/odd%20dir/a%3Fb%23c%25d.sock", wantPath: "/tmp/odd dir/a?b#c%d.sock"},
		{addr: "127.0.0.1:7420", want: "127.0.0.1:7420"},
		{addr: "localhost:7420", want: "localhost:7420"},
		{addr: "[::1]:7420", want: "[::1]:7420"},
		{addr: "dns:///stated.internal:7420", want: "dns:///stated.internal:7420"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			got, err := parseAddr(tt.addr)
			if err != nil || got != tt.want {
				t.Fatalf("parseAddr = %q, %v; want %q", got, err, tt.want)
			}
			if tt.wantPath != "" {
				u, err := url.Parse(got)
				if err != nil || u.Path != tt.wantPath {
					t.Errorf("gRPC would dial %q (%v), want %q", u.Path, err, tt.wantPath)
				}
			}
		})
	}
	for _, bad := range []struct{ addr, say string }{
		{"", "empty"},
		{"localhost", "host:port"},
		{"stated", "host:port"},
		{"unix:", "no socket path"},
		{"localhost:", "no port"},
		{"127.0.0.1:99999", "port 99999 is not 1..65535"},
		{"127.0.0.1:0", "port 0 is not 1..65535"},
		// gRPC reads the host of unix://HOST/PATH as an authority and
		// refuses it; say how to write a relative path instead.
		{"unix://stated.sock", "unix:stated.sock"},
		{"unix://stated-data/stated.sock", "./stated-data/stated.sock"},
	} {
		got, err := parseAddr(bad.addr)
		if err == nil || !strings.Contains(err.Error(), bad.say) {
			t.Errorf("parseAddr(%q) = %q, %v; want an error saying %q", bad.addr, got, err, bad.say)
		}
	}
}

func TestDialGeneratesARandomHexClientID(t *testing.T) {
	ctx := context.Background()
	a, err := Dial(ctx, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Dial(ctx, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, id := range []string{a.ClientID(), b.ClientID()} {
		if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Errorf("client id %q is not 16 hex characters", id)
		}
	}
	if a.ClientID() == b.ClientID() {
		t.Errorf("two clients share the id %q", a.ClientID())
	}
	c, err := Dial(ctx, "127.0.0.1:1", WithClientID("svc-7"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.ClientID() != "svc-7" {
		t.Errorf("ClientID() = %q, want svc-7", c.ClientID())
	}
}

// commitServer answers every Commit with the number of commits so far.
type commitServer struct {
	statedv1.UnimplementedStateServer
	commits atomic.Uint64
}

func (s *commitServer) Commit(context.Context, *statedv1.CommitRequest) (*statedv1.CommitResponse, error) {
	return &statedv1.CommitResponse{Index: s.commits.Add(1)}, nil
}

func (s *commitServer) OpenSession(context.Context, *statedv1.OpenSessionRequest) (*statedv1.OpenSessionResponse, error) {
	return &statedv1.OpenSessionResponse{SessionId: 1, IdleTimeoutMillis: 3600_000}, nil
}

// serve runs a gRPC server with srv on l until the test ends.
func serve(t *testing.T, l net.Listener, srv statedv1.StateServer, opts ...grpc.ServerOption) {
	t.Helper()
	s := grpc.NewServer(opts...)
	statedv1.RegisterStateServer(s, srv)
	go s.Serve(l)
	t.Cleanup(s.Stop)
}

func TestDialReachesAServerOverUnixSocketAndTCP(t *testing.T) {
	dir, err := os.MkdirTemp("", "sdk") // short: socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &commitServer{}
	serve(t, ul, srv)
	serve(t, tl, srv)

	for _, addr := range []string{sock, "unix://" + sock, tl.Addr().String()} {
		t.Run(addr, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := Dial(ctx, addr, WithBlock())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			res, err := c.Txn().Commit(ctx)
			if err != nil || res.Index == 0 || c.LastIndex() != res.Index {
				t.Fatalf("Commit = %+v, %v; LastIndex %d", res, err, c.LastIndex())
			}
		})
	}
}

func TestDialWithBlockFailsFastWhenNothingListens(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := Dial(ctx, filepath.Join(t.TempDir(), "none.sock"), WithBlock())
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Dial: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Dial took %v to fail", d)
	}
}

// TestDialWithWaitForDaemonWaitsForADaemonThatStartsLater dials a socket
// nobody listens on yet, as a service does that starts before its
// sidecar, and starts the server a moment later: Dial returns once it
// answers, and a commit goes through.
func TestDialWithWaitForDaemonWaitsForADaemonThatStartsLater(t *testing.T) {
	dir, err := os.MkdirTemp("", "sdk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type dialed struct {
		c   *Client
		err error
	}
	done := make(chan dialed, 1)
	go func() {
		c, err := Dial(ctx, sock, WithWaitForDaemon(200*time.Millisecond))
		done <- dialed{c, err}
	}()
	// The first attempts fail (no socket); then the daemon comes up.
	time.Sleep(500 * time.Millisecond)
	select {
	case d := <-done:
		t.Fatalf("Dial returned before a daemon listened: %v", d.err)
	default:
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, l, &commitServer{})
	d := <-done
	if d.err != nil {
		t.Fatalf("Dial: %v", d.err)
	}
	defer d.c.Close()
	if res, err := d.c.Txn().Commit(ctx); err != nil || res.Index == 0 {
		t.Fatalf("Commit = %+v, %v", res, err)
	}

	// Nobody ever listens: Dial fails with ErrUnavailable when ctx ends.
	sctx, scancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer scancel()
	if _, err := Dial(sctx, filepath.Join(dir, "none.sock"), WithWaitForDaemon(0)); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "no daemon answered") {
		t.Fatalf("Dial with nobody listening: %v, want ErrUnavailable saying no daemon answered", err)
	}
}

func TestCallsAfterCloseReturnErrClosed(t *testing.T) {
	c, err := Dial(context.Background(), "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Txn().Commit(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Commit after Close: %v, want ErrClosed", err)
	}
}

func TestOversizedCommitFailsOnTheClientWithResourceExhausted(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &commitServer{}
	// The server would accept it: the limit that trips must be the client's.
	serve(t, l, srv, grpc.MaxRecvMsgSize(256<<20))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Dial(ctx, l.Addr().String(), WithMaxMessageSize(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Txn().Put("ns", []byte("k"), make([]byte, 2<<20)).Commit(ctx)
	if status.Code(err) != codes.ResourceExhausted || !errors.Is(err, ErrResourceExhausted) {
		t.Fatalf("Commit: %v (code %v), want ResourceExhausted", err, status.Code(err))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("oversized commit took %v to fail", d)
	}
	if n := srv.commits.Load(); n != 0 {
		t.Errorf("the server received %d commits", n)
	}
	// A commit under the limit still goes through on the same Client.
	if _, err := c.Txn().Put("ns", []byte("k"), make([]byte, 1<<10)).Commit(ctx); err != nil {
		t.Fatalf("small commit after an oversized one: %v", err)
	}
}

// TestDialRefusesAClientIDTheDaemonWouldRefuse: a bad client id fails at
// Dial, naming it, instead of at the first commit.
func TestDialRefusesAClientIDTheDaemonWouldRefuse(t *testing.T) {
	for _, tc := range []struct{ id, want string }{
		{strings.Repeat("c", 257), "client id: 257 bytes, limit 256"},
		{"a\xffb", "client id: not valid UTF-8"},
		{"proc\n1", "client id: control character U+000A at byte 4"},
	} {
		c, err := Dial(context.Background(), "unix:///nonexistent/stated.sock", WithClientID(tc.id))
		if err == nil {
			c.Close()
			t.Errorf("Dial with client id %q succeeded", tc.id)
			continue
		}
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Dial with client id %q: %v, want ErrInvalidArgument naming %q", tc.id, err, tc.want)
		}
	}
	c, err := Dial(context.Background(), "unix:///nonexistent/stated.sock", WithClientID(strings.Repeat("é", 128)))
	if err != nil {
		t.Fatalf("Dial with a 256-byte UTF-8 client id: %v", err)
	}
	c.Close()
}
