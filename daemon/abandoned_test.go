package daemon_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
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
	backend := s3mem.New()
	if err := backend.CreateBucket("ckpt"); err != nil {
		t.Fatal(err)
	}
	srv := &heldFilePuts{h: gofakes3.New(backend).Server(), held: make(chan struct{}), release: make(chan struct{})}
	hs := httptest.NewServer(srv) // 127.0.0.1
	t.Cleanup(hs.Close)
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(srv.release) }) }
	t.Cleanup(release)
	t.Setenv("AWS_ACCESS_KEY_ID", "stated-test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "stated-test-secret")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	bucket := "s3://ckpt?endpoint=" + url.QueryEscape(hs.URL) + "&use_path_style=true&region=us-east-1&disable_https=true"

	opts := func(c *daemon.Config) { c.CheckpointURL, c.CheckpointInterval = bucket, 0 }
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n1 := daemontest.Start(t, opts)
	cfg := daemontest.Config(t, "node2")
	opts(&cfg)
	cfg.Join = []string{n1.TCPAddr()}
	n2, err := daemon.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n2.Close() })

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
	if _, err := n1.Store().TransferLeadership(ctx); err != nil {
		t.Fatalf("node1 hands leadership over: %v", err)
	}
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
