package daemon_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestANewClusterOnAUsedBucketDoesNotCheckpointBelowIt: a cluster
// bootstrapped afresh on a bucket another cluster filled numbers its
// checkpoints from 1, below the bucket's. Uploaded, they would sort
// below the old cluster's: a restore would take the old cluster's state
// and retention would delete the new cluster's checkpoints as it wrote
// them. The checkpoint fails instead, saying what to do, the bucket
// keeps what it held, and the status shows the failure; a restore from
// the bucket is the way on (TestOperationsRollback... and the restore
// tests check that its checkpoints go on above the bucket's).
func TestANewClusterOnAUsedBucketDoesNotCheckpointBelowIt(t *testing.T) {
	bucket := fileBucket(t)
	ctx := testContext(t)
	old := daemontest.Start(t, func(c *daemon.Config) { c.CheckpointURL, c.CheckpointInterval = bucket, 0 })
	oldCps := statedv1.NewCheckpointsClient(dial(t, "unix://"+old.SocketPath()))
	for range 3 {
		if _, err := oldCps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true}); err != nil {
			t.Fatal(err)
		}
	}
	oldCluster := old.Store().ClusterID()
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	up := openBucket(t, bucket)
	before, err := up.List(ctx)
	if err != nil || len(before) != 3 {
		t.Fatalf("the old cluster's checkpoints: %d, %v; want 3", len(before), err)
	}

	fresh := daemontest.Start(t, func(c *daemon.Config) { c.CheckpointURL, c.CheckpointInterval = bucket, 0 })
	cps := statedv1.NewCheckpointsClient(dial(t, "unix://"+fresh.SocketPath()))
	_, err = cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
	if err == nil {
		t.Fatal("a new cluster's checkpoint 1 completed on a bucket holding checkpoints 1 to 3 of another cluster")
	}
	for _, want := range []string{"checkpoint 3 of cluster " + oldCluster, "epoch, 1", "stated restore --from " + bucket, "prefix="} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("the refusal %q does not say %q", err, want)
		}
	}
	after, err := up.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("the bucket holds %d checkpoints after the refusal, held %d", len(after), len(before))
	}
	for i := range after {
		if after[i].Epoch != before[i].Epoch || after[i].ClusterID != oldCluster || after[i].RaftIndex != before[i].RaftIndex {
			t.Fatalf("checkpoint %d after the refusal: epoch %d of cluster %s at index %d, was epoch %d at index %d",
				i, after[i].Epoch, after[i].ClusterID, after[i].RaftIndex, before[i].Epoch, before[i].RaftIndex)
		}
	}
	st, err := cps.Status(ctx, &statedv1.CheckpointStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetFailures() != 1 || !strings.Contains(st.GetLastError(), "stated restore --from") {
		t.Fatalf("status after the refusal: %d failures, last error %q; want 1 naming the restore", st.GetFailures(), st.GetLastError())
	}
}

// TestACheckpointBelowItsOwnClustersNewerOneIsAbandonedNotBlamedOnTheBucket:
// a leader that has not yet learnt that another node took over may start
// an upload after the new leader completed a later epoch. It is refused
// as any upload below the bucket's newest is, but the failure says what
// happened (a newer leader of this cluster) instead of sending the
// operator to another prefix; only if it repeats (data dirs older than
// the bucket) is a restore the way on.
func TestACheckpointBelowItsOwnClustersNewerOneIsAbandonedNotBlamedOnTheBucket(t *testing.T) {
	bucket := fileBucket(t)
	ctx := testContext(t)
	d := daemontest.Start(t, func(c *daemon.Config) { c.CheckpointURL, c.CheckpointInterval = bucket, 0 })
	cps := statedv1.NewCheckpointsClient(dial(t, "unix://"+d.SocketPath()))
	if _, err := cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true}); err != nil {
		t.Fatal(err)
	}
	// What a newer leader of the same cluster would have written: its
	// checkpoint 5, the same cluster id.
	b, up := openBlobBucket(t, bucket)
	m, err := up.Latest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m.Epoch = 5
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.WriteAll(ctx, fmt.Sprintf("manifests/%020d.json", 5), raw, nil); err != nil {
		t.Fatal(err)
	}
	_, err = cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
	if err == nil {
		t.Fatal("checkpoint 2 completed below the bucket's checkpoint 5")
	}
	if msg := err.Error(); !strings.Contains(msg, "abandoned: a newer leader of this cluster completed checkpoint 5") || strings.Contains(msg, "prefix=") {
		t.Fatalf("the refusal %q: want it to name this cluster's newer leader first, and no other prefix", msg)
	}
}

// TestTheBucketAheadHintSaysWhatItDoesNotKnow: the refusal of a
// checkpoint below the bucket's newest tells the operator to restore
// from the bucket's URL, and it prints that URL as the status does, with
// credentials masked; it then says that the real URL is needed. When the
// bucket's newest manifest does not read, which cluster wrote it is
// unknown, and the hint says so instead of blaming another cluster.
func TestTheBucketAheadHintSaysWhatItDoesNotKnow(t *testing.T) {
	dir := t.TempDir()
	bucket := (&url.URL{Scheme: "file", Path: dir}).String()
	ctx := testContext(t)
	old := daemontest.Start(t, func(c *daemon.Config) { c.CheckpointURL, c.CheckpointInterval = bucket, 0 })
	oldCps := statedv1.NewCheckpointsClient(dial(t, "unix://"+old.SocketPath()))
	for range 2 {
		if _, err := oldCps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true}); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	// The newest manifest is cut short, as by a disk that lost its tail.
	newest := filepath.Join(dir, "manifests", fmt.Sprintf("%020d.json", 2))
	if err := os.WriteFile(newest, []byte(`{"epoch": 2, "clus`), 0o600); err != nil {
		t.Fatal(err)
	}
	// fileblob reads secret_key_path's file (its key signs URLs); the
	// parameter's name makes the status mask its value.
	keyFile := filepath.Join(t.TempDir(), "url.key")
	if err := os.WriteFile(keyFile, []byte("not a credential of anything"), 0o600); err != nil {
		t.Fatal(err)
	}
	withKey := bucket + "?secret_key_path=" + url.QueryEscape(keyFile) + "&base_url=" + url.QueryEscape("http://127.0.0.1:1/signed")

	fresh := daemontest.Start(t, func(c *daemon.Config) { c.CheckpointURL, c.CheckpointInterval = withKey, 0 })
	cps := statedv1.NewCheckpointsClient(dial(t, "unix://"+fresh.SocketPath()))
	_, err := cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
	if err == nil {
		t.Fatal("a new cluster's checkpoint 1 completed on a bucket holding checkpoints 1 and 2")
	}
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("the refusal's code is %s, want FailedPrecondition (the bucket's state, not an internal error)", status.Code(err))
	}
	for _, want := range []string{
		"checkpoint 2, is at or above", // no cluster: the manifest did not read
		"does not say which cluster wrote it",
		"stated restore --from " + bucket + "?secret_key_path=",
		"with the credentials masked here",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), url.QueryEscape(keyFile)) {
		t.Errorf("the refusal %q prints the masked parameter's value", err)
	}
}
