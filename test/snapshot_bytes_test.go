package test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// snapshotsOnDisk counts the finished Raft snapshots in a data dir.
func snapshotsOnDisk(t *testing.T, dataDir string) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dataDir, "raft", "snapshots"))
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if e.IsDir() && !strings.HasSuffix(e.Name(), ".tmp") {
			n++
		}
	}
	return n
}

// bigValue is the value of the i-th key: size bytes, its own pattern.
func bigValue(i, size int) []byte {
	return bytes.Repeat([]byte{byte('a' + i%26), byte(i)}, size/2)
}

// TestSIGKILLAfterASizeTriggeredSnapshotLosesNoAcknowledgedCommit writes
// large commits to a `stated run` whose only snapshot trigger is the size
// one (--raft-snapshot-bytes 2MiB, an entry threshold never reached),
// waits until that trigger took a snapshot, commits more, kills the
// process with SIGKILL and restarts it: every acknowledged commit, before
// and after the snapshot, is there.
func TestSIGKILLAfterASizeTriggeredSnapshotLosesNoAcknowledgedCommit(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n := newNode(t)
	n.args = []string{"--raft-snapshot-bytes", "2MiB", "--raft-snapshot-threshold", "1000000",
		"--raft-snapshot-interval", "100ms", "--raft-trailing-logs", "4"}
	n.start(ctx)
	client, closeConn := n.client()
	const size = 256 << 10
	put := func(i int) {
		t.Helper()
		_, err := client.Commit(ctx, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_PUT,
			Namespace: "big", Key: fmt.Appendf(nil, "k%03d", i), Value: bigValue(i, size)}}})
		if err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
	}
	const before, after = 24, 4 // 6 MiB, then 1 MiB
	for i := range before {
		put(i)
	}
	for !strings.Contains(n.logs.String(), "reached the size threshold") || snapshotsOnDisk(t, n.dataDir) == 0 {
		if ctx.Err() != nil {
			t.Fatal("no size-triggered snapshot after 6 MiB of commits with --raft-snapshot-bytes 2MiB")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := before; i < before+after; i++ {
		put(i)
	}
	closeConn()

	n.kill()
	n.start(ctx)
	client, closeConn = n.client()
	defer closeConn()
	for i := range before + after {
		got, err := client.Get(ctx, &statedv1.GetRequest{Namespace: "big", Key: fmt.Appendf(nil, "k%03d", i), Kind: statedv1.Kind_KIND_VALUE})
		if err != nil {
			t.Fatal(err)
		}
		if !got.Found || !bytes.Equal(got.Value, bigValue(i, size)) {
			t.Fatalf("k%03d after SIGKILL and restart: found %v, %d bytes; want its %d acknowledged bytes", i, got.Found, len(got.Value), size)
		}
	}
}
