package fsm

import (
	"encoding/binary"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// expiryFloor is a time below which a time-first index holds no record
// (in the index's order: the time as an unsigned number, the 8 bytes
// after the prefix byte). The state machine keeps one for the expiry
// index (prefixExpiry) and one for the index of ended sessions' records
// (prefixEndedExpiry), which the session expiry entries sweep. Expire
// deletes the index records it finds, due ones first, and a Pebble
// iterator steps over every deleted record not yet compacted away, so a
// scan of the index from its start cost more with every expiry since the
// last compaction: rounds of 100 expiries took 2.1 ms each after 200
// rounds and 27 ms after 3,000 (BenchmarkExpireRounds). Expire and
// ExpiryDue start at the floor instead.
//
// Only the apply loop moves it: a record written below it (applier.put)
// lowers it, and an expire raises it to what its scan proved. It is kept
// twice, as the recordCache keeps records: batch is the bound over the
// batch being built (the database and the batch's writes), which Expire
// reads, and db the bound over the database, which ExpiryDue reads
// outside the apply loop; a committed batch moves batch into db. Memory
// only: it starts at 0 (the index's start) when the state machine opens
// and whenever its database is replaced. The same holds for the ended
// sessions' index and its sweep (TypeExpireSessions, EndedSessionsDue).
type expiryFloor struct {
	batch uint64
	db    atomic.Uint64
}

// lower records a write of an index record at time t.
func (e *expiryFloor) lower(t uint64) { e.batch = min(e.batch, t) }

// raise records that the batch's view holds no record below t.
func (e *expiryFloor) raise(t uint64) { e.batch = max(e.batch, t) }

func (e *expiryFloor) commit() { e.db.Store(e.batch) }
func (e *expiryFloor) abort()  { e.batch = e.db.Load() }
func (e *expiryFloor) reset()  { e.batch = 0; e.db.Store(0) }

// due returns up to limit keys of the index under prefix whose time is
// at or before now, in order, reading r (the apply loop's view) from the
// batch's floor, and raises the floor past what the scan proves: to
// now+1 when it found every such key, else to the last key's time
// (records of that time may remain). The caller deletes the keys in the
// same batch; were the batch not committed, abort would put the floor
// back.
func (e *expiryFloor) due(r pebble.Reader, prefix byte, now int64, limit int) ([][]byte, error) {
	if now < 0 || e.batch > uint64(now) {
		// No record is due before 1970 (uint64(now) would wrap and make
		// every record due), and none is left below the floor.
		return nil, nil
	}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: indexTimeKey(prefix, e.batch), UpperBound: indexTimeKey(prefix, uint64(now)+1)})
	if err != nil {
		return nil, err
	}
	var due [][]byte
	// more is whether the scan stopped at the limit with a key left.
	more := it.First()
	for ; more && len(due) < limit; more = it.Next() {
		due = append(due, append([]byte(nil), it.Key()...))
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	switch {
	case !more:
		e.raise(uint64(now) + 1)
	case len(due) > 0:
		e.raise(binary.BigEndian.Uint64(due[len(due)-1][1:9]))
	}
	return due, nil
}

// anyDue reports whether the database (db, outside the apply loop) holds
// a key of the index under prefix whose time is at or before now. A batch
// committed between its load of the floor and its read may hold a key
// below the floor that is not yet published: it answers false then, and
// the leader's next look (every --expiry-interval) finds the key.
func (e *expiryFloor) anyDue(db *pebble.DB, prefix byte, now int64) (bool, error) {
	floor := e.db.Load()
	if now < 0 || floor > uint64(now) {
		return false, nil
	}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: indexTimeKey(prefix, floor), UpperBound: indexTimeKey(prefix, uint64(now)+1)})
	if err != nil {
		return false, err
	}
	due := it.First()
	return due, it.Close()
}

func indexTimeKey(prefix byte, t uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefix}, t)
}
