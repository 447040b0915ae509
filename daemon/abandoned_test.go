package daemon_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore"
)

// heldFilePuts serves an S3-compatible bucket (gofakes3 over memory)
// that holds every PUT of a checkpoint file (files/...) until release is
// closed, telling held about the first.
type heldFilePuts struct {
	h       http.Handler
	once    sync.Once
	held    chan struct{}
	release chan struct{}
}

func (s *heldFilePuts) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/files/") {
		s.once.Do(func() { close(s.held) })
		select {
		case <-s.release:
		case <-r.Context().Done():
			return
		}
	}
	s.h.ServeHTTP(w, r)
}

// TestACheckpointAbandonedBecauseItsLeaderStoppedLeadingAnswersUnavailable:
// the leader hands leadership over while its triggered checkpoint's files
// are being uploaded. The trigger fails UNAVAILABLE (grpcapi's table:
// "this node lost leadership during the call"), saying the checkpoint was
// abandoned, so that a caller tries again on the new leader; it used to
// fail CANCELED, which reads as the caller's own cancellation.
func TestACheckpointAbandonedBecauseItsLeaderStoppedLeadingAnswersUnavailable(t *testing.T) {
	srv := &heldFilePuts{held: make(chan struct{}), release: make(chan struct{})}
	bucket := s3Bucket(t, func(h http.Handler) http.Handler { srv.h = h; return srv })
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(srv.release) }) })

	opts := func(c *daemon.Config) { c.CheckpointURL, c.CheckpointInterval = bucket, 0 }
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n1 := daemontest.Start(t, opts)
	startNode2(ctx, t, n1, opts)

	conn := dial(t, "unix://"+n1.SocketPath())
	pad(ctx, t, statedv1.NewStateClient(conn), 10)
	done := make(chan error, 1)
	go func() {
		_, err := statedv1.NewCheckpointsClient(conn).Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
		done <- err
	}()
	select {
	case <-srv.held:
	case err := <-done:
		t.Fatalf("the checkpoint ended before any file reached the bucket: %v", err)
	case <-ctx.Done():
		t.Fatal("no checkpoint file PUT in 2 minutes")
	}
	// The held PUT is not released: it ends when the upload that sent it
	// is cancelled, as this node stops leading. (Released, the upload
	// could complete before the node noticed.)
	// (A node1 that stopped leading by itself, having missed its lease
	// under -race on a loaded machine, is what the test needs too.)
	if _, err := n1.Store().TransferLeadership(ctx); err != nil && !errors.Is(err, raftstore.ErrNotLeader) {
		t.Fatalf("node1 hands leadership over: %v", err)
	}
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		t.Fatal("the trigger did not return in 2 minutes after node1 stopped leading")
	}
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "abandoned: this node stopped leading") {
		t.Fatalf("trigger of a checkpoint whose leader stopped leading mid-upload: %v; want Unavailable, abandoned because this node stopped leading", err)
	}
	t.Logf("trigger: %v", err)
}

// TestACheckpointAbandonedByALeaderThatLeadsAgainAnswersUnavailable: the
// leader stops leading after its checkpoint's barrier, which cancels the
// upload, and leads again before the upload has failed (an election can
// hand leadership straight back). The trigger still fails UNAVAILABLE,
// abandoned because the node stopped leading: the checkpoint's context
// says why it was cancelled. Judged by whether the node leads when the
// failure is recorded, it failed CANCELED.
func TestACheckpointAbandonedByALeaderThatLeadsAgainAnswersUnavailable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bucket := fileBucket(t)
	nodes := daemontest.StartCluster(t, 2, func(c *daemon.Config) { c.CheckpointURL, c.CheckpointInterval = bucket, 0 })
	n1 := nodes[0]
	hooked := make(chan error, 1)
	var once sync.Once
	daemon.SetCheckpointUploadHook(n1, func(cpCtx context.Context, epoch uint64) {
		once.Do(func() {
			hooked <- func() error {
				if err := daemontest.MoveLeadership(ctx, t, nodes, nodes[1]); err != nil {
					return err
				}
				select {
				case <-cpCtx.Done(): // the coordinator saw it stop leading
				case <-ctx.Done():
					return errors.New("the checkpoint was not cancelled after node1 stopped leading")
				}
				return daemontest.MoveLeadership(ctx, t, nodes, n1)
			}()
		})
	})

	conn := dial(t, "unix://"+n1.SocketPath())
	pad(ctx, t, statedv1.NewStateClient(conn), 10)
	_, err := statedv1.NewCheckpointsClient(conn).Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
	select {
	case herr := <-hooked:
		if herr != nil {
			t.Fatalf("moving leadership away from node1 and back during its checkpoint: %v", herr)
		}
	default:
		t.Fatalf("the checkpoint ended before its upload: %v", err)
	}
	if !n1.Store().IsLeader() {
		t.Fatal("node1 does not lead again after the checkpoint")
	}
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "abandoned: this node stopped leading") {
		t.Fatalf("trigger of a checkpoint whose leader stopped leading and led again before the upload failed: %v; want Unavailable, abandoned because this node stopped leading", err)
	}
	t.Logf("trigger: %v", err)
}
