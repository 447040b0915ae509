package daemon_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
)

// s3Bucket serves an S3-compatible bucket "ckpt" (gofakes3 over memory)
// on 127.0.0.1, through wrap when it is not nil, sets the credentials the
// daemon's S3 client reads, and returns the bucket's URL.
func s3Bucket(t *testing.T, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket("ckpt"); err != nil {
		t.Fatal(err)
	}
	var h http.Handler = gofakes3.New(backend).Server()
	if wrap != nil {
		h = wrap(h)
	}
	hs := httptest.NewServer(h) // 127.0.0.1
	t.Cleanup(hs.Close)
	t.Setenv("AWS_ACCESS_KEY_ID", "stated-test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "stated-test-secret")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	return "s3://ckpt?endpoint=" + url.QueryEscape(hs.URL) + "&use_path_style=true&region=us-east-1&disable_https=true"
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
