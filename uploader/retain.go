package uploader

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// GCStats say what Retain or RetainManifests did; RetainManifests counts
// ManifestsDeleted only.
type GCStats struct {
	ManifestsDeleted int
	BlobsDeleted     int
	BytesDeleted     int64
	// BlobsKept counts unreferenced blobs spared because they are younger
	// than the grace period.
	BlobsKept int
	// BlobsSpared counts unreferenced blobs that a manifest or savepoint
	// written during the collection took back before they were deleted.
	BlobsSpared int
	// LeftoversDeleted counts malformed keys under manifests/ and
	// savepoints/, such as the temporary file of a write a crash
	// interrupted.
	LeftoversDeleted int
}

// Retain keeps the newest keep (at least 1) checkpoints and every
// savepoint: it deletes the other manifests, then every blob under files/
// that no remaining manifest or savepoint references and that was
// modified longer than GCGrace ago. That also clears what failed or
// abandoned uploads left behind. A manifest or savepoint that cannot be
// read, say of a newer format, stops the collection before any blob is
// deleted: what it references is unknown.
//
// Before deleting blobs Retain announces them under gc/ and reads the
// manifests and savepoints again, so that an Upload or Savepoint on any
// node never loses a blob it references (see announce.go); it stops
// deleting after half of Config.GCLease, leaving the rest to the next
// collection. Retain waits for an Upload of this Uploader in progress to
// finish; the grace period protects the blobs of uploads in progress on
// other nodes.
func (u *Uploader) Retain(ctx context.Context, keep int) (GCStats, error) {
	var st GCStats
	if keep < 1 {
		return st, invalidf("retain %d: keep at least one checkpoint", keep)
	}
	u.gcMu.Lock()
	defer u.gcMu.Unlock()

	mkeys, mstray, err := u.deleteOldManifests(ctx, keep, &st)
	if err != nil {
		return st, err
	}
	skeys, sstray, err := u.keys(ctx, savepointsPrefix)
	if err != nil {
		return st, err
	}
	// Blobs are listed before the manifests are read: a blob that appears
	// later is not considered, and a new blob whose manifest appears
	// later is young, kept by the grace period.
	blobs, err := u.list(ctx, filesPrefix)
	if err != nil {
		return st, err
	}
	ms, err := u.readAll(ctx, slices.Concat(mkeys, skeys))
	if err != nil {
		return st, fmt.Errorf("uploader: gc: no blob deleted: %w", err)
	}
	referenced := map[string]bool{}
	for _, m := range ms {
		for _, f := range m.Files {
			referenced[f.Blob()] = true
		}
	}
	cutoff := time.Now().Add(-u.cfg.GCGrace)
	var doomed []string
	for k, info := range blobs {
		switch {
		case referenced[k]:
		case info.modTime.After(cutoff):
			st.BlobsKept++
		default:
			doomed = append(doomed, k)
			st.BytesDeleted += info.size
		}
	}
	// Leftovers of interrupted manifest writes go by the same rule.
	maps.Copy(sstray, mstray)
	for k, info := range sstray {
		if !info.modTime.After(cutoff) {
			if err := u.delete(ctx, k); err != nil {
				return st, err
			}
			st.LeftoversDeleted++
		}
	}
	// Announcements a crash left behind go once surely dead.
	if err := u.clearAnnouncements(ctx); err != nil {
		return st, err
	}
	if len(doomed) == 0 {
		return st, context.Cause(ctx)
	}
	// Announce the deletions, then read the manifests and savepoints once
	// more: one written since the first reading takes its blobs back, and
	// a writer that did not see the announcement is seen here (announce.go).
	slices.Sort(doomed)
	start := time.Now()
	announced, err := u.announce(ctx, doomed)
	if err != nil {
		return st, err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := u.delete(ctx, announced); err != nil {
			u.logger.Warn("uploader: gc: could not remove its announcement; uploads wait for it until Config.GCLease passes", "key", announced, "error", err)
		}
	}()
	again, err := u.references(ctx)
	if err != nil {
		return st, fmt.Errorf("uploader: gc: no blob deleted: %w", err)
	}
	doomed = slices.DeleteFunc(doomed, func(k string) bool {
		if again[k] {
			st.BlobsSpared++
			st.BytesDeleted -= blobs[k].size
			return true
		}
		return false
	})
	// Writers wait for the announcement for GCLease from when they first
	// see it, which is after start: every deletion, its retries and the
	// request in flight included, ends by half the lease, so that none
	// lands once a writer has stopped waiting and checked its blobs.
	dctx, cancel := context.WithDeadlineCause(ctx, start.Add(u.cfg.GCLease/2), errLeaseOver)
	defer cancel()
	errs := make([]error, len(doomed))
	notRun := errors.New("not deleted") // parallel starts none once dctx has ended
	for i := range errs {
		errs[i] = notRun
	}
	_ = u.parallel(dctx, len(doomed), func(dctx context.Context, i int) error {
		errs[i] = u.delete(dctx, doomed[i])
		if errs[i] != nil && ctx.Err() == nil && errors.Is(context.Cause(dctx), errLeaseOver) {
			errs[i] = errLeaseOver
		}
		return nil // go on with the others
	})
	for i, err := range errs {
		if err == notRun {
			if errs[i] = context.Cause(ctx); errs[i] == nil {
				errs[i] = errLeaseOver
			}
		}
	}
	var failed int
	var first error
	for i, err := range errs {
		if err == nil {
			st.BlobsDeleted++
			continue
		}
		st.BytesDeleted -= blobs[doomed[i]].size
		if failed++; first == nil {
			first = err
		}
	}
	u.m.blobsDeleted.Add(int64(st.BlobsDeleted))
	u.m.bytesDeleted.Add(st.BytesDeleted)
	if first != nil {
		return st, fmt.Errorf("uploader: gc: %d of %d unreferenced blobs not deleted: %w", failed, len(doomed), first)
	}
	if err := context.Cause(ctx); err != nil {
		return st, fmt.Errorf("uploader: gc: %w", err)
	}
	return st, nil
}

