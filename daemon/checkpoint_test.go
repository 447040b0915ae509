package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gocloud.dev/blob"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/daemon/recovery"
	"github.com/statedhq/stated/internal/testenv"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore/fsm"
	"github.com/statedhq/stated/uploader"
)

// fileBucket returns a file:// bucket URL in a temp dir the test can open
// as well.
func fileBucket(t *testing.T) string {
	return (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
}

func openBucket(t *testing.T, u string) *uploader.Uploader {
	t.Helper()
	_, up := openBlobBucket(t, u)
	return up
}

// openBlobBucket opens the bucket at u and an Uploader on it; both close
// when the test ends.
func openBlobBucket(t *testing.T, u string) (*blob.Bucket, *uploader.Uploader) {
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
	return b, up
}

// restoreState downloads m and, for a changelog checkpoint, replays its
// segments onto its base's tables as `stated restore` does, then opens
// the state.
func restoreState(t *testing.T, up *uploader.Uploader, m *uploader.Manifest) *fsm.FSM {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	if _, err := up.Download(context.Background(), m, dir, nil); err != nil {
		t.Fatalf("download checkpoint %d: %v", m.Epoch, err)
	}
	if m.Changelog != nil {
		if _, err := recovery.Replay(context.Background(), dir, m, nil); err != nil {
			t.Fatalf("replay checkpoint %d: %v", m.Epoch, err)
		}
	}
	f, err := fsm.Open(dir, nil)
	if err != nil {
		t.Fatalf("open checkpoint %d: %v", m.Epoch, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestEveryCheckpointsOffsetsMatchItsState runs a writer that moves a
// counter and its offset together (counter n, offset n) while checkpoints
// are taken; every manifest's offset equals the counter in its files.
func TestEveryCheckpointsOffsetsMatchItsState(t *testing.T) {
	checkpointsUnderLoad(t, 0, -1)
}

// checkpointsUnderLoad takes five checkpoints while a writer moves a
// counter and its offset together, then restores each and checks that it
// holds the counter equal to its offset, at the manifest's applied index
// and term. materialize is Config.CheckpointMaterializeInterval; with it
// the state is padded first, so that the checkpoints after the first are
// changelog ones. memory, unless -1, is Config.CheckpointChangelogMemory.
// It returns the checkpoints' summaries and the daemon's checkpoint
// status.
func checkpointsUnderLoad(t *testing.T, materialize time.Duration, memory int64) ([]*statedv1.CheckpointSummary, daemon.CheckpointStatus) {
	bucket := fileBucket(t)
	d := daemontest.Start(t, func(c *daemon.Config) {
		c.CheckpointURL, c.CheckpointInterval, c.CheckpointRetain = bucket, 0, 10
		c.CheckpointMaterializeInterval = materialize
		if memory != -1 {
			c.CheckpointChangelogMemory = memory
		}
	})
	conn := dial(t, "unix://"+d.SocketPath())
	state, cps := statedv1.NewStateClient(conn), statedv1.NewCheckpointsClient(conn)
	ctx := testContext(t)
	if materialize > 0 {
		pad(ctx, t, state, 2000)
	}

	var n atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := int64(1); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_, err := state.Commit(ctx, &statedv1.CommitRequest{
				Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, Namespace: "ns", Key: []byte("n"), Delta: 1}},
				Offsets:   []*statedv1.Offset{{Group: "g", Topic: "t", Partition: 0, Offset: i}},
			})
			if err != nil {
				t.Errorf("commit %d: %v", i, err)
				return
			}
			n.Store(i)
		}
	})
	defer func() { close(stop); wg.Wait() }()

	var sums []*statedv1.CheckpointSummary
	for len(sums) < 5 {
		before := n.Load()
		for n.Load() < before+20 {
			time.Sleep(time.Millisecond)
		}
		resp, err := cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
		if err != nil {
			t.Fatal(err)
		}
		sums = append(sums, resp.GetSummary())
	}
	up := openBucket(t, bucket)
	for _, s := range sums {
		m, err := up.Get(ctx, s.GetEpoch())
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Offsets) != 1 {
			t.Fatalf("checkpoint %d offsets = %+v", m.Epoch, m.Offsets)
		}
		f := restoreState(t, up, m)
		ent, _, err := f.Get("ns", []byte("n"), fsm.KindCounter, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if ent.Counter != m.Offsets[0].Offset || ent.Counter == 0 {
			t.Fatalf("checkpoint %d: counter %d, offset %d: the cut is not consistent", m.Epoch, ent.Counter, m.Offsets[0].Offset)
		}
		if f.AppliedIndex() != m.RaftIndex {
			t.Fatalf("checkpoint %d: applied index %d, manifest says %d", m.Epoch, f.AppliedIndex(), m.RaftIndex)
		}
		// Index and term name the same entry of the log.
		if term, err := d.Store().TermAt(m.RaftIndex); err != nil || term != m.RaftTerm {
			t.Fatalf("checkpoint %d: entry %d has term %d (%v), manifest says %d", m.Epoch, m.RaftIndex, term, err, m.RaftTerm)
		}
		t.Logf("checkpoint %d at index %d: counter = offset = %d, %d files, changelog %t", m.Epoch, m.RaftIndex, ent.Counter, len(m.Files), m.Changelog != nil)
	}
	return sums, d.CheckpointStatus()
}

