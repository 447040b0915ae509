package fsm

import "github.com/cockroachdb/pebble/v2"

// deleteNoRecycle is the state store's Pebble Cleaner: it deletes
// obsolete files, as Pebble's default DeleteCleaner does, and turns off
// WAL recycling.
//
// Pebble recycles a WAL file by reusing an obsolete one for the next log
// and overwriting it from the start, so the file keeps its old size and
// its tail holds a dead log's records. A local checkpoint copies the WAL
// whole, and the upload sent that dead tail (up to a memtable's size)
// unless TrimCheckpointWAL cut it. Pebble has no option for it: it
// recycles unless the Cleaner needs the contents of the files it cleans,
// which a Cleaner says by implementing an unexported marker method that
// only ArchiveCleaner has. The marker comes from the ArchiveCleaner
// embedded one level deeper than DeleteCleaner, so that DeleteCleaner's
// Clean (and String) win: nothing is archived. (Clean cannot be written
// here: its file type parameter is in one of Pebble's internal packages.)
//
// Pebble decides at every deletion of obsolete files, and never recycles
// a log written before it opened, so the setting holds for a data dir
// whose WALs were recycled under an older stated from its next open: a
// WAL file still live then is deleted, not reused, once it is flushed.
type deleteNoRecycle struct {
	pebble.DeleteCleaner
	needsContents
}

// needsContents lends deleteNoRecycle ArchiveCleaner's marker method.
type needsContents struct{ pebble.ArchiveCleaner }