// RetainManifests is the first step of Retain alone: it keeps the newest
// keep (at least 1) manifests and deletes the others, and does nothing
// else. It lists manifests/ only; it reads no manifest, lists neither
// savepoints/ nor files/, announces nothing and deletes no blob, nor the
// leftovers of interrupted manifest writes.
//
// That is enough after a changelog checkpoint, which makes no garbage:
// each changelog manifest lists every file of the one it follows, so the
// manifests of its chain that it pushes out of retention reference only
// blobs that a newer manifest still references. What it can leave
// unreferenced (the blobs of an older chain once the last manifest
// listing them goes, or those of a failed upload) stays in the bucket
// until the next Retain, which the caller runs after its next table
// checkpoint. Like Retain, it waits for an Upload of this Uploader in
// progress to finish.
func (u *Uploader) RetainManifests(ctx context.Context, keep int) (GCStats, error) {
	var st GCStats
	if keep < 1 {
		return st, invalidf("retain manifests %d: keep at least one checkpoint", keep)
	}
	u.gcMu.Lock()
	defer u.gcMu.Unlock()
	_, _, err := u.deleteOldManifests(ctx, keep, &st)
	return st, err
}

// deleteOldManifests deletes all but the newest keep manifests, counting
// them in st, and returns the keys of those kept, oldest first, and the
// malformed keys under manifests/ (see keys). The caller holds gcMu.
func (u *Uploader) deleteOldManifests(ctx context.Context, keep int, st *GCStats) (kept []string, stray map[string]blobInfo, err error) {
	mkeys, stray, err := u.keys(ctx, manifestsPrefix) // zero-padded epochs: oldest first
	if err != nil {
		return nil, nil, err
	}
	if len(mkeys) <= keep {
		return mkeys, stray, nil
	}
	for _, k := range mkeys[:len(mkeys)-keep] {
		if err := u.delete(ctx, k); err != nil {
			return nil, nil, err
		}
		st.ManifestsDeleted++
		u.m.manifestsDeleted.Add(1)
	}
	return mkeys[len(mkeys)-keep:], stray, nil
}

// clearAnnouncements deletes announcements older than both the grace
// period and twice the lease: a crash left them, their collection is over.
func (u *Uploader) clearAnnouncements(ctx context.Context) error {
	keys, err := u.list(ctx, gcPrefix)
	if err != nil {
		return err
	}
	cutoff := time.Now().Add(-max(u.cfg.GCGrace, 2*u.cfg.GCLease))
	for k, info := range keys {
		if info.modTime.Before(cutoff) {
			if err := u.delete(ctx, k); err != nil {
				return err
			}
		}
	}
	return nil
}
