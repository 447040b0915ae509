package uploader

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/azureblob" // azblob://
	_ "gocloud.dev/blob/fileblob"  // file://
	_ "gocloud.dev/blob/gcsblob"   // gs://
	_ "gocloud.dev/blob/memblob"   // mem://
	_ "gocloud.dev/blob/s3blob"    // s3://

	"github.com/statedhq/stated/internal/redact"
)

// Schemes are the bucket URL schemes OpenBucket supports.
var Schemes = []string{"file", "mem", "s3", "gs", "azblob"}

// OpenBucket opens a bucket URL through gocloud.dev/blob:
//
//   - file:///abs/path (or file://./rel/path): a directory, created with
//     mode 0700 if missing. Each blob is written to a temporary file
//     beside its final name and renamed into place, so the directory may
//     be on any file system (gocloud's default, a temporary file under
//     $TMPDIR, fails across mounts), and Upload fsyncs what it writes
//     there. No ".attrs" sidecar files are written (metadata=skip): a
//     sidecar torn by a crash would make its blob unreadable, and the
//     manifests' SHA-256 checksums make them unnecessary.
//   - mem://: an in-process bucket, for tests; each call opens a new one.
//   - s3://bucket: AWS S3, or an S3-compatible server with
//     endpoint=http://host:port, use_path_style=true, region=... and
//     disable_https=true. Credentials come from the usual AWS_*
//     environment variables or files.
//   - gs://bucket: Google Cloud Storage, with application default
//     credentials.
//   - azblob://container: Azure Blob Storage, with AZURE_STORAGE_ACCOUNT
//     and AZURE_STORAGE_KEY (or a SAS token, or Azure AD); for Azurite,
//     protocol=http, domain=host:port and localemu=true.
//
// Every scheme takes prefix=some/path/: stated then keeps everything
// under that prefix, so that several deployments can share one bucket (a
// missing trailing slash is added). In a file:// bucket it must be a
// clean relative path: no leading slash, no empty, "." or ".." part. A path after an s3, gs or azblob
// bucket name is refused rather than ignored: use prefix= instead.
//
// Other query parameters go to the driver, which refuses those it does
// not know. An unknown scheme, or a URL that cannot be opened, is an
// error naming the URL. The caller closes the bucket.
func OpenBucket(ctx context.Context, rawURL string) (*blob.Bucket, error) {
	// Messages name the URL with its credentials masked.
	shown := redact.URL(rawURL)
	u, err := url.Parse(rawURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL it quotes
		}
		return nil, fmt.Errorf("uploader: bucket URL %q: %w", shown, err)
	}
	supported := strings.Join(Schemes, "://, ") + "://"
	switch {
	case u.Scheme == "":
		return nil, fmt.Errorf("uploader: bucket URL %q has no scheme; supported: %s (e.g. file:///var/lib/stated/checkpoints)", shown, supported)
	case !slices.Contains(Schemes, u.Scheme):
		return nil, fmt.Errorf("uploader: bucket URL %q: unknown scheme %q; supported: %s", shown, u.Scheme, supported)
	}
	q := u.Query()
	if p := q.Get("prefix"); p != "" && !strings.HasSuffix(p, "/") {
		q.Set("prefix", p+"/")
	}
	switch u.Scheme {
	case "file":
		if u.Path == "" || u.Opaque != "" {
			return nil, fmt.Errorf("uploader: bucket URL %q: file:// needs a path, e.g. file:///var/lib/stated/checkpoints", shown)
		}
		// A prefix that is not a clean relative path leaves the directory
		// (fileblob refuses it, but only at the first listing) or names
		// keys its listings never find back: every checkpoint would fail.
		if p := q.Get("prefix"); p != "" && !validPath(strings.TrimSuffix(p, "/")) {
			return nil, fmt.Errorf("uploader: bucket URL %q: prefix=%s: want a clean relative path inside the directory (no leading /, no //, . or .. parts), e.g. prefix=team-a/checkpoints/", shown, p)
		}
		for k, v := range map[string]string{"create_dir": "true", "no_tmp_dir": "true", "dir_file_mode": "0700", "metadata": "skip"} {
			if !q.Has(k) {
				q.Set(k, v)
			}
		}
	case "s3", "gs", "azblob":
		if u.Host == "" {
			return nil, fmt.Errorf("uploader: bucket URL %q names no bucket, e.g. %s://my-bucket", shown, u.Scheme)
		}
		if u.Path != "" && u.Path != "/" {
			return nil, fmt.Errorf("uploader: bucket URL %q: a path after the bucket name is not supported; use ?prefix=%s/", shown, strings.Trim(u.Path, "/"))
		}
	}
	u.RawQuery = q.Encode()
	b, err := blob.OpenBucket(ctx, u.String())
	if err != nil {
		// gocloud's message quotes the URL it was given.
		return nil, fmt.Errorf("uploader: open bucket %q: %w", shown, redact.Error(err, u.String(), rawURL))
	}
	return b, nil
}
