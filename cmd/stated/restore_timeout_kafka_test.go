package main

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestARestoreWhoseTimeoutPassesAfterTheSwapDoesNotSayTheDataDirIsAsItWas:
// when --timeout passes once the restored state is swapped in, while
// Kafka's offsets are reset, the restore does not claim that the data dir
// was left as it was: it says that the data dir holds the restored
// checkpoint and that Kafka's offsets were not all reset.
func TestARestoreWhoseTimeoutPassesAfterTheSwapDoesNotSayTheDataDirIsAsItWas(t *testing.T) {
	t.Parallel()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	// Every offset commit answers only after the restore's --timeout.
	kc.ControlKey(int16(kmsg.OffsetCommit), func(kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		time.Sleep(4 * time.Second)
		return nil, nil, false
	})

	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	d := daemontest.Start(t, func(c *daemon.Config) { c.CheckpointURL = bucket; c.CheckpointInterval = 0 })
	conn, err := grpc.NewClient("unix://"+d.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := statedv1.NewStateClient(conn).Commit(ctx, &statedv1.CommitRequest{
		Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, Namespace: "ns", Key: []byte("n"), Delta: 7}},
		Offsets:   []*statedv1.Offset{{Group: "g", Topic: "t", Partition: 0, Offset: 7}},
	}); err != nil {
		t.Fatal(err)
	}
	mustSucceed(t, client(t, d, "checkpoint", "trigger", "--wait"))

	dir := filepath.Join(t.TempDir(), "new")
	r := cliRun(t, nil, "restore", "--from", bucket, "--data-dir", dir, "--kafka-brokers", strings.Join(kc.ListenAddrs(), ","), "--timeout", "2s")
	if r.code == 0 {
		t.Fatalf("restore with Kafka's commits answering after --timeout succeeded: %q", r.stdout)
	}
	swapped := false
	if _, err := os.Stat(filepath.Join(dir, "state")); err == nil {
		swapped = true
	}
	t.Logf("exit %d, stderr %q; the data dir holds the restored state: %t", r.code, r.stderr, swapped)
	if !swapped {
		t.Fatal("the data dir does not hold the restored state: the test does not test anything")
	}
	if strings.Contains(r.stderr, "is left as it was") || !strings.Contains(r.stderr, dir+" holds the restored checkpoint 1, but its Kafka offsets were not all reset") {
		t.Fatalf("the restore says %q, but the data dir holds the restored state and Kafka's offsets are not reset", r.stderr)
	}
}