func TestCheckpointCommandsAndStatus(t *testing.T) {
	bucket := fileBucket(t)
	d := daemontest.Start(t, func(c *daemon.Config) { c.CheckpointURL = bucket; c.CheckpointInterval = 0; c.CheckpointRetain = 2 })
	cps := statedv1.NewCheckpointsClient(dial(t, "unix://"+d.SocketPath()))
	ctx := testContext(t)
	for range 4 {
		if _, err := cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true}); err != nil {
			t.Fatal(err)
		}
	}
	list, err := cps.List(ctx, &statedv1.ListCheckpointsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := list.GetCheckpoints(); len(got) != 2 || got[0].GetEpoch() != 3 || got[1].GetEpoch() != 4 {
		t.Fatalf("retained checkpoints = %v, want epochs 3 and 4", got)
	}
	if _, err := cps.Savepoint(ctx, &statedv1.SavepointRequest{Name: "before-deploy"}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true}); err != nil {
			t.Fatal(err)
		}
	}
	m, err := cps.Get(ctx, &statedv1.GetCheckpointRequest{Savepoint: "before-deploy"})
	if err != nil || m.GetSummary().GetEpoch() != 4 {
		t.Fatalf("savepoint = %v, %v; want epoch 4 kept", m, err)
	}
	latest, err := cps.Get(ctx, &statedv1.GetCheckpointRequest{Latest: true})
	if err != nil || latest.GetSummary().GetEpoch() != 7 {
		t.Fatalf("latest = %v, %v", latest.GetSummary(), err)
	}
	st, err := cps.Status(ctx, &statedv1.CheckpointStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetCompleted() != 7 || st.GetFailures() != 0 || st.GetLastCompleted().GetEpoch() != 7 || !st.GetEnabled() {
		t.Fatalf("status = %v", st)
	}
	for name, tc := range map[string]struct {
		call func() error
		code codes.Code
		msg  string
	}{
		"unknown epoch": {func() error { _, err := cps.Get(ctx, &statedv1.GetCheckpointRequest{Epoch: 99}); return err }, codes.NotFound, "99"},
		"no selector":   {func() error { _, err := cps.Get(ctx, &statedv1.GetCheckpointRequest{}); return err }, codes.InvalidArgument, "epoch: set exactly one of"},
		"bad savepoint name": {func() error {
			_, err := cps.Savepoint(ctx, &statedv1.SavepointRequest{Name: "a/b"})
			return err
		}, codes.InvalidArgument, "name: invalid character '/'"},
		"reserved savepoint name": {func() error {
			_, err := cps.Savepoint(ctx, &statedv1.SavepointRequest{Name: ".."})
			return err
		}, codes.InvalidArgument, `name: ".." is reserved`},
		"savepoint name that reads as an epoch": {func() error {
			_, err := cps.Savepoint(ctx, &statedv1.SavepointRequest{Name: "123"})
			return err
		}, codes.InvalidArgument, `name: "123" reads as an epoch`},
		"savepoint name that reads as latest": {func() error {
			_, err := cps.Savepoint(ctx, &statedv1.SavepointRequest{Name: "latest"})
			return err
		}, codes.InvalidArgument, `name: "latest" reads as an epoch or as latest`},
		"delete a reserved savepoint name": {func() error {
			_, err := cps.Delete(ctx, &statedv1.DeleteCheckpointRequest{Savepoint: "."})
			return err
		}, codes.InvalidArgument, `savepoint: "." is reserved`},
		"delete a savepoint with force": {func() error {
			_, err := cps.Delete(ctx, &statedv1.DeleteCheckpointRequest{Savepoint: "before-deploy", Force: true})
			return err
		}, codes.InvalidArgument, "force: only for an epoch; a savepoint is deleted without it"},
		"get by a bad savepoint name": {func() error {
			_, err := cps.Get(ctx, &statedv1.GetCheckpointRequest{Savepoint: "../before-deploy"})
			return err
		}, codes.InvalidArgument, "savepoint: invalid character '/'"},
		"delete epoch 0": {func() error { _, err := cps.Delete(ctx, &statedv1.DeleteCheckpointRequest{}); return err }, codes.InvalidArgument, "epoch: zero"},
		"delete the newest": {func() error {
			_, err := cps.Delete(ctx, &statedv1.DeleteCheckpointRequest{Epoch: 7})
			return err
		}, codes.FailedPrecondition, "checkpoint 7 is the newest checkpoint in the bucket: Kafka's committed offsets"},
	} {
		t.Run(name, func(t *testing.T) {
			err := tc.call()
			if st, ok := status.FromError(err); !ok || st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Fatalf("err = %v, want %s containing %q", err, tc.code, tc.msg)
			}
		})
	}
}

