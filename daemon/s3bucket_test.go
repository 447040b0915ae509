package daemon_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/internal/s3test"
)

// s3Bucket serves an S3-compatible bucket "ckpt" (gofakes3 over memory)
// on 127.0.0.1, through wrap when it is not nil, sets the credentials the
// daemon's S3 client reads, and returns the bucket's URL.
func s3Bucket(t *testing.T, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	bucket := s3test.Serve(t, wrap)
	s3test.SetEnv(t)
	return bucket
}

// startNode2 starts node2 with opts, joining first, and closes it at the
// test's end.
func startNode2(ctx context.Context, t *testing.T, first *daemon.Daemon, opts func(*daemon.Config)) *daemon.Daemon {
	t.Helper()
	cfg := daemontest.Config(t, "node2")
	opts(&cfg)
	cfg.Join = []string{first.TCPAddr()}
	n2, err := daemon.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n2.Close() })
	return n2
}
