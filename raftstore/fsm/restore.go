package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/statedhq/stated/raftstore/command"
)

// keyRestoredFrom records the checkpoint a cluster's state was restored
// from: epoch, Raft index and the old cluster's id.
var keyRestoredFrom = []byte{prefixSystem, 'r'}

// keyRestoreTiming records when the restore that made this state finished
// preparing it and how long it took: two big-endian int64 nanoseconds. It
// is absent for states restored before it was recorded.
var keyRestoreTiming = []byte{prefixSystem, 's'}

// prefixRestoredMember keeps, in a restored state, the member records of
// the checkpoint it came from (the same keys and values under prefixMember
// there): where its nodes served. A restored node started without --join
// asks those addresses whether the cluster it was restored from still runs
// there (the daemon's checkpointMembers). Absent for states restored
// before it was kept.
var prefixRestoredMember = []byte{prefixSystem, 'p'}

// RestoredFrom is the checkpoint a state was restored from.
type RestoredFrom struct {
	Epoch     uint64
	RaftIndex uint64
	ClusterID string
	// At is when the restore prepared the state, and Took how long it
	// ran until then (selecting, downloading and verifying the
	// checkpoint). Both are zero when the restore did not record them.
	At   time.Time
	Took time.Duration
}

// PrepareRestore turns the Pebble state in dir, materialised from a
// checkpoint of another cluster (or of this one, in the past), into the
// initial state of a new cluster: the applied index goes back to zero (the
// new Raft log starts at index 1), the old cluster's id and members are
// dropped (the new cluster's first leader records its own), the
// checkpoint it came from is recorded, and epochs continue above
// nextEpochAfter so that the new cluster's checkpoints never reuse an
// epoch the bucket holds. Client sessions and retry records are dropped;
// each session leaves the record of an ended session
// (endRestoredSessions), so that a late open of it is refused.
// State and offsets are kept, and so is the lineage:
// the new cluster belongs to the line of the cluster the checkpoint came
// from (Lineage). Partition claims are kept, released (releaseClaims).
// Window sources are not idle until the new cluster has seen them silent
// for their idle timeout (SourceRestored).
func PrepareRestore(dir string, from RestoredFrom, nextEpochAfter uint64) error {
	opts := PebbleOptions()
	opts.Logger = pebbleLogger{slog.New(slog.DiscardHandler)}
	opts.ErrorIfNotExists = true
	// No compactions here: they would rewrite the checkpoint's tables, and
	// a later restore into this data dir could no longer keep them.
	opts.DisableAutomaticCompactions = true
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return fmt.Errorf("fsm: open restored state %s: %w", dir, err)
	}
	// The staged state must be the checkpoint's: its applied index is
	// the one the manifest names (a table checkpoint's own, a changelog
	// checkpoint's once replayed). Anything else is files from elsewhere
	// (changed under the download), which no later check would notice.
	applied, err := readAppliedIndex(db)
	if err != nil {
		db.Close()
		return fmt.Errorf("fsm: read the restored state's applied index: %w", err)
	}
	if applied != from.RaftIndex {
		db.Close()
		return fmt.Errorf("fsm: the restored state in %s is at Raft index %d, but checkpoint %d was taken at %d: its files are not the checkpoint's; nothing was installed",
			dir, applied, from.Epoch, from.RaftIndex)
	}
	// The new cluster continues the lineage of the state it restores,
	// read before its cluster id is dropped: a live client of that
	// cluster keeps working against this one (Lineage).
	lineage, err := lineageOf(db)
	if err != nil {
		db.Close()
		return fmt.Errorf("fsm: read the restored state's lineage: %w", err)
	}
	if err := prepareRestored(db, lineage, from, nextEpochAfter); err != nil {
		db.Close()
		return fmt.Errorf("fsm: prepare restored state: %w", err)
	}
	// Flush, so that the rewrite lives in tables, not only in the WAL.
	if err := db.Flush(); err != nil {
		db.Close()
		return fmt.Errorf("fsm: prepare restored state: %w", err)
	}
	return db.Close()
}

