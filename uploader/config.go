package uploader

import (
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/secrets"
)

// Config configures an Uploader. A zero field takes its default, so
// Config{Bucket: b} is a working configuration.
type Config struct {
	// Bucket is where checkpoints go; see OpenBucket. The Uploader does
	// not close it.
	Bucket *blob.Bucket
	// Workers is how many files are hashed, uploaded, downloaded or
	// verified at once. Default 4.
	Workers int
	// MaxAttempts bounds the attempts of one blob operation: transient
	// errors are retried with exponential backoff and jitter. Default 5.
	MaxAttempts int
	// Backoff is the wait before the first retry; it doubles with each
	// attempt, up to 5 s. Default 100 ms.
	Backoff time.Duration
	// GCGrace protects unreferenced blobs modified more recently than
	// this from garbage collection: an upload in progress, possibly on a
	// node that has just lost the leadership, may be about to reference
	// them. Default 10 minutes; a negative grace means none (tests).
	GCGrace time.Duration
	// GCLease bounds a collection's deletions in time: Retain stops
	// deleting once half of it has passed since it announced what it
	// deletes, and an Upload or Savepoint waits at most this long, from
	// when it first sees an announcement naming one of its blobs, for that
	// collection to end. Default 1 minute.
	GCLease time.Duration
	// Keeper, when set, encrypts every file of a checkpoint Upload writes
	// and decrypts those of an encrypted checkpoint Download reads
	// (encrypt.go). Verify needs no Keeper. The Uploader does not close
	// it.
	Keeper *secrets.Keeper
	// KeeperScheme is the URL scheme Keeper was opened with (e.g.
	// "base64key"), recorded in the manifest; never the key.
	KeeperScheme string
	// TempDir holds files being sealed before they are sent; default
	// os.TempDir().
	TempDir string
	// HashCacheFile, when set, keeps the checksums of the local tables
	// (see Prehash) across restarts: loaded by the first Upload or
	// Prehash, written after each. A missing or unreadable file only
	// costs hashing again.
	HashCacheFile string
	// Logger receives retries at Warn and summaries at Debug; nil
	// discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults, for a bucket still to be set.
func DefaultConfig() Config {
	return Config{Workers: 4, MaxAttempts: 5, Backoff: 100 * time.Millisecond, GCGrace: 10 * time.Minute, GCLease: time.Minute}
}

// Validate reports a configuration New would refuse.
func (c Config) Validate() error {
	switch {
	case c.Bucket == nil:
		return invalidf("Config.Bucket is nil")
	case c.Workers < 0:
		return invalidf("Config.Workers %d is negative", c.Workers)
	case c.MaxAttempts < 0:
		return invalidf("Config.MaxAttempts %d is negative", c.MaxAttempts)
	case c.Backoff < 0:
		return invalidf("Config.Backoff %s is negative", c.Backoff)
	case c.GCLease < 0:
		return invalidf("Config.GCLease %s is negative", c.GCLease)
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Workers == 0 {
		c.Workers = d.Workers
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = d.MaxAttempts
	}
	if c.Backoff == 0 {
		c.Backoff = d.Backoff
	}
	switch {
	case c.GCGrace == 0:
		c.GCGrace = d.GCGrace
	case c.GCGrace < 0:
		c.GCGrace = 0
	}
	if c.GCLease == 0 {
		c.GCLease = d.GCLease
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Uploader moves checkpoints to and from one bucket. Its methods are safe
// for concurrent use; an Upload and a Retain of the same Uploader never
// overlap (Retain waits), so that its garbage collection cannot take a
// blob this process is about to reference.
type Uploader struct {
	cfg    Config
	b      *blob.Bucket
	logger *slog.Logger

	// gcMu is held shared by Upload and exclusively by Retain and
	// RetainManifests.
	gcMu sync.RWMutex

	cacheMu sync.Mutex
	seeded  bool               // the cache was seeded from the bucket
	hashes  map[hashKey]digest // checksums of local immutable files
	// wantMD5 is set unless the bucket is a file:// one: other stores
	// report blobs' MD5s in listings and check ContentMD5, so files are
	// hashed with MD5 as well as SHA-256. fileblob (opened by OpenBucket
	// without sidecars) records none, and MD5 costs more CPU than the
	// SHA-256 that already names and checks every blob.
	wantMD5 bool
	// sealedAs maps a plaintext SHA-256 to the blob this Uploader sealed
	// it into, so that an encrypted table is sent once.
	sealedAs map[string]sealed

	// durable holds the keys of the blobs of a file:// bucket this
	// Uploader fsynced (written, or reused and synced then): see
	// syncReused.
	durableMu sync.Mutex
	durable   map[string]bool

	// spMu guards spEpochs: the epoch of each savepoint checkAhead read,
	// by key, with the listing it was read under, so that an upload reads
	// only savepoints it has not seen as listed now.
	spMu     sync.Mutex
	spEpochs map[string]seenSavepoint

	m metrics
}

// New returns an Uploader over cfg.Bucket.
func New(cfg Config) (*Uploader, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	var fi os.FileInfo // what a file:// bucket's As gives: its directory's
	return &Uploader{cfg: cfg, b: cfg.Bucket, logger: cfg.Logger, hashes: map[hashKey]digest{}, sealedAs: map[string]sealed{}, durable: map[string]bool{}, spEpochs: map[string]seenSavepoint{},
		wantMD5: !cfg.Bucket.As(&fi)}, nil
}

// Metrics are cumulative counters of an Uploader since New.
type Metrics struct {
	Uploads, UploadsFailed     int64 // Upload calls that wrote a manifest, and that failed
	BlobsUploaded              int64 // blobs written under files/
	BytesUploaded              int64
	BlobsDownloaded            int64 // files written by Download
	BytesDownloaded            int64
	FilesHashed, BytesHashed   int64 // local files read to compute their checksums (Upload and Prehash)
	HashCacheHits              int64 // local files whose checksums came from the cache
	Retries                    int64 // blob operations tried again after a transient error
	BlobsDeleted, BytesDeleted int64 // by Retain
	ManifestsDeleted           int64 // by Retain, RetainManifests and Delete
	// BlobsResent counts blobs an Upload sent again after its manifest
	// was written, because another node's collection had deleted them.
	BlobsResent int64
}

type metrics struct {
	uploads, uploadsFailed, blobsUploaded, bytesUploaded  atomic.Int64
	blobsDownloaded, bytesDownloaded                      atomic.Int64
	filesHashed, bytesHashed, hashCacheHits               atomic.Int64
	retries, blobsDeleted, bytesDeleted, manifestsDeleted atomic.Int64
	blobsResent                                           atomic.Int64
}

// Metrics returns the Uploader's counters.
func (u *Uploader) Metrics() Metrics {
	m := &u.m
	return Metrics{
		Uploads: m.uploads.Load(), UploadsFailed: m.uploadsFailed.Load(),
		BlobsUploaded: m.blobsUploaded.Load(), BytesUploaded: m.bytesUploaded.Load(),
		BlobsDownloaded: m.blobsDownloaded.Load(), BytesDownloaded: m.bytesDownloaded.Load(),
		FilesHashed: m.filesHashed.Load(), BytesHashed: m.bytesHashed.Load(), HashCacheHits: m.hashCacheHits.Load(),
		Retries: m.retries.Load(), BlobsDeleted: m.blobsDeleted.Load(), BytesDeleted: m.bytesDeleted.Load(),
		ManifestsDeleted: m.manifestsDeleted.Load(), BlobsResent: m.blobsResent.Load(),
	}
}
