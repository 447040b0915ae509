package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/blob"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/internal/s3test"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore/fsm"
	stated "github.com/statedhq/stated/sdk/go"
	"github.com/statedhq/stated/uploader"
)

// ckptS3 is an in-process S3-compatible server (gofakes3 over memory) on
// 127.0.0.1 with one bucket, and the bucket URL stated and the test open.
type ckptS3 struct {
	url string
}

const ckptBucket = s3test.Bucket

// newCkptS3 starts the server, its handler wrapped by wrap if given, and
// sets the AWS environment that stated processes started afterwards
// inherit.
func newCkptS3(t *testing.T, wrap func(http.Handler) http.Handler) *ckptS3 {
	t.Helper()
	// The credentials are set for the whole package (s3TestEnv), so
	// that the tests using this server can run in parallel.
	return &ckptS3{url: s3test.Serve(t, wrap)}
}

// ckptOpen opens a bucket URL from the test, as a restore would.
func ckptOpen(ctx context.Context, t *testing.T, bucketURL string) (*blob.Bucket, *uploader.Uploader) {
	t.Helper()
	b, err := uploader.OpenBucket(ctx, bucketURL)
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

// ckptRestore verifies every blob of m, downloads it and opens its state.
func ckptRestore(ctx context.Context, t *testing.T, up *uploader.Uploader, m *uploader.Manifest) *fsm.FSM {
	t.Helper()
	problems, err := up.Verify(ctx, m)
	if err != nil {
		t.Fatalf("verify checkpoint %d: %v", m.Epoch, err)
	}
	if len(problems) > 0 {
		t.Fatalf("checkpoint %d has damaged files: %+v", m.Epoch, problems)
	}
	dir := filepath.Join(t.TempDir(), "state")
	if _, err := up.Download(ctx, m, dir, nil); err != nil {
		t.Fatalf("download checkpoint %d: %v", m.Epoch, err)
	}
	f, err := fsm.Open(dir, nil)
	if err != nil {
		t.Fatalf("open checkpoint %d: %v", m.Epoch, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// ckptCounter reads a counter from restored state; 0 when absent.
func ckptCounter(t *testing.T, f *fsm.FSM, ns, key string) int64 {
	t.Helper()
	e, ok, err := f.Get(ns, []byte(key), fsm.KindCounter, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return 0
	}
	return e.Counter
}

// manifestOffsets are m's offsets of group, by topic and partition.
func manifestOffsets(m *uploader.Manifest, group string) map[string]map[int32]int64 {
	out := map[string]map[int32]int64{}
	for _, o := range m.Offsets {
		if o.Group != group {
			continue
		}
		if out[o.Topic] == nil {
			out[o.Topic] = map[int32]int64{}
		}
		out[o.Topic][o.Partition] = o.Offset
	}
	return out
}

// trigger asks n for a checkpoint; with wait, until it completed.
func trigger(ctx context.Context, t *testing.T, n *node, wait bool) *statedv1.TriggerCheckpointResponse {
	t.Helper()
	conn := n.dial()
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := statedv1.NewCheckpointsClient(conn).Trigger(cctx, &statedv1.TriggerCheckpointRequest{Wait: wait})
	if err != nil {
		t.Fatalf("%s: trigger checkpoint (wait=%v): %v", n.id, wait, err)
	}
	if resp.GetEpoch() == 0 || wait && resp.GetSummary().GetEpoch() != resp.GetEpoch() {
		t.Fatalf("%s: trigger checkpoint (wait=%v) = %v", n.id, wait, resp)
	}
	return resp
}

// TestCheckpointsToS3RoundTrip checkpoints a stated process to an
// S3-compatible server on 127.0.0.1 while a writer moves a counter and
// its offset together; every manifest in the bucket verifies, and its
// downloaded state holds a counter equal to its offset (a consistent
// cut), at the manifest's Raft index. The triggered checkpoint holds at
// least what was acknowledged before the trigger and at most what was
// sent before it returned.
func TestCheckpointsToS3RoundTrip(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var puts atomic.Int64
	s3 := newCkptS3(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/"+ckptBucket+"/files/") {
				puts.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	})
	n := newNamedNode(t, "n1")
	// Retention is raised so that the periodic checkpoints (every 1s)
	// cannot retire the triggered one while the test reads it.
	n.args = []string{"--checkpoint-url", s3.url, "--checkpoint-interval", "1s", "--checkpoint-retain", "100"}
	n.start(ctx)
	c := sdkDial(ctx, t, n.socket)

	// The writer: commit i adds 1 to the counter and sets the offset to i,
	// in one transaction, with a 1 KiB value so that there is some data.
	var sent, acked atomic.Int64
	wctx, stopWriter := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		val := bytes.Repeat([]byte("v"), 1024)
		for i := int64(1); wctx.Err() == nil; i++ {
			sent.Store(i)
			_, err := c.Txn().
				CounterAdd("ckpt", []byte("n"), 1).
				Put("ckpt", fmt.Appendf(nil, "v/%06d", i%500), val).
				CommitOffset("g", "events", 0, i).
				Commit(wctx)
			if err != nil {
				if wctx.Err() == nil {
					t.Errorf("commit %d: %v", i, err)
				}
				return
			}
			acked.Store(i)
		}
	}()
	defer func() { stopWriter(); wg.Wait() }()
	for acked.Load() < 200 {
		if ctx.Err() != nil {
			t.Fatalf("only %d commits acknowledged", acked.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}

	before := acked.Load()
	resp := trigger(ctx, t, n, true)
	sentBy := sent.Load()
	epoch := resp.GetEpoch()
	t.Logf("checkpoint %d completed: %d files, %d bytes; %d commits acknowledged before the trigger, %d sent by its return",
		epoch, resp.GetSummary().GetFiles(), resp.GetSummary().GetBytes(), before, sentBy)

	b, up := ckptOpen(ctx, t, s3.url)
	m, err := up.Get(ctx, epoch)
	if err != nil {
		t.Fatalf("manifest of checkpoint %d: %v", epoch, err)
	}
	if m.Epoch != epoch || m.RaftIndex != resp.GetSummary().GetRaftIndex() || len(m.Files) == 0 || m.ClusterID == "" {
		t.Fatalf("manifest %d = epoch %d, index %d (trigger said %d), %d files, cluster %q",
			epoch, m.Epoch, m.RaftIndex, resp.GetSummary().GetRaftIndex(), len(m.Files), m.ClusterID)
	}
	if ok, err := b.Exists(ctx, fmt.Sprintf("manifests/%020d.json", epoch)); err != nil || !ok {
		t.Fatalf("manifests/%020d.json in the bucket: %v, %v", epoch, ok, err)
	}
	if puts.Load() == 0 {
		t.Fatal("no file was PUT to the S3 server")
	}

	f := ckptRestore(ctx, t, up, m)
	counter := ckptCounter(t, f, "ckpt", "n")
	offs := manifestOffsets(m, "g")
	off, ok := offs["events"][0]
	if !ok || len(m.Offsets) != 1 {
		t.Fatalf("checkpoint %d offsets = %+v, want one for g/events/0", epoch, m.Offsets)
	}
	if counter != off {
		t.Fatalf("checkpoint %d: counter %d, offset %d: the cut is not consistent", epoch, counter, off)
	}
	if counter < before || counter > sentBy {
		t.Fatalf("checkpoint %d: counter %d, want between %d (acknowledged before the trigger) and %d (sent before it returned)",
			epoch, counter, before, sentBy)
	}
	if got, err := f.Offsets("g"); err != nil || len(got) != 1 || got[0].Offset != off {
		t.Fatalf("checkpoint %d: restored offsets of g = %+v, %v; want %d", epoch, got, err, off)
	}
	if f.AppliedIndex() != m.RaftIndex {
		t.Fatalf("checkpoint %d: applied index %d, manifest says %d", epoch, f.AppliedIndex(), m.RaftIndex)
	}

	// The interval checkpoints go on, to the same bucket, while the
	// writer does: wait for one after the triggered one.
	deadline := time.Now().Add(15 * time.Second)
	var all []*uploader.Manifest
	for {
		if all, err = up.List(ctx); err != nil {
			t.Fatal(err)
		}
		if len(all) > 0 && all[len(all)-1].Epoch > epoch {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no interval checkpoint after %d within 15s (bucket holds %d)", epoch, len(all))
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopWriter()
	wg.Wait()
	for _, m := range all {
		f := ckptRestore(ctx, t, up, m)
		counter, off := ckptCounter(t, f, "ckpt", "n"), manifestOffsets(m, "g")["events"][0]
		if counter != off || f.AppliedIndex() != m.RaftIndex {
			t.Fatalf("checkpoint %d: counter %d, offset %d, applied index %d, manifest index %d",
				m.Epoch, counter, off, f.AppliedIndex(), m.RaftIndex)
		}
	}
	t.Logf("%d checkpoints in the bucket, each consistent; %d file PUTs", len(all), puts.Load())
}

// slowFilePuts delays every PUT of a checkpoint file (a key under files/)
// while on, and counts them; it records the manifest PUTs. The first
// delayed PUT is held until release is closed (30s at most), so that the
// test can act while an upload is certainly in progress.
type slowFilePuts struct {
	next http.Handler
	on   atomic.Bool

	started atomic.Int64 // file PUTs that arrived while on
	pending atomic.Int64 // of those, not answered yet
	first   chan struct{}
	release chan struct{}
	once    sync.Once

	mu        sync.Mutex
	manifests []string // keys of every manifest PUT
	// firstHead is the start of the held PUT's body (its first 4 KiB,
	// in the request's transfer encoding), read before it is held.
	firstHead []byte
}

func (s *slowFilePuts) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/"+ckptBucket+"/manifests/") {
		s.mu.Lock()
		s.manifests = append(s.manifests, strings.TrimPrefix(r.URL.Path, "/"+ckptBucket+"/"))
		s.mu.Unlock()
	}
	if r.Method != http.MethodPut || !strings.HasPrefix(r.URL.Path, "/"+ckptBucket+"/files/") || !s.on.Load() {
		s.next.ServeHTTP(w, r)
		return
	}
	s.pending.Add(1)
	defer s.pending.Add(-1)
	s.started.Add(1)
	held := false
	s.once.Do(func() {
		held = true
		head := make([]byte, 4<<10)
		n, _ := io.ReadFull(r.Body, head)
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(head[:n]), r.Body))
		s.mu.Lock()
		s.firstHead = head[:n]
		s.mu.Unlock()
		close(s.first)
	})
	if held {
		select {
		case <-s.release:
		case <-time.After(30 * time.Second):
		}
	} else {
		time.Sleep(200*time.Millisecond + rand.N(200*time.Millisecond))
	}
	s.next.ServeHTTP(w, r)
}

func (s *slowFilePuts) manifestPuts() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.manifests)
}

