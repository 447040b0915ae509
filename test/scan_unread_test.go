package test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// vmRSS is process pid's VmRSS in bytes.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	must(t, err)
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			must(t, err)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

func (n *node) pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd.Process.Pid
}

// TestUnreadScansHoldBoundedMemory: a client that opens Scan streams over
// a few MB of state and never reads them made the daemon hold, per
// stream, the batch it had queued to send (2.5–4.5 MiB): 400 such streams
// took its RSS from 103 to 1,897 MiB. The daemon serves at most 32 scans
// at once (grpcapi.maxScans); a scan beyond them waits, bounded by its
// deadline, and runs once one ends. Other calls are not held up.
func TestUnreadScansHoldBoundedMemory(t *testing.T) {
	t.Parallel()
	skipLong(t)
	n := newNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n.start(ctx)
	st, done := n.client()
	defer done()

	// 4 MiB of state: 128 values of 32 KiB.
	val := make([]byte, 32<<10)
	for c := range 4 {
		req := &statedv1.CommitRequest{}
		for i := range 32 {
			req.Mutations = append(req.Mutations, &statedv1.Mutation{Kind: statedv1.MutationKind_MUTATION_KIND_PUT,
				Namespace: "big", Key: fmt.Appendf(nil, "k-%d-%d", c, i), Value: val})
		}
		_, err := st.Commit(ctx, req)
		must(t, err)
	}
	time.Sleep(time.Second)
	rss0 := vmRSS(t, n.pid())

	const conns, perConn = 4, 100
	sctx, scancel := context.WithCancel(ctx)
	var ccs []*grpc.ClientConn
	for range conns {
		// Fixed 64 KiB flow-control windows, which turn gRPC's window
		// growth (BDP estimation) off: with it a stream's window grows to
		// megabytes, and on a fast day the daemon sent whole scans into
		// this client's buffers within the sleep below, which freed every
		// slot (CI at 36b7bb8: the scan meant to wait ran, RSS 101 -> 433
		// MiB). Unread, a scan must block the daemon's send, as it does
		// for a client that reads nothing.
		cc, err := grpc.NewClient("unix://"+n.socket, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		must(t, err)
		ccs = append(ccs, cc)
		c := statedv1.NewStateClient(cc)
		for range perConn {
			_, err := c.Scan(sctx, &statedv1.ScanRequest{Namespace: "big"}) // opened, never read
			must(t, err)
		}
	}
	defer func() {
		for _, cc := range ccs {
			cc.Close()
		}
	}()
	time.Sleep(5 * time.Second)
	rss1 := vmRSS(t, n.pid())
	t.Logf("%d unread scans: RSS %d MiB -> %d MiB", conns*perConn, rss0>>20, rss1>>20)
	// Before the limit the growth was 1.5-1.8 GB; with it 119-367 MiB
	// (the Go heap's garbage and the machine's load move it).
	if grow := rss1 - rss0; grow > 768<<20 {
		t.Fatalf("the daemon's RSS grew by %d MiB for %d Scan streams one client opened and never read", grow>>20, conns*perConn)
	}
	// Another client's commit is answered; its scan waits for a slot.
	_, err := st.Commit(ctx, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_PUT,
		Namespace: "small", Key: []byte("k"), Value: []byte("v")}}})
	must(t, err)
	wctx, wcancel := context.WithTimeout(ctx, time.Second)
	defer wcancel()
	scan := func(ctx context.Context) error {
		s, err := st.Scan(ctx, &statedv1.ScanRequest{Namespace: "small"})
		if err != nil {
			return err
		}
		for {
			if _, err := s.Recv(); errors.Is(err, io.EOF) {
				return nil
			} else if err != nil {
				return err
			}
		}
	}
	if err := scan(wctx); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a scan while %d unread ones hold every slot: %v, want DeadlineExceeded", conns*perConn, err)
	}

	// Once the unread scans end, scans run again.
	scancel()
	eventually(t, 30*time.Second, "a scan after the unread ones ended", func() bool {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return scan(sctx) == nil
	})
}
