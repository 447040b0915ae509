package recovery_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/daemon/recovery"
	"github.com/statedhq/stated/internal/s3test"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/uploader"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

type node struct {
	d      *daemon.Daemon
	state  statedv1.StateClient
	cps    statedv1.CheckpointsClient
	bucket string
}

func start(t *testing.T, bucket string, opts ...func(*daemon.Config)) *node {
	t.Helper()
	d := daemontest.Start(t, append([]func(*daemon.Config){func(c *daemon.Config) {
		c.CheckpointURL, c.CheckpointInterval, c.CheckpointRetain = bucket, 0, 10
	}}, opts...)...)
	conn, err := grpc.NewClient("unix://"+d.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &node{d: d, state: statedv1.NewStateClient(conn), cps: statedv1.NewCheckpointsClient(conn), bucket: bucket}
}

// commit adds delta to counter n and moves partition 0 of t in group g
// to offset.
func (n *node) commit(ctx context.Context, t *testing.T, delta, offset int64) {
	t.Helper()
	_, err := n.state.Commit(ctx, &statedv1.CommitRequest{
		Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, Namespace: "ns", Key: []byte("n"), Delta: delta}},
		Offsets:   []*statedv1.Offset{{Group: "g", Topic: "t", Partition: 0, Offset: offset}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (n *node) checkpoint(ctx context.Context, t *testing.T) uint64 {
	t.Helper()
	resp, err := n.cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetEpoch()
}

func (n *node) counter(ctx context.Context, t *testing.T) int64 {
	t.Helper()
	resp, err := n.state.Get(ctx, &statedv1.GetRequest{Namespace: "ns", Key: []byte("n"), Kind: statedv1.Kind_KIND_COUNTER,
		Read: &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_LINEARIZABLE}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetCounter()
}

func fileBucket(t *testing.T) (string, string) {
	dir := t.TempDir()
	return (&url.URL{Scheme: "file", Path: dir}).String(), dir
}

func openUploader(t *testing.T, u string) *uploader.Uploader {
	t.Helper()
	b, err := uploader.OpenBucket(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	up, err := uploader.New(uploader.Config{Bucket: b})
	if err != nil {
		t.Fatal(err)
	}
	return up
}

// restoreAndStart restores sel into a new data dir and starts a daemon on
// it, which bootstraps a new cluster from the restored state.
func restoreAndStart(ctx context.Context, t *testing.T, bucket string, opts recovery.RestoreOptions) (*node, *recovery.RestoreResult) {
	t.Helper()
	opts.Uploader = openUploader(t, bucket)
	if opts.DataDir == "" {
		opts.DataDir = filepath.Join(t.TempDir(), "restored")
	}
	res, err := recovery.Restore(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	return start(t, bucket, func(c *daemon.Config) { c.DataDir = opts.DataDir; c.NodeID = "restored" }), res
}

func TestRestoreBootstrapsANewClusterFromTheCheckpoint(t *testing.T) {
	ctx := testCtx(t)
	bucket, _ := fileBucket(t)
	old := start(t, bucket)
	for i := int64(1); i <= 10; i++ {
		old.commit(ctx, t, 1, i)
	}
	e1 := old.checkpoint(ctx, t)
	old.commit(ctx, t, 100, 11) // after the checkpoint: not restored
	e2 := old.checkpoint(ctx, t)
	oldCluster := old.d.Store().ClusterID()
	if err := old.d.Close(); err != nil {
		t.Fatal(err)
	}

	n, res := restoreAndStart(ctx, t, bucket, recovery.RestoreOptions{Select: recovery.Selector{Epoch: e1}})
	if res.Manifest.Epoch != e1 || res.Download.FilesDownloaded != res.Download.Files {
		t.Fatalf("restore result = %+v", res)
	}
	if got := n.counter(ctx, t); got != 10 {
		t.Fatalf("restored counter = %d, want 10 (the state of checkpoint %d)", got, e1)
	}
	offs, err := n.state.GetOffsets(ctx, &statedv1.GetOffsetsRequest{Group: "g"})
	if err != nil || len(offs.GetOffsets()) != 1 || offs.GetOffsets()[0].GetOffset() != 10 {
		t.Fatalf("restored offsets = %v, %v; want 10", offs.GetOffsets(), err)
	}
	if id := n.d.Store().ClusterID(); id == "" || id == oldCluster {
		t.Fatalf("cluster id %q after restore; want a new one (old %q)", id, oldCluster)
	}
	from, ok, err := n.d.Store().RestoredFrom()
	if err != nil || !ok || from.Epoch != e1 || from.ClusterID != oldCluster {
		t.Fatalf("restored from = %+v, %v, %v", from, ok, err)
	}
	// The new cluster goes on: commits apply, and its checkpoints take
	// epochs above every one in the bucket.
	n.commit(ctx, t, 5, 12)
	if got := n.counter(ctx, t); got != 15 {
		t.Fatalf("counter after a commit = %d, want 15", got)
	}
	if e := n.checkpoint(ctx, t); e <= e2 {
		t.Fatalf("the restored cluster's checkpoint took epoch %d, not above the bucket's %d", e, e2)
	}
}

func TestRestoreOfACorruptCheckpointFailsNamingTheFileAndFallbackTakesTheOlderOne(t *testing.T) {
	ctx := testCtx(t)
	bucket, bucketDir := fileBucket(t)
	old := start(t, bucket)
	old.commit(ctx, t, 1, 1)
	e1 := old.checkpoint(ctx, t)
	for i := int64(2); i <= 2000; i++ {
		old.commit(ctx, t, 1, i)
	}
	if err := old.d.Store().Flush(); err != nil { // a table of its own in epoch 2
		t.Fatal(err)
	}
	e2 := old.checkpoint(ctx, t)
	old.d.Close()
	up := openUploader(t, bucket)
	m2, err := up.Get(ctx, e2)
	if err != nil {
		t.Fatal(err)
	}
	m1, _ := up.Get(ctx, e1)
	inOne := map[string]bool{}
	for _, f := range m1.Files {
		inOne[f.SHA256] = true
	}
	var victim uploader.File
	for _, f := range m2.Files {
		if strings.HasSuffix(f.Path, ".sst") && !inOne[f.SHA256] {
			victim = f
		}
	}
	if victim.Path == "" {
		t.Fatalf("checkpoint %d has no table of its own: %+v", e2, m2.Files)
	}
	p := filepath.Join(bucketDir, "files", victim.SHA256)
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/3] ^= 0x40
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "restored")
	_, err = recovery.Restore(ctx, recovery.RestoreOptions{Uploader: up, DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("checkpoint %d: file %s", e2, victim.Path)) {
		t.Fatalf("restore of the corrupt checkpoint: %v; want an error naming checkpoint %d and file %s", err, e2, victim.Path)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the failed restore left %d entries in the data dir", len(entries))
	}
	r, err := recovery.Build(ctx, up, m2, recovery.Options{Verify: true})
	if err != nil || r.Intact || len(r.Problems) != 1 || r.Problems[0].Path != victim.Path {
		t.Fatalf("report of the corrupt checkpoint: %+v, %v", r, err)
	}

	n, res := restoreAndStart(ctx, t, bucket, recovery.RestoreOptions{DataDir: dir, Fallback: true})
	if res.Manifest.Epoch != e1 || len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0], victim.Path) {
		t.Fatalf("fallback restored %d, skipped %v; want %d after skipping %d", res.Manifest.Epoch, res.Skipped, e1, e2)
	}
	if got := n.counter(ctx, t); got != 1 {
		t.Fatalf("counter after fallback = %d, want 1", got)
	}
}

func TestRestoreRefusesBadInputAndWritesNothing(t *testing.T) {
	ctx := testCtx(t)
	bucket, bucketDir := fileBucket(t)
	up := openUploader(t, bucket)
	dir := filepath.Join(t.TempDir(), "restored")
	check := func(name string, opts recovery.RestoreOptions, want string) {
		t.Helper()
		if opts.Uploader == nil {
			opts.Uploader = up
		}
		if opts.DataDir == "" {
			opts.DataDir = dir
		}
		_, err := recovery.Restore(ctx, opts)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", name, err, want)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: the data dir was created", name)
		}
	}
	check("empty bucket", recovery.RestoreOptions{}, "the bucket holds no checkpoint")

	old := start(t, bucket)
	old.commit(ctx, t, 1, 1)
	old.checkpoint(ctx, t)
	old.d.Close()
	check("unknown checkpoint", recovery.RestoreOptions{Select: recovery.Selector{Epoch: 42}}, "checkpoint 42 is not in the bucket")
	check("unknown savepoint", recovery.RestoreOptions{Select: recovery.Selector{Savepoint: "nope"}}, `no savepoint named "nope"`)
	if err := os.WriteFile(filepath.Join(bucketDir, "manifests", "00000000000000000099.json"), []byte(`{"format_version": 7, "epoch": 99}`), 0o600); err != nil {
		t.Fatal(err)
	}
	check("newer format", recovery.RestoreOptions{Select: recovery.Selector{Epoch: 99}}, "format version 7")
	os.Remove(filepath.Join(bucketDir, "manifests", "00000000000000000099.json"))
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	check("unreachable Kafka", recovery.RestoreOptions{Kafka: kadm.NewClient(cl)}, "Kafka does not answer")

	full := t.TempDir()
	os.WriteFile(filepath.Join(full, "keep"), []byte("x"), 0o600)
	if _, err := recovery.Restore(ctx, recovery.RestoreOptions{Uploader: up, DataDir: full}); !errors.Is(err, recovery.ErrDataDirNotEmpty) {
		t.Errorf("non-empty data dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(full, "keep")); err != nil {
		t.Errorf("the refused restore touched the data dir: %v", err)
	}
}

// TestReportCountsReplayAndRecordsLostToRetention: records before the
// checkpoint's offset that Kafka's retention deleted are reported lost.
func TestReportCountsReplayAndRecordsLostToRetention(t *testing.T) {
	ctx := testCtx(t)
	cl := kafkaTopic(t, 1)
	recs := make([]*kgo.Record, 100)
	for i := range recs {
		recs[i] = &kgo.Record{Value: []byte("x")}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	bucket, _ := fileBucket(t)
	n := start(t, bucket)
	n.commit(ctx, t, 30, 30) // processed 30 records into state
	e := n.checkpoint(ctx, t)
	adm := kadm.NewClient(cl)
	// Retention deletes everything before offset 45: 15 records after the
	// checkpoint's offset are gone.
	dels := kadm.Offsets{}
	dels.Add(kadm.Offset{Topic: "t", Partition: 0, At: 45})
	if _, err := adm.DeleteRecords(ctx, dels); err != nil {
		t.Fatal(err)
	}
	up := openUploader(t, bucket)
	m, err := up.Get(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	r, err := recovery.Build(ctx, up, m, recovery.Options{Verify: true, Kafka: adm})
	if err != nil {
		t.Fatal(err)
	}
	if !r.KafkaChecked || !r.Intact || len(r.Partitions) != 1 {
		t.Fatalf("report = %+v", r)
	}
	p := r.Partitions[0]
	if p.CheckpointOffset != 30 || p.LogStart != 45 || p.LogEnd != 100 || p.Lost != 15 || p.Replay != 55 || r.Lost != 15 || r.Replay != 55 {
		t.Fatalf("partition = %+v; want checkpoint 30, log 45..100, 15 lost, 55 replayed", p)
	}
	// Without Kafka the report is the stated side alone.
	r, err = recovery.Build(ctx, up, m, recovery.Options{})
	if err != nil || r.KafkaChecked || r.Partitions[0].LogStart != -1 || r.Keys != 1 {
		t.Fatalf("report without Kafka = %+v, %v", r, err)
	}
}

// TestRestoreFromS3 checkpoints to an S3-compatible server on loopback
// (gofakes3) and restores from it.
func TestRestoreFromS3(t *testing.T) {
	ctx := testCtx(t)
	bucket := s3test.Serve(t, nil)
	s3test.SetEnv(t)
	old := start(t, bucket)
	for i := int64(1); i <= 50; i++ {
		old.commit(ctx, t, 2, i)
	}
	old.checkpoint(ctx, t)
	old.d.Close()
	n, res := restoreAndStart(ctx, t, bucket, recovery.RestoreOptions{})
	if got := n.counter(ctx, t); got != 100 || res.Manifest.Offsets[0].Offset != 50 {
		t.Fatalf("restored from S3: counter %d, checkpoint offset %d; want 100 and 50", got, res.Manifest.Offsets[0].Offset)
	}
}

// TestRestoreResetsKafkaOffsetsToTheCheckpoints: with Kafka, a restore
// sets each group's committed offsets to the checkpoint's, so consumers
// that ignore stated resume at the right place too.
func TestRestoreResetsKafkaOffsetsToTheCheckpoints(t *testing.T) {
	ctx := testCtx(t)
	cl := kafkaTopic(t, 1)
	recs := make([]*kgo.Record, 50)
	for i := range recs {
		recs[i] = &kgo.Record{Value: []byte("x")}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	// Kafka's group is ahead of the checkpoint (a consumer that ignored
	// stated committed 40).
	ahead := kadm.Offsets{}
	ahead.Add(kadm.Offset{Topic: "t", Partition: 0, At: 40, LeaderEpoch: -1})
	if _, err := adm.CommitOffsets(ctx, "g", ahead); err != nil {
		t.Fatal(err)
	}
	bucket, _ := fileBucket(t)
	n := start(t, bucket)
	n.commit(ctx, t, 25, 25)
	n.checkpoint(ctx, t)
	n.d.Close()
	_, res := restoreAndStart(ctx, t, bucket, recovery.RestoreOptions{Kafka: adm})
	if len(res.KafkaGroups) != 1 || res.KafkaGroups[0] != "g" {
		t.Fatalf("groups reset = %v", res.KafkaGroups)
	}
	fetched, err := adm.FetchOffsets(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := fetched.Lookup("t", 0); !ok || o.At != 25 {
		t.Fatalf("Kafka's committed offset for g = %+v, want the checkpoint's 25", o)
	}
}

// TestRestoreOverAnExistingStateFetchesOnlyWhatChanged: files already in
// the data dir with the right checksum are not downloaded again.
func TestRestoreOverAnExistingStateFetchesOnlyWhatChanged(t *testing.T) {
	ctx := testCtx(t)
	bucket, _ := fileBucket(t)
	old := start(t, bucket)
	for i := int64(1); i <= 500; i++ {
		old.commit(ctx, t, 1, i)
	}
	big := make([]byte, 10_000)
	for i := range 300 {
		big[0] = byte(i)
		if _, err := old.state.Commit(ctx, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{
			Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "big", Key: fmt.Appendf(nil, "k%04d", i), Value: big,
		}}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.d.Store().Flush(); err != nil {
		t.Fatal(err)
	}
	e := old.checkpoint(ctx, t)
	old.d.Close()
	up := openUploader(t, bucket)
	dir := filepath.Join(t.TempDir(), "data")
	first, err := recovery.Restore(ctx, recovery.RestoreOptions{Uploader: up, DataDir: dir, Select: recovery.Selector{Epoch: e}})
	if err != nil {
		t.Fatal(err)
	}
	again, err := recovery.Restore(ctx, recovery.RestoreOptions{Uploader: up, DataDir: dir, Select: recovery.Selector{Epoch: e}, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	// The tables are the same files; the small files the restore
	// rewrites (the WAL, Pebble's manifest) are fetched again.
	if again.Download.BytesDownloaded >= first.Download.BytesDownloaded/2 || again.Download.FilesDownloaded >= first.Download.FilesDownloaded {
		t.Fatalf("second restore fetched %d files (%d bytes) of %d (%d bytes): unchanged files were downloaded again",
			again.Download.FilesDownloaded, again.Download.BytesDownloaded, first.Download.FilesDownloaded, first.Download.BytesDownloaded)
	}
	n := start(t, bucket, func(c *daemon.Config) { c.DataDir = dir; c.NodeID = "restored" })
	if got := n.counter(ctx, t); got != 500 {
		t.Fatalf("counter after the second restore = %d, want 500", got)
	}
}

// TestFallbackDoesNotTakeAnOlderCheckpointForAFullDisk: --fallback takes an
// older checkpoint when the selected one is not intact, not when this
// machine cannot hold it. The data dir is a tmpfs with room for the older,
// small checkpoint but not for the newer, large one: the restore fails
// naming the full disk, and nothing is restored, rather than restoring the
// older checkpoint and losing what the newer one held. Needs root (mount).
func TestFallbackDoesNotTakeAnOlderCheckpointForAFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	ctx := testCtx(t)
	bucket, _ := fileBucket(t)
	old := start(t, bucket)
	old.commit(ctx, t, 1, 1)
	e1 := old.checkpoint(ctx, t)
	value := make([]byte, 64<<10)
	for i := range 64 { // 4 MiB that do not compress
		rand.Read(value)
		if _, err := old.state.Commit(ctx, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{
			{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "big", Key: fmt.Appendf(nil, "k%d", i), Value: value},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.d.Store().Flush(); err != nil {
		t.Fatal(err)
	}
	e2 := old.checkpoint(ctx, t)
	old.d.Close()
	up := openUploader(t, bucket)
	size := func(e uint64) (n int64) {
		m, err := up.Get(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range m.Files {
			n += f.Size
		}
		return n
	}
	small, large := size(e1), size(e2)
	room := small + 2<<20
	if large <= room {
		t.Fatalf("checkpoint %d holds %d bytes, checkpoint %d %d: want the newer one past %d", e1, small, e2, large, room)
	}
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, fmt.Sprintf("size=%d", room)); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, 0) })
	dir := filepath.Join(mnt, "restored")
	res, err := recovery.Restore(ctx, recovery.RestoreOptions{Uploader: up, DataDir: dir, Fallback: true})
	if err == nil {
		t.Fatalf("restore into %d bytes with --fallback restored checkpoint %d (skipped %v); want it to fail on the full disk, not take the older checkpoint %d",
			room, res.Manifest.Epoch, res.Skipped, e1)
	}
	if !errors.Is(err, syscall.ENOSPC) || strings.Contains(err.Error(), "no intact checkpoint") {
		t.Fatalf("restore into a full disk: %v; want ENOSPC, with no fallback", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the failed restore left a state in the data dir: %v", err)
	}
}

// kafkaTopic starts a one-broker kfake cluster holding topic "t" with
// partitions partitions, and returns a client of it that produces to "t"
// (with opts added); both close when the test ends.
func kafkaTopic(t *testing.T, partitions int32, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic("t")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}