// TestLeaderKilledMidUploadLeavesNoManifest kills the leader of three
// stated processes with SIGKILL while its checkpoint's files are being
// uploaded (the first file PUT held until the kill, the others delayed):
// the bucket never gets a manifest for that epoch; the new leader's next
// checkpoint has a higher epoch, is the only manifest in the bucket,
// verifies clean and holds every acknowledged commit; the killed node
// rejoins as a follower.
func TestLeaderKilledMidUploadLeavesNoManifest(t *testing.T) {
	leaderKilledMidUpload(t, false)
}

// TestLeaderKilledMidChangelogUploadLeavesNoManifest is the test above
// with changelog checkpoints (to S3): after a table checkpoint, the
// leader is killed while its changelog checkpoint's segment is being
// sent. No manifest names that epoch, and the new leader's checkpoint,
// its first and so of its tables, holds every acknowledged commit.
func TestLeaderKilledMidChangelogUploadLeavesNoManifest(t *testing.T) {
	leaderKilledMidUpload(t, true)
}

// triggerUntilAPut triggers a checkpoint on the leader of nodes and
// waits for one of its file PUTs to reach the bucket (put closed). A
// checkpoint that ends before any does was abandoned: on a loaded
// machine the leader can miss its lease (no follower heard for 500 ms)
// and step down between the barrier and the first PUT, and only a
// trigger starts another (the interval is an hour). It is triggered
// again on the leader then, after again(), at most five
// times in a minute. It returns the leader's index in nodes and the
// epoch whose PUT arrived.
func triggerUntilAPut(ctx context.Context, t *testing.T, nodes []*node, put <-chan struct{}, again func()) (int, uint64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			again()
		}
		i, resp := triggerOnLeader(ctx, t, nodes, false)
		epoch := resp.GetEpoch()
		for {
			select {
			case <-put:
				return i, epoch
			case <-time.After(500 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("checkpoint %d (attempt %d): no file PUT within a minute", epoch, attempt)
			}
			// The status is the leader's: while none is known (an
			// election), ask again.
			st, err := checkpointStatus(ctx, nodes[i])
			if status.Code(err) == codes.Unavailable {
				continue
			}
			if err != nil {
				t.Fatalf("%s: checkpoint status: %v", nodes[i].id, err)
			}
			if st.GetNodeId() == nodes[i].id && st.GetInProgressEpoch() == epoch {
				continue
			}
			select {
			case <-put: // it ended after its PUT arrived
				return i, epoch
			default:
			}
			if attempt == 5 {
				t.Fatalf("checkpoint %d (attempt %d) ended before any file PUT reached the bucket: leader %s, %s", epoch, attempt, st.GetNodeId(), st.GetLastError())
			}
			t.Logf("checkpoint %d by %s ended before any file PUT reached the bucket (leader %s: %s): triggered again", epoch, nodes[i].id, st.GetNodeId(), st.GetLastError())
			break
		}
	}
}

