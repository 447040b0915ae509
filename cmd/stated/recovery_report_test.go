package main

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestRecoveryReportDoesNotSayNothingIsLostWhenItCouldNotCountAPartition:
// a partition Kafka does not know (its topic was deleted: every record
// after the checkpoint's offset is gone) is not counted, and the summary
// says so instead of only "0 records are lost for good".
func TestRecoveryReportDoesNotSayNothingIsLostWhenItCouldNotCountAPartition(t *testing.T) {
	t.Parallel()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
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
		Offsets:   []*statedv1.Offset{{Group: "g", Topic: "gone", Partition: 0, Offset: 7}},
	}); err != nil {
		t.Fatal(err)
	}
	mustSucceed(t, client(t, d, "checkpoint", "trigger", "--wait"))

	out := mustSucceed(t, cliRun(t, nil, "recovery", "--from", bucket, "--no-verify", "--kafka-brokers", strings.Join(kc.ListenAddrs(), ",")))
	if !strings.Contains(out, "Kafka does not know this partition") {
		t.Fatalf("the report does not show the partition Kafka does not know:\n%s", out)
	}
	if !strings.Contains(out, "1 partition not counted") {
		t.Errorf("the report's summary does not say that a partition was not counted:\n%s", out)
	}
}
