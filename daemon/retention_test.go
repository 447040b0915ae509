package daemon_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gocloud.dev/blob"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/uploader"
)

// refusingDeletes serves an S3-compatible bucket (gofakes3 over memory)
// that answers AccessDenied to every deletion of a checkpoint file
// (files/...) while refuse is set.
type refusingDeletes struct {
	h       http.Handler
	refuse  atomic.Bool
	refused atomic.Int64
}

func (s *refusingDeletes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	multi := r.Method == http.MethodPost && r.URL.Query().Has("delete")
	if s.refuse.Load() && (r.Method == http.MethodDelete && strings.Contains(r.URL.Path, "/files/") || multi) {
		s.refused.Add(1)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>deletes refused by the test</Message></Error>`))
		return
	}
	s.h.ServeHTTP(w, r)
}

// unreferenced lists the blobs under files/ that no manifest in the
// bucket references: what retention has still to collect.
func unreferenced(ctx context.Context, t *testing.T, b *blob.Bucket, up *uploader.Uploader) []string {
	t.Helper()
	ms, err := up.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	referenced := map[string]bool{}
	for _, m := range ms {
		for _, f := range m.Files {
			referenced[f.Blob()] = true
		}
	}
	var out []string
	it := b.List(&blob.ListOptions{Prefix: "files/"})
	for {
		o, err := it.Next(ctx)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			t.Fatal(err)
		}
		if !referenced[o.Key] {
			out = append(out, o.Key)
		}
	}
}

// TestAFailedRetentionRunsAgainAfterTheNextChangelogCheckpoint: after a
// changelog checkpoint only old manifests are deleted, since it makes no
// garbage; the blobs the checkpoints before left unreferenced are
// collected by the full retention after a table checkpoint. When that
// retention fails, the next checkpoint runs it again even if it is a
// changelog one, rather than leave the garbage until the next table
// checkpoint, up to the materialize interval later.
func TestAFailedRetentionRunsAgainAfterTheNextChangelogCheckpoint(t *testing.T) {
	srv := &refusingDeletes{}
	bucket := s3Bucket(t, func(h http.Handler) http.Handler { srv.h = h; return srv })

	d := daemontest.Start(t, func(c *daemon.Config) {
		c.CheckpointURL, c.CheckpointInterval, c.CheckpointRetain = bucket, 0, 1
		c.CheckpointMaterializeInterval = time.Hour
		c.CheckpointGCGrace = time.Nanosecond // every unreferenced blob is garbage at once
	})
	conn := dial(t, "unix://"+d.SocketPath())
	state, cps := statedv1.NewStateClient(conn), statedv1.NewCheckpointsClient(conn)
	ctx := testContext(t)
	b, up := openBlobBucket(t, bucket)
	trigger := kindTrigger(ctx, t, cps)
	lastError := func() string {
		t.Helper()
		st, err := cps.Status(ctx, &statedv1.CheckpointStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return st.GetLastError()
	}

	// As in TestChangelogCheckpointsUploadTheTablesAgainWhenTheyMust:
	// about 200 KB of tables, then a changelog checkpoint with a lighter
	// segment, then puts that would make the segments outweigh the
	// tables, which makes the next checkpoint a table one.
	pad(ctx, t, state, 200)
	trigger(false, "the first checkpoint")
	pad(ctx, t, state, 100)
	trigger(true, "the first checkpoint on its tables")

	// The table checkpoint leaves the segment, at least, unreferenced
	// (one checkpoint is retained), and its retention cannot delete it.
	srv.refuse.Store(true)
	pad(ctx, t, state, 150)
	trigger(false, "segments that would hold as many bytes as the tables")
	if srv.refused.Load() == 0 || !strings.HasPrefix(lastError(), "retention: ") {
		t.Fatalf("%d deletions refused, last error %q; want the retention to have failed", srv.refused.Load(), lastError())
	}
	garbage := unreferenced(ctx, t, b, up)
	if len(garbage) == 0 {
		t.Fatal("no unreferenced blob after the failed retention: the test does not test anything")
	}

	// The next checkpoint is a changelog one, and collects them.
	srv.refuse.Store(false)
	pad(ctx, t, state, 1)
	trigger(true, "right after a table checkpoint")
	if left := unreferenced(ctx, t, b, up); len(left) != 0 {
		t.Fatalf("after the changelog checkpoint %d of the %d unreferenced blobs are left (%v)", len(left), len(garbage), left)
	}
	// Retention keeps its one checkpoint after each.
	pad(ctx, t, state, 1)
	trigger(true, "the next changelog checkpoint")
	if ms, err := up.List(ctx); err != nil || len(ms) != 1 {
		t.Fatalf("the bucket holds %d checkpoints (%v), want the newest", len(ms), err)
	}
}