// prepareRestored writes, in one synced batch, what PrepareRestore changes
// in the restored state db.
func prepareRestored(db *pebble.DB, lineage string, from RestoredFrom, nextEpochAfter uint64) error {
	b := db.NewBatch()
	defer b.Close()
	if lineage != "" {
		if err := b.Set(keyLineage, []byte(lineage), nil); err != nil {
			return err
		}
	}
	if err := b.Delete(keyAppliedIndex, nil); err != nil {
		return err
	}
	if err := b.Delete(keyClusterID, nil); err != nil {
		return err
	}
	if err := keepRestoredMembers(db, b); err != nil {
		return err
	}
	if err := b.DeleteRange(prefixMember, prefixEnd(prefixMember), nil); err != nil {
		return err
	}
	// Client sessions and retry records name indexes of the old log,
	// which mean nothing in the new one: clients open new sessions (a
	// commit sent in an old session is refused as not open). The
	// sessions current at the checkpoint end here, each leaving an ended
	// record: a late attempt of one's open, applied after the restore,
	// would open it again with empty lanes, and a retried commit of it
	// that is in the checkpoint would apply a second time.
	if err := endRestoredSessions(db, b, from); err != nil {
		return err
	}
	for _, p := range []byte{prefixDedup, prefixSession, prefixLane} {
		if err := b.DeleteRange([]byte{p}, []byte{p + 1}, nil); err != nil {
			return err
		}
	}
	if err := b.Delete(keyCheckpointDone, nil); err != nil {
		return err
	}
	if err := b.Set(keyCheckpointEpoch, binary.BigEndian.AppendUint64(nil, max(nextEpochAfter, from.Epoch)), nil); err != nil {
		return err
	}
	if err := b.Set(keyRestoredFrom, restoredFromValue(from), nil); err != nil {
		return err
	}
	var err error
	if from.Took > 0 {
		t := binary.BigEndian.AppendUint64(nil, uint64(from.At.UnixNano()))
		t = binary.BigEndian.AppendUint64(t, uint64(from.Took))
		err = b.Set(keyRestoreTiming, t, nil)
	} else {
		err = b.Delete(keyRestoreTiming, nil)
	}
	if err != nil {
		return err
	}
	if err := restoreSourcesActive(db, b); err != nil {
		return err
	}
	if err := releaseClaims(db, b); err != nil {
		return err
	}
	return b.Commit(pebble.Sync)
}

// endRestoredSessions writes, in b, the ended record (and its expiry
// index key) of every session of db, as endSession does when a session
// ends: ended at the restore's time (from.At), or, for a restore that did
// not record it, at the session's last activity, and kept for
// endedRetention of its idle timeout from then. Only from and db are
// read, no clock: the state is the same whatever prepares it from them.
func endRestoredSessions(db *pebble.DB, b *pebble.Batch, from RestoredFrom) error {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixSession}, UpperBound: []byte{prefixSession + 1}})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		if err := endRestoredSession(db, b, from, it.Key(), it.Value()); err != nil {
			it.Close()
			return fmt.Errorf("%w (key %x)", err, it.Key())
		}
	}
	return it.Close()
}

// endRestoredSession writes, in b, the ended record of the session whose
// record in db is k, v.
func endRestoredSession(db *pebble.DB, b *pebble.Batch, from RestoredFrom, k, v []byte) error {
	s, err := decodeSession(v)
	if err != nil {
		return err
	}
	client, rest, err := readComponent(k[1:])
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: session key of %d bytes", ErrCorrupt, len(k))
	}
	at := s.lastActive
	if !from.At.IsZero() {
		// Not before the session's last activity, whatever the clock
		// of the restore.
		at = max(from.At.UnixNano(), s.lastActive)
	}
	rec, exp := endedRecord(at, s.idleTimeout)
	ek := endedSessionKey(string(client), s.id)
	// Not reached (a session is not opened while its ended record
	// lasts), but the index must not keep a stale key.
	old, closer, err := db.Get(ek)
	switch {
	case err == nil:
		e, derr := decodeEnded(old)
		closer.Close()
		if derr != nil {
			return derr
		}
		if e.expires != exp {
			if err := b.Delete(endedExpiryKey(e.expires, string(client), s.id), nil); err != nil {
				return err
			}
		}
	case !errors.Is(err, pebble.ErrNotFound):
		return err
	}
	if err := b.Set(ek, rec, nil); err != nil {
		return err
	}
	return b.Set(endedExpiryKey(exp, string(client), s.id), nil, nil)
}