// triggerOnLeader triggers a checkpoint (waiting for it to complete with
// wait) on the leader of nodes, and returns the leader's index and the
// answer. A trigger answered Unavailable (no leader known, or the
// checkpoint abandoned because its node stopped leading, which a loaded
// machine can cause) is sent again to the leader then, until ctx ends.
func triggerOnLeader(ctx context.Context, t *testing.T, nodes []*node, wait bool) (int, *statedv1.TriggerCheckpointResponse) {
	t.Helper()
	for {
		i := leaderOf(ctx, t, nodes)
		conn := nodes[i].dial()
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := statedv1.NewCheckpointsClient(conn).Trigger(cctx, &statedv1.TriggerCheckpointRequest{Wait: wait})
		cancel()
		conn.Close()
		if err == nil {
			if resp.GetEpoch() == 0 || wait && resp.GetSummary().GetEpoch() != resp.GetEpoch() {
				t.Fatalf("%s: trigger checkpoint (wait=%v) = %v", nodes[i].id, wait, resp)
			}
			return i, resp
		}
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			t.Fatalf("%s: trigger checkpoint (wait=%v): %v", nodes[i].id, wait, err)
		}
		t.Logf("%s: trigger checkpoint (wait=%v): %v; sent again", nodes[i].id, wait, err)
		time.Sleep(100 * time.Millisecond)
	}
}

