package recovery_test

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/statedhq/stated/daemon/recovery"
	"github.com/statedhq/stated/internal/s3test"
	"github.com/statedhq/stated/uploader"
)

// TestFallbackDoesNotTakeAnOlderCheckpointForABucketOutage: --fallback
// skips a checkpoint that is not intact (a file missing or not what the
// manifest says), and nothing else. Here the newest checkpoint is intact,
// but S3 answers 503 SlowDown for one of its blobs while the restore runs
// (throttling, an outage; a 403 of a role would be the same). The restore
// fails naming the bucket's answer and installs nothing; it used to
// restore the older checkpoint, with less state and Kafka offsets further
// back, and report the newer one skipped. Once the bucket answers again,
// the same restore takes the newest checkpoint.
func TestFallbackDoesNotTakeAnOlderCheckpointForABucketOutage(t *testing.T) {
	ctx := testCtx(t)
	var blocked atomic.Value // the object key GETs of which fail
	blocked.Store("")
	bucket := s3test.Serve(t, func(fake http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if k := blocked.Load().(string); k != "" && r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/"+k) {
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`))
				return
			}
			fake.ServeHTTP(w, r)
		})
	})
	s3test.SetEnv(t)

	old := start(t, bucket)
	old.commit(ctx, t, 1, 1)
	e1 := old.checkpoint(ctx, t)
	for i := int64(2); i <= 2000; i++ {
		old.commit(ctx, t, 1, i)
	}
	if err := old.d.Store().Flush(); err != nil {
		t.Fatal(err)
	}
	e2 := old.checkpoint(ctx, t)
	old.d.Close()

	up := openUploader(t, bucket)
	m1, err := up.Get(ctx, e1)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := up.Get(ctx, e2)
	if err != nil {
		t.Fatal(err)
	}
	if probs, err := up.Verify(ctx, m2); err != nil || len(probs) != 0 {
		t.Fatalf("checkpoint %d is not intact before the test: %v, %v", e2, probs, err)
	}
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
		t.Fatalf("checkpoint %d has no table of its own", e2)
	}

	blocked.Store(victim.Blob())
	dir := filepath.Join(t.TempDir(), "restored")
	res, err := recovery.Restore(ctx, recovery.RestoreOptions{Uploader: up, DataDir: dir, Fallback: true})
	blocked.Store("")
	if err == nil {
		t.Fatalf("with the bucket answering 503 for one blob of the intact checkpoint %d, --fallback restored checkpoint %d and reported: skipped %q",
			e2, res.Manifest.Epoch, res.Skipped)
	}
	if !strings.Contains(err.Error(), "SlowDown") || strings.Contains(err.Error(), "no intact checkpoint") {
		t.Fatalf("restore during the outage: %v; want the bucket's SlowDown, with no fallback", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the failed restore left a state in the data dir: %v", err)
	}
	n, res := restoreAndStart(ctx, t, bucket, recovery.RestoreOptions{Fallback: true})
	if res.Manifest.Epoch != e2 || len(res.Skipped) != 0 {
		t.Fatalf("after the outage --fallback restored checkpoint %d (skipped %q), want %d", res.Manifest.Epoch, res.Skipped, e2)
	}
	if got := n.counter(ctx, t); got != 2000 {
		t.Fatalf("the restored counter is %d, want checkpoint %d's 2000", got, e2)
	}
}
