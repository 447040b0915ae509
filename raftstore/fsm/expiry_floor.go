package fsm

import "sync/atomic"

// expiryFloor is a time below which the expiry index holds no record (in
// the index's order: the expiry time as an unsigned number). Expire
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
// and whenever its database is replaced.
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
