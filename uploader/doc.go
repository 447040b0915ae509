// Package uploader moves checkpoints between a node's local Pebble
// checkpoint directories and a bucket. It goes through gocloud.dev/blob
// only, so every driver works (file://, mem://, s3:// and S3-compatible
// servers, gs://, azblob://), and it knows nothing of Raft, gRPC or
// Kafka: the caller hands it a directory and the checkpoint's metadata.
//
// # Bucket layout
//
//	files/<sha256>                        a checkpoint file, by content
//	                                      (encrypted: by its ciphertext's)
//	manifests/<epoch, 20 digits>.json     a completed checkpoint
//	savepoints/<name>.json                a pinned copy of a manifest
//	gc/<time>-<id>.json                   blobs a collection is deleting
//
// With OpenBucket's prefix= parameter all of it sits under that prefix.
// A manifest (JSON; FormatVersion 1, or FormatVersionChangelog 2 for a
// changelog checkpoint) holds the epoch, Raft index and term, cluster
// id, creation time, the consumer offsets of exactly that state, key and
// byte counts (or, since Stats.KeysNotCounted, why they were not
// counted: older releases read such a manifest as zero keys), each
// window namespace's watermark, pending emissions and
// open windows (Stats.Windows; absent in manifests written before window
// state, which still read), and every file with its path, size and
// SHA-256.
//
// # Changelog checkpoints
//
// A table checkpoint (Upload) is a directory of Pebble's files. A
// changelog checkpoint (UploadChangelog, changelog.go) is the files of an
// earlier table checkpoint, its base, carried into its manifest without
// a local copy, plus segment files under changelog/ holding the Raft
// log's commands since the base, listed in replay order in
// Manifest.Changelog; each one adds segments to the previous one's.
// Restoring one downloads all its files and replays the segments. Its
// manifest has format version 2, which a release from before changelog
// checkpoints refuses rather than restore the base's tables as if they
// were the checkpoint's state. Retention treats it as any manifest: the
// base's blobs stay while a changelog manifest lists them, whether or
// not the base's manifest does. An inherited blob missing from the
// bucket cannot be sent again: the upload fails (ErrCorrupt) and the
// caller takes a table checkpoint.
//
// A segment is written once and read once. Its writer hashes it as it
// writes it (a Hasher: SHA-256, CRC-32C, and the MD5 where the bucket
// checks MD5s) and gives UploadChangelog the result (Hashed), so that the
// upload does not read it to hash it; it sends it checked against the
// CRC-32C, abandoning the write if the bytes read are not those hashed.
// A segment held in memory goes to UploadChangelogSegments instead, with
// its Hashed and a source of its bytes (Segment): no directory, no file.
// A changelog upload lists the bucket only at the commit point (and
// after the manifest, as every upload does): its new files are segments
// no one sent before, and its inherited files were all in the bucket
// when the checkpoint it follows committed.
//
// # Encryption
//
// With Config.Keeper (OpenKeeper: base64key://) every file is sealed
// before upload (encrypt.go: a random data key per blob wrapped by the
// keeper, AES-256-GCM in 4 MiB chunks bound to their position) and stored
// under its ciphertext's SHA-256; the manifest says encryption (the
// keeper's scheme, never the key) and records per file the plaintext
// size and SHA-256 and the stored blob's. Verify checks the ciphertext,
// so integrity is checkable without the key; Download checks the
// ciphertext, then decrypts and checks the plaintext. No key is
// ErrKeyNeeded, a key that does not unwrap the data key ErrWrongKey, and
// a ciphertext mismatch ErrCorrupt, checked first. A sealed table is
// reused by later checkpoints of the same Uploader; plain and encrypted
// checkpoints share a bucket without sharing blobs.
//
// # Content addressing
//
// A file is stored once under its SHA-256, whichever checkpoints use it.
// Pebble's tables are immutable and never reuse a number, so an
// incremental checkpoint sends only the tables written since the last
// one, plus the small MANIFEST, OPTIONS and WAL files. Which files the
// bucket holds is learnt from one listing of files/, not a request per
// file. The checksums of tables are cached by (name, size, mtime, inode),
// which a hard-linked table keeps from one checkpoint to the next; the
// cache is seeded from the newest manifest, whose files carry those
// hints, so a restarted node does not read its whole state again.
//
// # The commit point
//
// An upload first lists manifests/ and savepoints/: an epoch at or below
// the newest checkpoint the bucket holds (a savepoint counting as its
// epoch; one that does not read is left out, and logged) is refused with
// ErrBucketAhead before anything is sent, and again at the commit point,
// for another writer's manifest that came meanwhile.
// Its manifest would sort below the bucket's, so Latest would not return
// it and Retain would delete it first, or it would replace a manifest of
// another cluster: its caller's epochs did not start above the bucket's.
//
// Upload hashes and sends the missing files with Config.Workers workers.
// Each blob is written with its MD5 as WriterOptions.ContentMD5, so that
// gocloud refuses bytes that differ from those hashed (a file changed
// since) and a store that checks it (GCS) refuses a damaged transfer;
// then its size, and its MD5 where the store reports one, are read back.
// In a file:// bucket the blobs, then the directories holding them, are
// fsynced. Then a second listing confirms that every file the checkpoint
// names is in the bucket, and the manifest is written, last, and fsynced:
// a checkpoint exists when its manifest does. A failed, cancelled or
// abandoned upload leaves only blobs no manifest references (an Upload
// that fails even removes a manifest whose write was reported failed but
// may have landed), and garbage collection removes them.
//
// # Retention and garbage collection
//
// Retain(K) keeps the newest K manifests and every savepoint, deletes the
// other manifests, then deletes the blobs under files/ that none of the
// remaining manifests and savepoints references. A blob modified within
// the grace period (Config.GCGrace, 10 minutes by default) is kept even
// when unreferenced: an upload in progress on another node (a leader
// that has just lost the leadership, say) may be about to reference it.
// An Upload and a Retain of the same Uploader never overlap. A manifest
// that cannot be read stops the collection before any blob is deleted.
//
// RetainManifests(K) is Retain's first step alone: it deletes all but the
// newest K manifests, and lists nothing else, reads no manifest and
// deletes no blob. That is all a changelog checkpoint calls for, and all
// the daemon runs after one: its manifest lists every file of the one it
// follows, so the manifests of its chain that it pushes out of retention
// reference only blobs that newer ones still reference. Blobs that are
// left unreferenced (an older chain's once its last manifest goes, a
// failed upload's) wait for the Retain that follows the next table
// checkpoint.
//
// Retention on one node and an Upload or Savepoint on another never lose
// a blob to each other. Before deleting, Retain announces the doomed
// blobs under gc/ and reads the manifests and savepoints again; after
// writing its manifest or pin, a writer waits for the announcements that
// name one of its blobs to go, then lists files/. Each side writes before
// it reads, so one of them sees the other: the collection spares the
// blobs, or the writer finds them gone. Upload then sends them again from
// the local checkpoint (Metrics.BlobsResent); Savepoint removes its pin
// and fails with ErrNotFound. A collection stops deleting after half of
// Config.GCLease (1 minute by default), and writers wait for an
// announcement at most that long, so a crash that leaves one behind
// costs a wait, not a blob; a later Retain removes it.
//
// # Savepoints
//
// Savepoint pins a checkpoint under a name; retention keeps it until
// DeleteSavepoint. It returns only once the pin is in place and every
// file of the checkpoint is in the bucket. Delete refuses a pinned
// checkpoint (ErrPinned), and the newest checkpoint unless forced
// (ErrNewest): its offsets are the ones consumers were told.
//
// # Downloads
//
// Download verifies the size and SHA-256 of every file as it writes it,
// writes each under a temporary name and renames it into place, and
// names the file, its blob and the checkpoint when one is missing or
// corrupt (ErrCorrupt). Files already present locally with the right
// checksum are not downloaded again. Verify checks a checkpoint in the
// bucket without writing anything.
//
// Transient bucket errors are retried with exponential backoff and
// jitter (Config.MaxAttempts, Config.Backoff); local file system errors
// are not, and a blob found missing or corrupt is read once more before
// it is reported.
package uploader