// checkpointStatus is the checkpoint coordinator's status, asked of n
// (which forwards to the leader).
func checkpointStatus(ctx context.Context, n *node) (*statedv1.CheckpointStatus, error) {
	conn := n.dial()
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return statedv1.NewCheckpointsClient(conn).Status(cctx, &statedv1.CheckpointStatusRequest{})
}

// leaderKilledMidUpload runs the two tests above.
func leaderKilledMidUpload(t *testing.T, changelog bool) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	slow := &slowFilePuts{first: make(chan struct{}), release: make(chan struct{})}
	defer func() {
		select {
		case <-slow.release:
		default:
			close(slow.release)
		}
	}()
	s3 := newCkptS3(t, func(h http.Handler) http.Handler { slow.next = h; return slow })
	// Only triggers start checkpoints; retention keeps every table
	// checkpoint a retry below may add.
	args := []string{"--checkpoint-url", s3.url, "--checkpoint-interval", "1h", "--checkpoint-retain", "10"}
	if changelog {
		args = append(args, "--checkpoint-materialize-interval", "1h")
	}
	nodes := startCluster(ctx, t, 3, args...)
	c := sdkDial(ctx, t, addrs(nodes))
	var bases []uint64 // the table checkpoints changelog ones follow
	if changelog {
		// Tables that outweigh the segment below: 8 MiB of incompressible
		// values.
		r := rand.New(rand.NewPCG(3, 4))
		for i := range 16 {
			v := make([]byte, 512<<10)
			for p := range v {
				v[p] = byte(r.Uint32())
			}
			if _, err := c.Txn().Put("base", fmt.Appendf(nil, "%02d", i), v).Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
		_, resp := triggerOnLeader(ctx, t, nodes, true)
		bases = append(bases, resp.GetEpoch())
	}

	// About 3 MiB of incompressible values, with a counter and an offset
	// moved by every commit.
	const commits, perCommit = 60, 50
	r := rand.New(rand.NewPCG(1, 2))
	values := map[string][]byte{}
	for i := 1; i <= commits; i++ {
		txn := c.Txn().CounterAdd("ckpt", []byte("n"), 1).CommitOffset("g", "events", 0, int64(i))
		for j := range perCommit {
			k := fmt.Sprintf("v/%03d/%02d", i, j)
			v := make([]byte, 1024)
			for p := 0; p < len(v); p += 8 {
				u := r.Uint64()
				for q := range 8 {
					v[p+q] = byte(u >> (8 * q))
				}
			}
			values[k] = v
			txn.Put("ckpt", []byte(k), v)
		}
		if _, err := txn.Commit(ctx); err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
	}

	slow.on.Store(true)
	old, epoch := triggerUntilAPut(ctx, t, nodes, slow.first, func() {
		// A failed checkpoint ends the leader's changelog chain (as
		// stopping leading does): the checkpoint held must still be a
		// changelog one, so the leader gets a table checkpoint to build
		// on first (its PUTs not held).
		if !changelog {
			return
		}
		slow.on.Store(false)
		_, resp := triggerOnLeader(ctx, t, nodes, true)
		bases = append(bases, resp.GetEpoch())
		slow.on.Store(true)
	})
	leader := nodes[old]
	leader.kill()
	pendingAtKill, startedAtKill := slow.pending.Load(), slow.started.Load()
	// What was being sent: a changelog segment (its header names it)
	// from memory, or a table.
	slow.mu.Lock()
	segment := bytes.Contains(slow.firstHead, []byte("STATEDCL"))
	slow.mu.Unlock()
	if segment != changelog {
		t.Fatalf("checkpoint %d: the file held mid-upload is a changelog segment: %t; want %t", epoch, segment, changelog)
	}
	killed := time.Now()
	// The held PUT now reaches the bucket, from a client that is gone.
	close(slow.release)
	t.Logf("SIGKILL leader %s during checkpoint %d: %d file PUTs started, %d not answered yet", leader.id, epoch, startedAtKill, pendingAtKill)
	if pendingAtKill == 0 {
		// The manifest is written only after every file PUT is answered;
		// with none pending, the kill may have come after the upload.
		t.Fatal("no file PUT was pending when the leader died: the kill did not land mid-upload")
	}

	// No manifest for the epoch, also once the requests in flight at the
	// kill have been answered.
	b, up := ckptOpen(ctx, t, s3.url)
	key := fmt.Sprintf("manifests/%020d.json", epoch)
	for time.Since(killed) < 3*time.Second || slow.pending.Load() > 0 {
		if ok, err := b.Exists(ctx, key); err != nil || ok {
			t.Fatalf("%s in the bucket after the leader died mid-upload: exists=%v err=%v", key, ok, err)
		}
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("%d file PUTs still pending 30s after the kill", slow.pending.Load())
		}
		time.Sleep(100 * time.Millisecond)
	}

	rest := append(append([]*node{}, nodes[:old]...), nodes[old+1:]...)
	nl := rest[leaderOf(ctx, t, rest)]
	t.Logf("new leader %s %v after the kill", nl.id, time.Since(killed).Round(time.Millisecond))
	// The new leader may still be settling in (or lose its lease on a
	// loaded machine): triggerOnLeader asks again while it is answered
	// Unavailable.
	by, resp := triggerOnLeader(ctx, t, rest, true)
	next := resp.GetEpoch()
	if next <= epoch {
		t.Fatalf("the new leader's checkpoint has epoch %d, not above the abandoned %d", next, epoch)
	}
	if ok, err := b.Exists(ctx, key); err != nil || ok {
		t.Fatalf("%s in the bucket after the next checkpoint: exists=%v err=%v", key, ok, err)
	}
	for _, k := range slow.manifestPuts() {
		if k == key {
			t.Fatalf("a PUT of %s reached the bucket", key)
		}
	}
	all, err := up.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var es []uint64
	want := slices.Clone(bases)
	for _, m := range all {
		es = append(es, m.Epoch)
	}
	if want = append(want, next); !slices.Equal(es, want) {
		t.Fatalf("the bucket holds checkpoints %v, want %v", es, want)
	}
	m := all[len(all)-1]
	if m.Changelog != nil {
		t.Fatalf("the new leader's first checkpoint %d is a changelog one on %d; a leader's first uploads its tables", m.Epoch, m.Changelog.BaseEpoch)
	}
	f := ckptRestore(ctx, t, up, m)
	if got := ckptCounter(t, f, "ckpt", "n"); got != commits || manifestOffsets(m, "g")["events"][0] != commits {
		t.Fatalf("checkpoint %d: counter %d, offset %+v; want %d acknowledged commits", next, got, m.Offsets, commits)
	}
	for k, want := range values {
		e, ok, err := f.Get("ckpt", []byte(k), fsm.KindValue, nil, 0)
		if err != nil || !ok || !bytes.Equal(e.Value, want) {
			t.Fatalf("checkpoint %d: %s = %d bytes, found %v, err %v; want the acknowledged value", next, k, len(e.Value), ok, err)
		}
	}
	if f.AppliedIndex() != m.RaftIndex {
		t.Fatalf("checkpoint %d: applied index %d, manifest says %d", next, f.AppliedIndex(), m.RaftIndex)
	}
	t.Logf("checkpoint %d by %s: %d files, %d bytes; %d file PUTs in all", next, rest[by].id, len(m.Files), m.Bytes(), slow.started.Load())

	// The killed node comes back as a member (a follower, or the leader
	// if an election on a loaded machine chose it) and applies the new
	// checkpoint's entries.
	slow.on.Store(false)
	leader.start(ctx)
	for {
		st, err := nodeStatus(ctx, leader)
		if err == nil && (st.Role == "follower" || st.Role == "leader") && st.AppliedIndex > m.RaftIndex {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%s did not rejoin past index %d: %v, %v", leader.id, m.RaftIndex, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ckptStatus is the part of `stated status --json` these tests read.
type ckptStatus struct {
	Checkpoints *struct {
		Completed     uint64   `json:"completed"`
		Failures      uint64   `json:"failures"`
		LastError     string   `json:"last_error"`
		KafkaError    string   `json:"kafka_error"`
		MemberGroups  []string `json:"kafka_member_groups"`
		LastCompleted *struct {
			Epoch uint64 `json:"epoch"`
		} `json:"last_completed"`
	} `json:"checkpoints"`
	CheckpointsError string `json:"checkpoints_error"`
}

// statusJSON runs `stated status --json` against n.
func statusJSON(ctx context.Context, t *testing.T, n *node) ckptStatus {
	t.Helper()
	cmd := exec.CommandContext(ctx, statedBinary(t), "status", "--json", "--addr", "unix://"+n.socket)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("stated status --json: %v\n%s", err, stderr.String())
	}
	var st ckptStatus
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("stated status --json: %v\n%s", err, out)
	}
	if st.Checkpoints == nil {
		t.Fatalf("stated status --json reports no checkpoints (%s):\n%s", st.CheckpointsError, out)
	}
	return st
}

