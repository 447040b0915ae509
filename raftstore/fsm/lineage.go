package fsm

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// keyLineage records the lineage of a restored state: the id of the
// cluster at the root of its chain of restores (see Lineage). A state
// that was never restored has none; its lineage is its cluster id.
var keyLineage = []byte{prefixSystem, 'l'}

// Lineage returns the id of the line of clusters this state belongs to:
// the cluster id of a state that was never restored, and for a restored
// one the lineage of the state it was restored from, so that a cluster
// restored from a checkpoint (into the same nodes after a total loss, or
// into new ones) has the lineage of the cluster that took it, however
// many restores lie between. A client that knows its cluster's lineage
// tells a restored copy of its cluster from an unrelated one at the same
// address. "" before the cluster id is recorded.
//
// A state restored by a release that did not record lineages has the id
// of the cluster its checkpoint came from instead (keyRestoredFrom), the
// same answer its source gave unless the source was itself restored.
func (f *FSM) Lineage() (string, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return "", ErrClosed
	}
	return lineageOf(f.db)
}

// lineageOf reads the lineage of the state r holds (see FSM.Lineage).
func lineageOf(r pebble.Reader) (string, error) {
	if v, ok, err := getRecord(r, keyLineage); err != nil || ok {
		return string(v), err
	}
	v, ok, err := getRecord(r, keyRestoredFrom)
	if err != nil {
		return "", err
	}
	if ok {
		from, err := decodeRestoredFrom(v)
		if err != nil || from.ClusterID != "" {
			return from.ClusterID, err
		}
	}
	v, _, err = getRecord(r, keyClusterID)
	return string(v), err
}

// decodeRestoredFrom decodes a keyRestoredFrom record (restoredFromValue).
func decodeRestoredFrom(v []byte) (RestoredFrom, error) {
	if len(v) < 16 {
		return RestoredFrom{}, fmt.Errorf("%w: restored-from record of %d bytes", ErrCorrupt, len(v))
	}
	return RestoredFrom{Epoch: binary.BigEndian.Uint64(v), RaftIndex: binary.BigEndian.Uint64(v[8:]), ClusterID: string(v[16:])}, nil
}

// restoredFromValue encodes a keyRestoredFrom record.
func restoredFromValue(from RestoredFrom) []byte {
	v := binary.BigEndian.AppendUint64(nil, from.Epoch)
	v = binary.BigEndian.AppendUint64(v, from.RaftIndex)
	return append(v, from.ClusterID...)
}
