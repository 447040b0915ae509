// Package s3test serves an S3-compatible bucket to tests: gofakes3 over
// memory, on 127.0.0.1, reached through gocloud.dev/blob's s3 driver as
// stated reaches S3.
package s3test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// Bucket is the name of the one bucket Serve creates.
const Bucket = "ckpt"

// Serve starts a server holding the empty bucket Bucket, its handler
// wrapped by wrap when wrap is not nil (to hold or fail requests), closes
// it when t ends, and returns the bucket's URL. The AWS SDK also needs
// credentials: SetEnv, or Env for a whole process.
func Serve(t testing.TB, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket(Bucket); err != nil {
		t.Fatal(err)
	}
	var h http.Handler = gofakes3.New(backend).Server()
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h) // 127.0.0.1
	t.Cleanup(srv.Close)
	return "s3://" + Bucket + "?endpoint=" + url.QueryEscape(srv.URL) + "&use_path_style=true&region=us-east-1&disable_https=true"
}

// Env is the environment the AWS SDK reads its credentials and region
// from, with the EC2 metadata lookup off. Tests that run in parallel set
// it once for their process (t.Setenv refuses parallel tests).
var Env = map[string]string{
	"AWS_ACCESS_KEY_ID":         "stated-test",
	"AWS_SECRET_ACCESS_KEY":     "stated-test-secret",
	"AWS_REGION":                "us-east-1",
	"AWS_EC2_METADATA_DISABLED": "true",
}

// SetEnv sets Env for the rest of t.
func SetEnv(t testing.TB) {
	for k, v := range Env {
		t.Setenv(k, v)
	}
}