// keepRestoredMembers copies, in b, the member records of db to
// prefixRestoredMember, in place of those a restore before this one kept.
func keepRestoredMembers(db *pebble.DB, b *pebble.Batch) error {
	if err := b.DeleteRange(prefixRestoredMember, prefixEnd(prefixRestoredMember), nil); err != nil {
		return err
	}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: prefixMember, UpperBound: prefixEnd(prefixMember)})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		k := append(slices.Clone(prefixRestoredMember), it.Key()[len(prefixMember):]...)
		if err := b.Set(k, it.Value(), nil); err != nil {
			it.Close()
			return err
		}
	}
	return it.Close()
}

// releaseClaims marks every partition claim in db released, in b. A
// claimant that stayed up through the restore has processed records past
// the restored offsets; with its claim current it would go on from there
// and skip them. Released, its next commit is fenced, and a new claim
// (the same owner's included) resumes from the restored offsets.
func releaseClaims(db *pebble.DB, b *pebble.Batch) error {
	return rewritePrefix(db, b, prefixClaim, func(v []byte) ([]byte, error) {
		if !wellFormedClaim(v) {
			return nil, fmt.Errorf("%w: claim record", ErrCorrupt)
		}
		released := slices.Clone(v)
		released[8] |= claimReleased
		return released, nil
	})
}

// restoreSourcesActive sets every window source's last activity in db to
// SourceRestored, in b: the new cluster's clock starts their idle
// timeouts.
func restoreSourcesActive(db *pebble.DB, b *pebble.Batch) error {
	return rewritePrefix(db, b, prefixWindowSource, func(v []byte) ([]byte, error) {
		s, err := decodeSourceState(v)
		if err != nil {
			return nil, err
		}
		s.LastActive = SourceRestored
		return s.encode(), nil
	})
}

// rewritePrefix sets, in b, every record of db under the key prefix p to
// what rewrite makes of its value.
func rewritePrefix(db *pebble.DB, b *pebble.Batch, p byte, rewrite func(v []byte) ([]byte, error)) error {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{p}, UpperBound: []byte{p + 1}})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := rewrite(it.Value())
		if err == nil {
			err = b.Set(it.Key(), v, nil)
		}
		if err != nil {
			it.Close()
			return fmt.Errorf("%w (key %x)", err, it.Key())
		}
	}
	return it.Close()
}

// RestoredFrom returns the checkpoint this state was restored from, if it
// was.
func (f *FSM) RestoredFrom() (RestoredFrom, bool, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return RestoredFrom{}, false, ErrClosed
	}
	a := applier{r: f.db}
	v, ok, err := a.get(keyRestoredFrom)
	if err != nil || !ok {
		return RestoredFrom{}, false, err
	}
	from, err := decodeRestoredFrom(v)
	if err != nil {
		return RestoredFrom{}, false, err
	}
	t, ok, err := a.get(keyRestoreTiming)
	if err != nil {
		return RestoredFrom{}, false, err
	}
	if ok {
		if len(t) != 16 {
			return RestoredFrom{}, false, fmt.Errorf("%w: restore timing record of %d bytes", ErrCorrupt, len(t))
		}
		from.At = time.Unix(0, int64(binary.BigEndian.Uint64(t)))
		from.Took = time.Duration(binary.BigEndian.Uint64(t[8:]))
	}
	return from, true, nil
}

// RestoredMembers returns the members of the checkpoint this state was
// restored from, with the addresses they served at then; none for a
// state that was not restored, or restored before they were kept.
func (f *FSM) RestoredMembers() ([]command.Member, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, ErrClosed
	}
	return readMembers(f.db, prefixRestoredMember)
}