// kafkaCommitted reads group's committed offsets from Kafka; a group Kafka
// does not know has none.
func kafkaCommitted(ctx context.Context, adm *kadm.Client, group string) (map[string]map[int32]int64, error) {
	out := map[string]map[int32]int64{}
	resps, err := adm.FetchOffsets(ctx, group)
	if err == nil {
		err = resps.Error()
	}
	if errors.Is(err, kerr.GroupIDNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	resps.Each(func(o kadm.OffsetResponse) {
		if out[o.Topic] == nil {
			out[o.Topic] = map[int32]int64{}
		}
		out[o.Topic][o.Partition] = o.At
	})
	return out, nil
}

func offsetsEqual(a, b map[string]map[int32]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for t, ps := range a {
		if len(ps) != len(b[t]) {
			return false
		}
		for p, o := range ps {
			if bo, ok := b[t][p]; !ok || bo != o {
				return false
			}
		}
	}
	return true
}

// waitKafkaOffsets polls Kafka until group's committed offsets equal want.
func waitKafkaOffsets(ctx context.Context, t *testing.T, adm *kadm.Client, group string, want map[string]map[int32]int64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, err := kafkaCommitted(ctx, adm, group)
		if err == nil && offsetsEqual(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s: Kafka's committed offsets = %v (err %v), want the checkpoint's %v", group, got, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCheckpointOffsetsReachKafka: after a checkpoint completes, Kafka's
// committed offsets equal the manifest's: for a group with no consumer
// the daemon commits them with the admin client; for a group with an
// active processor, Kafka refuses the daemon (which reports it in status)
// and the processor commits the checkpointed offsets as a member.
func TestCheckpointOffsetsReachKafka(t *testing.T) {
	t.Parallel()
	ctx := kafkaTestContext(t)
	k := newKafka(t, "events", 4)
	k.produce(ctx, t, 2000, 37)
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	n := newNamedNode(t, "n1")
	n.args = []string{"--kafka-brokers", strings.Join(k.brokers, ","), "--checkpoint-url", bucket, "--checkpoint-interval", "1h"}
	n.start(ctx)
	c := sdkDial(ctx, t, n.socket)
	_, up := ckptOpen(ctx, t, bucket)
	admClient, err := kgo.NewClient(kgo.SeedBrokers(k.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer admClient.Close()
	adm := kadm.NewClient(admClient)

	// (a) g1 has no consumer: the daemon commits the checkpoint's offsets.
	k.mu.Lock()
	g1 := map[string]map[int32]int64{k.topic: {}}
	txn := c.Txn().CounterAdd("ckpt", []byte("g1"), 1)
	for p := int32(0); p < 3; p++ {
		g1[k.topic][p] = k.ends[p]/2 + int64(p)
		txn.CommitOffset("g1", k.topic, p, g1[k.topic][p])
	}
	k.mu.Unlock()
	if _, err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := kafkaCommitted(ctx, adm, "g1"); err != nil || len(got) != 0 {
		t.Fatalf("g1 in Kafka before any checkpoint: %v, %v; want nothing", got, err)
	}
	resp := trigger(ctx, t, n, true)
	m1, err := up.Get(ctx, resp.GetEpoch())
	if err != nil {
		t.Fatal(err)
	}
	if got := manifestOffsets(m1, "g1"); !offsetsEqual(got, g1) {
		t.Fatalf("checkpoint %d: offsets of g1 = %v, want the committed %v", m1.Epoch, got, g1)
	}
	waitKafkaOffsets(ctx, t, adm, "g1", manifestOffsets(m1, "g1"), 5*time.Second)
	st := statusJSON(ctx, t, n)
	if cp := st.Checkpoints; cp.Completed != 1 || cp.Failures != 0 || cp.KafkaError != "" ||
		cp.LastCompleted == nil || cp.LastCompleted.Epoch != m1.Epoch {
		t.Fatalf("status after checkpoint %d: %+v (kafka_error %q, last_error %q)", m1.Epoch, *cp, cp.KafkaError, cp.LastError)
	}
	t.Logf("checkpoint %d: Kafka's g1 offsets = the manifest's %v", m1.Epoch, g1)

	// (b) g2 has an active processor, which commits the checkpointed
	// offsets as a member.
	c2 := sdkDial(ctx, t, n.socket, stated.WithClientID("proc-g2"))
	cfg := k.countingConfig(c2, "g2", "counts")
	cfg.KafkaCommitInterval = 200 * time.Millisecond
	pctx, stopProc := context.WithCancel(ctx)
	defer stopProc()
	errc := startProcessor(pctx, t, cfg)
	k.waitDrained(ctx, t, c2, "g2", errc)
	// No checkpoint holds g2's offsets yet, so Kafka must not have any,
	// however many commit intervals pass.
	time.Sleep(5 * cfg.KafkaCommitInterval)
	if got, err := kafkaCommitted(ctx, adm, "g2"); err != nil || len(got) != 0 {
		t.Fatalf("g2 in Kafka before a checkpoint holds its offsets: %v, %v; want nothing", got, err)
	}
	resp = trigger(ctx, t, n, true)
	m2, err := up.Get(ctx, resp.GetEpoch())
	if err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	ends := map[string]map[int32]int64{k.topic: {}}
	for p, e := range k.ends {
		ends[k.topic][p] = e
	}
	k.mu.Unlock()
	if got := manifestOffsets(m2, "g2"); !offsetsEqual(got, ends) {
		t.Fatalf("checkpoint %d: offsets of g2 = %v, want the drained topic's ends %v", m2.Epoch, got, ends)
	}
	waitKafkaOffsets(ctx, t, adm, "g2", manifestOffsets(m2, "g2"), 5*time.Second)
	// g1 holds the same offsets in the new checkpoint, committed again.
	waitKafkaOffsets(ctx, t, adm, "g1", manifestOffsets(m2, "g1"), 5*time.Second)
	st = statusJSON(ctx, t, n)
	cp := st.Checkpoints
	// Kafka refuses the daemon's commit for g2 (it has a member) with
	// UNKNOWN_MEMBER_ID: the daemon reports g2 as committed by its
	// members, not as an error; g1's commit went through.
	if cp.Completed != 2 || cp.Failures != 0 || cp.LastCompleted == nil || cp.LastCompleted.Epoch != m2.Epoch ||
		cp.KafkaError != "" || len(cp.MemberGroups) != 1 || cp.MemberGroups[0] != "g2" {
		t.Fatalf("status after checkpoint %d: completed %d, failures %d, kafka_error %q, member groups %v, last_error %q; want 2 completed, no kafka error, g2 left to its members",
			m2.Epoch, cp.Completed, cp.Failures, cp.KafkaError, cp.MemberGroups, cp.LastError)
	}
	t.Logf("checkpoint %d: Kafka's g2 offsets = the manifest's %v; status kafka_error: %s", m2.Epoch, ends, cp.KafkaError)

	// The processor goes on past the checkpoint; Kafka's offsets stay at
	// the checkpoint's, never ahead of it.
	k.produce(ctx, t, 500, 37)
	k.waitDrained(ctx, t, c2, "g2", errc)
	time.Sleep(5 * cfg.KafkaCommitInterval)
	if got, err := kafkaCommitted(ctx, adm, "g2"); err != nil || !offsetsEqual(got, manifestOffsets(m2, "g2")) {
		t.Fatalf("g2 in Kafka after processing past checkpoint %d: %v, %v; want the checkpoint's %v", m2.Epoch, got, err, manifestOffsets(m2, "g2"))
	}
	stopProc()
	if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	k.checkCounts(ctx, t, c2, "counts")
}