func TestStartRefusesABadCheckpointConfig(t *testing.T) {
	for name, tc := range map[string]struct {
		set  func(*daemon.Config)
		want string
	}{
		"unknown scheme": {func(c *daemon.Config) { c.CheckpointURL = "ftp://host/x" }, "ftp"},
		"unreachable S3": {func(c *daemon.Config) {
			c.CheckpointURL = "s3://ckpt?endpoint=http://127.0.0.1:1&use_path_style=true&region=us-east-1&disable_https=true"
		}, "checkpoint bucket s3://ckpt"},
		"interval too low": {func(c *daemon.Config) { c.CheckpointInterval = 500 * time.Millisecond }, "CheckpointInterval 500ms is below the 1s minimum"},
		"negative retain":  {func(c *daemon.Config) { c.CheckpointRetain = -1 }, "CheckpointRetain -1 is below 1"},
		"negative materialize interval": {func(c *daemon.Config) { c.CheckpointMaterializeInterval = -time.Second },
			"CheckpointMaterializeInterval -1s is negative"},
		"negative changelog memory": {func(c *daemon.Config) { c.CheckpointChangelogMemory = -1 },
			"CheckpointChangelogMemory -1 is negative"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := daemontest.Config(t, "n1")
			tc.set(&cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			d, err := daemon.Start(ctx, cfg)
			if err == nil {
				d.Close()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// bucketFilesBytes sums the sizes of the blobs under files/ in a file://
// bucket: what reached the bucket, counted on its side.
func bucketFilesBytes(t *testing.T, bucketURL string) int64 {
	t.Helper()
	u, err := url.Parse(bucketURL)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	entries, err := os.ReadDir(filepath.Join(u.Path, "files"))
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || strings.HasSuffix(e.Name(), ".tmp") || strings.HasSuffix(e.Name(), ".attrs") {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// TestIncrementalCheckpointOfA200MBStateSendsLittle: with 200 MB of state
// in steady state, changing 1% of the keys makes the next checkpoint send
// at most 5% of the state's bytes to the bucket.
func TestIncrementalCheckpointOfA200MBStateSendsLittle(t *testing.T) {
	if testenv.Race {
		t.Skip("writes 200 MB: too slow under the race detector; `go test ./daemon` runs it")
	}
	bucket := fileBucket(t)
	d := daemontest.Start(t, func(c *daemon.Config) { c.CheckpointURL = bucket; c.CheckpointInterval = 0; c.CheckpointRetain = 50 })
	conn := dial(t, "unix://"+d.SocketPath())
	state, cps := statedv1.NewStateClient(conn), statedv1.NewCheckpointsClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	const keys, valueSize, perCommit = 200_000, 1024, 1000
	r := rand.New(rand.NewPCG(1, 2))
	value := func() []byte {
		b := make([]byte, valueSize)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	put := func(ks []int) {
		req := &statedv1.CommitRequest{}
		for _, k := range ks {
			req.Mutations = append(req.Mutations, &statedv1.Mutation{Kind: statedv1.MutationKind_MUTATION_KIND_PUT,
				Namespace: "ns", Key: fmt.Appendf(nil, "key-%08d", k), Value: value()})
		}
		if _, err := state.Commit(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	for start := 0; start < keys; start += perCommit {
		ks := make([]int, perCommit)
		for i := range ks {
			ks[i] = start + i
		}
		put(ks)
	}
	// Steady state: checkpoints until one sends almost nothing, so that
	// the compactions the bulk load started are over.
	var last *statedv1.TriggerCheckpointResponse
	for i := 0; ; i++ {
		before := bucketFilesBytes(t, bucket)
		resp, err := cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
		if err != nil {
			t.Fatal(err)
		}
		last = resp
		sent := bucketFilesBytes(t, bucket) - before
		t.Logf("checkpoint %d: %d files, %d MB, sent %d KB", resp.GetEpoch(), resp.GetSummary().GetFiles(), resp.GetSummary().GetBytes()>>20, sent>>10)
		if i > 0 && sent < int64(resp.GetSummary().GetStateBytes())/100 {
			break
		}
		if i == 20 {
			t.Fatal("the checkpoints never settled")
		}
		time.Sleep(500 * time.Millisecond)
	}
	stateBytes := last.GetSummary().GetStateBytes()
	if stateBytes < 200_000_000 {
		t.Fatalf("state holds %d bytes, want at least 200 MB", stateBytes)
	}
	// Change 1% of the keys, spread over the key space.
	changed := r.Perm(keys)[:keys/100]
	for i := 0; i < len(changed); i += perCommit {
		put(changed[i:min(i+perCommit, len(changed))])
	}
	before := bucketFilesBytes(t, bucket)
	resp, err := cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	sent := bucketFilesBytes(t, bucket) - before
	st, err := cps.Status(ctx, &statedv1.CheckpointStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	pct := 100 * float64(sent) / float64(stateBytes)
	t.Logf("after changing 1%% of %d keys: checkpoint %d sent %d KB to the bucket (%.2f%% of %d MB of state; the coordinator counted %d KB)",
		keys, resp.GetEpoch(), sent>>10, pct, stateBytes>>20, st.GetLastBytesUploaded()>>10)
	if pct > 5 {
		t.Fatalf("the incremental checkpoint sent %.2f%% of the state, want at most 5%%", pct)
	}
	if uint64(sent) != st.GetLastBytesUploaded() {
		t.Errorf("the bucket received %d bytes, the coordinator reports %d", sent, st.GetLastBytesUploaded())
	}
	// Its counts were made from the checkpoint before, reading only what
	// changed, and they are exact: the same keys, overwritten with values
	// of the same size.
	lc := d.CheckpointStatus().LastCount
	t.Logf("counted in %v: %+v", d.CheckpointStatus().LastCountDuration, lc)
	if lc.Whole != "" {
		t.Errorf("the checkpoint after a 1%% change counted its state whole (%s), want it counted from the checkpoint before", lc.Whole)
	}
	if lc.TableBytesRead > stateBytes/5 {
		t.Errorf("counting from the checkpoint before read %d bytes of tables, more than a fifth of the %d of state", lc.TableBytesRead, stateBytes)
	}
	// The gRPC status says the same.
	if n := st.GetLastCount(); n.GetWholeReason() != lc.Whole || n.GetBaseEpoch() != lc.BaseEpoch || n.GetBaseEpoch() != last.GetEpoch() ||
		n.GetKeysCompared() != lc.KeysCompared || n.GetTableBytesRead() != lc.TableBytesRead || n.GetTablesRead() != uint64(lc.TablesRead) ||
		n.GetRangesCompared() != uint64(lc.RangesCompared) || n.GetDurationMillis() != d.CheckpointStatus().LastCountDuration.Milliseconds() ||
		n.GetTablesFromProperties() != uint64(lc.TablesFromProperties) || n.GetKeysFromProperties() != lc.KeysFromProperties {
		t.Errorf("the gRPC status says the count was %v; the coordinator's is %+v, from epoch %d", n, lc, last.GetEpoch())
	}
	if got := resp.GetSummary().GetKeys(); got != keys || resp.GetSummary().GetStateBytes() != stateBytes {
		t.Errorf("the manifest counts %d keys, %d bytes; want %d keys and the %d bytes of the checkpoint before", got, resp.GetSummary().GetStateBytes(), keys, stateBytes)
	}
}

// copyDir copies the files of a local checkpoint directory.
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if e.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestACheckpointThatIsNotItsBarriersCutFailsAndIsNotUploaded: when the
// local checkpoint of epoch 2 holds epoch 1's state (here swapped in by a
// hook), the epoch fails loudly and no manifest 2 is written; the next
// epoch goes through.
func TestACheckpointThatIsNotItsBarriersCutFailsAndIsNotUploaded(t *testing.T) {
	bucket := fileBucket(t)
	d := daemontest.Start(t, func(c *daemon.Config) { c.CheckpointURL = bucket; c.CheckpointInterval = 0 })
	stash := filepath.Join(t.TempDir(), "epoch-1")
	daemon.SetCheckpointCutHook(d, func(epoch uint64, dir string) string {
		switch epoch {
		case 1:
			copyDir(t, dir, stash)
		case 2:
			return stash
		}
		return dir
	})
	conn := dial(t, "unix://"+d.SocketPath())
	state, cps := statedv1.NewStateClient(conn), statedv1.NewCheckpointsClient(conn)
	ctx := testContext(t)
	commit := func() {
		if _, err := state.Commit(ctx, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{
			{Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, Namespace: "ns", Key: []byte("n"), Delta: 1}}}); err != nil {
			t.Fatal(err)
		}
	}
	commit()
	if _, err := cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true}); err != nil {
		t.Fatal(err)
	}
	commit()
	_, err := cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
	if err == nil || !strings.Contains(err.Error(), "holds epoch 1") || !strings.Contains(err.Error(), "barrier 2") {
		t.Fatalf("checkpoint 2 over epoch 1's state: err = %v, want a refusal naming both epochs", err)
	}
	if _, err := openBucket(t, bucket).Get(ctx, 2); !errors.Is(err, uploader.ErrNotFound) {
		t.Fatalf("manifest 2: %v, want none", err)
	}
	st, err := cps.Status(ctx, &statedv1.CheckpointStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetFailures() != 1 || !strings.Contains(st.GetLastError(), "not its barrier's cut") {
		t.Fatalf("status: %d failures, last error %q", st.GetFailures(), st.GetLastError())
	}
	resp, err := cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
	if err != nil || resp.GetEpoch() != 3 {
		t.Fatalf("checkpoint after the refused one: %v, %v", resp, err)
	}
}

// TestCheckpointCountsAreMadeFromTheCheckpointBeforeAcrossARestart: the
// first checkpoint counts the state whole; the next ones, also after a
// restart of the daemon, use the checkpoint before, kept in the data
// dir: they count from it, or count whole having compared their tables
// with it (Pebble may compact the few tables of so small a state in
// between, and the counter then finds too much changed). Every
// manifest's counts are exact. TestIncrementalCheckpointOfA200MBState-
// SendsLittle checks a count made from the base on a larger state.
func TestCheckpointCountsAreMadeFromTheCheckpointBeforeAcrossARestart(t *testing.T) {
	cfg := testConfig(t)
	cfg.CheckpointURL, cfg.CheckpointInterval = fileBucket(t), 0
	ctx := testContext(t)
	d, err := daemon.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { d.Close() }()
	commit := func(muts ...*statedv1.Mutation) {
		t.Helper()
		if _, err := statedv1.NewStateClient(dial(t, "unix://"+d.SocketPath())).Commit(ctx, &statedv1.CommitRequest{Mutations: muts}); err != nil {
			t.Fatal(err)
		}
	}
	fill := rand.NewChaCha8([32]byte{9})
	put := func(i int) *statedv1.Mutation {
		v := make([]byte, 1024)
		fill.Read(v)
		return &statedv1.Mutation{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "ns", Key: fmt.Appendf(nil, "key-%06d", i), Value: v}
	}
	// checkpoint takes one and returns its manifest's key count and how
	// the daemon counted it.
	checkpoint := func() (uint64, daemon.CheckpointStatus) {
		t.Helper()
		resp, err := statedv1.NewCheckpointsClient(dial(t, "unix://"+d.SocketPath())).Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetSummary().GetKeys(), d.CheckpointStatus()
	}
	// usedBase: counted from the base of epoch, or whole after comparing
	// the tables with it.
	usedBase := func(c fsm.CheckpointCount, epoch uint64) bool {
		return (c.Whole == "" && c.BaseEpoch == epoch) ||
			strings.Contains(c.Whole, fmt.Sprintf("added and removed since the base (epoch %d)", epoch))
	}
	for i := 0; i < 2000; i += 500 {
		var muts []*statedv1.Mutation
		for j := i; j < i+500; j++ {
			muts = append(muts, put(j))
		}
		commit(muts...)
	}
	keys, st := checkpoint()
	if keys != 2000 || st.LastCount.Whole != "no base kept" {
		t.Fatalf("first checkpoint: %d keys, counted %+v; want 2000, counted whole with no base kept", keys, st.LastCount)
	}
	first := st.LastCompleted.Epoch
	// Overwrites, new keys and a delete.
	commit(put(3), put(1500), put(2000), put(2001),
		&statedv1.Mutation{Kind: statedv1.MutationKind_MUTATION_KIND_DELETE, Namespace: "ns", Key: []byte("key-000007")})
	keys, st = checkpoint()
	if keys != 2001 || !usedBase(st.LastCount, first) {
		t.Fatalf("second checkpoint: %d keys, counted %+v; want 2001, counted with the base of epoch %d", keys, st.LastCount, first)
	}
	second := st.LastCompleted.Epoch
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, fsm.CountBaseDir, "stated-count.json")); err != nil {
		t.Fatalf("the base of the next count is not in the data dir: %v", err)
	}
	if d, err = daemon.Start(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	commit(put(2002))
	keys, st = checkpoint()
	if keys != 2002 || !usedBase(st.LastCount, second) {
		t.Fatalf("checkpoint after the restart: %d keys, counted %+v; want 2002, counted with the base of epoch %d", keys, st.LastCount, second)
	}
}

// TestAPanicInACheckpointCrashesTheDaemon runs, in a child process, a
// daemon whose checkpoint panics (through the cut hook), and checks that
// the child dies of the panic. The coordinator once waited, as the panic
// unwound, for its follower pre-hash loop, which had no reason to stop:
// the panic never surfaced, and every later checkpoint trigger waited
// forever (a slice bound in TrimCheckpointWAL, found that way).
func TestAPanicInACheckpointCrashesTheDaemon(t *testing.T) {
	if os.Getenv("STATED_TEST_CHECKPOINT_PANIC") == "1" {
		bucket := fileBucket(t)
		d := daemontest.Start(t, func(c *daemon.Config) { c.CheckpointURL = bucket; c.CheckpointInterval = 0 })
		daemon.SetCheckpointCutHook(d, func(uint64, string) string { panic("checkpoint panic for the test") })
		conn := dial(t, "unix://"+d.SocketPath())
		// No deadline: only the panic ends this call.
		_, err := statedv1.NewCheckpointsClient(conn).Trigger(context.Background(), &statedv1.TriggerCheckpointRequest{Wait: true})
		t.Fatalf("the trigger returned (%v); the process should have died of the panic", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestAPanicInACheckpointCrashesTheDaemon$", "-test.count=1")
	// The child dies without running its cleanups, so its temporary
	// directories (data, bucket, socket) go under one the parent removes.
	// os.MkdirTemp, not t.TempDir: the socket path must stay short.
	tmp, err := os.MkdirTemp("", "stated-panic")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	cmd.Env = append(os.Environ(), "STATED_TEST_CHECKPOINT_PANIC=1", "TMPDIR="+tmp)
	out, err := cmd.CombinedOutput()
	switch {
	case ctx.Err() != nil:
		t.Fatalf("the daemon did not die of the panic within a minute; its output:\n%s", out)
	case err == nil || !strings.Contains(string(out), "panic: checkpoint panic for the test"):
		t.Fatalf("child: %v, want it to die of the checkpoint's panic; output:\n%s", err, out)
	}
}
