package uploader

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"gocloud.dev/gcerrors"
)

// Garbage collection and the writers of manifests and savepoints, on any
// node, never lose a blob to each other. Both sides write first and read
// second, so that at least one of them sees the other:
//
//   - Retain announces the blobs it is about to delete under gc/ (written
//     durably), then reads every manifest and savepoint again and spares
//     the blobs they reference, then deletes the rest, then removes the
//     announcement. It stops deleting once Config.GCLease/2 has passed
//     since it started the announcement, so an announcement older than
//     the lease is dead even when a crash left it behind.
//   - Upload and Savepoint write the manifest or the pin, then look for
//     announcements that name any of its blobs and wait until they are
//     gone (or older than the lease, counted from when they were first
//     seen), then list files/ and check that every blob is there. Upload
//     sends a missing blob again from the local checkpoint; Savepoint,
//     which has no local copy, removes its pin and fails.
//
// A collection that read the manifests and savepoints before the new one
// was written has announced its deletions before it read them, hence
// before the writer looked for announcements: the writer waits for it
// and sees what it deleted. One that read them after sees the new one and
// spares its blobs. This needs a store that lists and reads what was
// written before (S3, GCS, Azure and file:// all do today).

const gcPrefix = "gc/"

// announcement is the body of a gc/ key.
type announcement struct {
	FormatVersion int      `json:"format_version"`
	Blobs         []string `json:"blobs"`
}

// announce writes, durably, that the blobs doomed are about to be deleted,
// and returns its key.
func (u *Uploader) announce(ctx context.Context, doomed []string) (string, error) {
	var id [8]byte
	_, _ = rand.Read(id[:])
	key := fmt.Sprintf("%s%020d-%s.json", gcPrefix, time.Now().UnixNano(), hex.EncodeToString(id[:]))
	b, err := json.Marshal(announcement{FormatVersion: FormatVersion, Blobs: doomed})
	if err != nil {
		return "", err
	}
	if err := u.writeDurably(ctx, key, b); err != nil {
		return "", fmt.Errorf("uploader: gc: announce the deletion of %d blobs: %w", len(doomed), err)
	}
	return key, nil
}

// announced reads the announcement under key; nil when it is gone. One
// that does not parse names every blob: what it announces is unknown.
func (u *Uploader) announced(ctx context.Context, key string) (map[string]bool, error) {
	var b []byte
	err := u.retry(ctx, "read "+key, func() error {
		var err error
		b, err = u.b.ReadAll(ctx, key)
		return err
	})
	if gcerrors.Code(err) == gcerrors.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("uploader: read %s: %w", key, err)
	}
	var a announcement
	if json.Unmarshal(b, &a) != nil || a.FormatVersion != FormatVersion {
		return map[string]bool{"*": true}, nil
	}
	out := make(map[string]bool, len(a.Blobs))
	for _, k := range a.Blobs {
		out[k] = true
	}
	return out, nil
}

// announcementKeys lists the gc/ announcements, leaving out what an
// interrupted write leaves behind.
func (u *Uploader) announcementKeys(ctx context.Context) (map[string]blobInfo, error) {
	objs, err := u.list(ctx, gcPrefix)
	if err != nil {
		return nil, err
	}
	for k := range objs {
		if !strings.HasSuffix(k, ".json") {
			delete(objs, k)
		}
	}
	return objs, nil
}

// settle runs after the manifest or savepoint m was written: it waits
// until no collection that may not have seen m can still delete one of
// m's blobs, then returns the files whose blob is not in the bucket.
func (u *Uploader) settle(ctx context.Context, m *Manifest) ([]File, error) {
	need := make(map[string]bool, len(m.Files))
	for _, f := range m.Files {
		need[f.Blob()] = true
	}
	seen := map[string]time.Time{}          // announcement key -> first seen
	content := map[string]map[string]bool{} // announcements are never rewritten
	poll := min(max(u.cfg.GCLease/50, 10*time.Millisecond), time.Second)
	for {
		keys, err := u.announcementKeys(ctx)
		if err != nil {
			return nil, err
		}
		var waitFor string
		for k := range keys {
			first, ok := seen[k]
			if !ok {
				first = time.Now()
				seen[k] = first
			}
			if time.Since(first) > u.cfg.GCLease {
				continue // its collection has stopped deleting
			}
			blobs, ok := content[k]
			if !ok {
				if blobs, err = u.announced(ctx, k); err != nil {
					return nil, err
				}
				content[k] = blobs
			}
			if overlaps(blobs, need) {
				waitFor = k
				break
			}
		}
		if waitFor == "" {
			break
		}
		u.logger.Debug("uploader: waiting for a collection that may delete blobs of this checkpoint", "epoch", m.Epoch, "announcement", waitFor)
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("waiting for the collection announced in %s: %w", waitFor, context.Cause(ctx))
		case <-t.C:
		}
	}
	held, err := u.list(ctx, filesPrefix)
	if err != nil {
		return nil, err
	}
	var missing []File
	for _, f := range m.Files {
		if info, ok := held[f.Blob()]; !ok || info.size != f.StoredSize() {
			missing = append(missing, f)
		}
	}
	return missing, nil
}

func overlaps(announced, need map[string]bool) bool {
	if announced["*"] {
		return true
	}
	for k := range announced {
		if need[k] {
			return true
		}
	}
	return false
}

// references reads every manifest and savepoint in the bucket now and
// returns the blobs they reference.
func (u *Uploader) references(ctx context.Context) (map[string]bool, error) {
	mkeys, _, err := u.keys(ctx, manifestsPrefix)
	if err != nil {
		return nil, err
	}
	skeys, _, err := u.keys(ctx, savepointsPrefix)
	if err != nil {
		return nil, err
	}
	ms, err := u.readAll(ctx, slices.Concat(mkeys, skeys))
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, m := range ms {
		for _, f := range m.Files {
			out[f.Blob()] = true
		}
	}
	return out, nil
}

// errLeaseOver stops a collection that took longer than half its lease:
// writers stop waiting for it after the lease.
var errLeaseOver = errors.New("uploader: gc: stopped deleting after half of Config.GCLease; the rest goes at the next collection")
