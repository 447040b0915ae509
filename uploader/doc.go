// Package uploader moves checkpoints between a node's local Pebble
// checkpoint directories and a bucket, through gocloud.dev/blob only, so
// that every driver works: file://, mem://, s3:// (and S3-compatible
// servers), gs://, azblob://. It knows nothing of Raft, gRPC or Kafka.
//
// # Bucket layout
//
//	files/<sha256>                 a checkpoint file, content-addressed
//	manifests/<epoch, 20 digits>.json   a completed checkpoint
//	savepoints/<name>.json         a pinned copy of a manifest
//
// A file is stored once under its SHA-256, whichever checkpoints use it:
// Pebble's tables are immutable, so an incremental checkpoint sends only
// the tables written since the last one, plus the small MANIFEST, OPTIONS
// and WAL files.
//
// # The commit point
//
// Upload sends the missing files, checks that every file the checkpoint
// lists is in the bucket with its size, and writes the manifest last. A
// checkpoint exists when its manifest does; a failed or abandoned upload
// leaves blobs no manifest references, which garbage collection removes.
//
// # Retention and garbage collection
//
// Retain keeps the newest K manifests and every savepoint, then deletes
// the blobs under files/ that none of them references. A blob modified
// within the grace period (Config.GCGrace, 10 minutes by default) is
// kept even when unreferenced, because an upload in progress, possibly
// on a node that has just lost the leadership, may still be about to
// reference it.
//
// # Downloads
//
// Download verifies the size and SHA-256 of every file as it writes it
// and names the file, its blob and the checkpoint when one is missing or
// corrupt. Files already present locally with the right checksum are not
// downloaded again.
package uploader
