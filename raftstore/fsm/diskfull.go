package fsm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"

	"github.com/cockroachdb/pebble/v2"
)

// Pebble retries a failed flush at once and forever, with no backoff, and
// reports each failure as a background error. On a full disk that is
// thousands of failures a second: without the handling here, a start
// whose WAL replay must flush hung in pebble.Open (it waits for that
// flush) and logged each failure, and DB.Flush waited forever.

// IsDiskFull reports whether err is, or wraps, a full disk (or a used-up
// disk quota).
func IsDiskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// diskFullHint is what a disk-full error adds for whoever reads it, and
// openHint what it adds to a start refused for it.
func diskFullHint(err error) string {
	if IsDiskFull(err) {
		return " (the data dir's disk is full: free space)"
	}
	return ""
}

func openHint(err error) string {
	if IsDiskFull(err) {
		return " (the data dir's disk is full: free space and start again)"
	}
	return ""
}

// backgroundLogEvery is how often the same kind of background error is
// logged again, with the count of those not logged in between.
var backgroundLogEvery = 5 * time.Second

// abandonedRetryEvery is how often an abandoned Open lets Pebble retry
// what failed (see openWait).
var abandonedRetryEvery = 5 * time.Second

// backgroundErrors remembers Pebble's background errors (failed flushes
// and compactions) and logs them rate-limited. One serves every database
// the FSM opens.
type backgroundErrors struct {
	mu     sync.Mutex
	logger *slog.Logger
	seq    uint64        // background errors so far
	last   error         // the newest
	change chan struct{} // closed and replaced on every background error
	begun  uint64        // flushes begun so far
	// lastBegun is begun at the newest background error: Pebble runs one
	// flush at a time and reports its failure as it ends, so a flush
	// begun after a Flush asked for one failed if this passed begun then.
	lastBegun uint64

	loggedKind string    // the kind of error logged last
	loggedAt   time.Time // when
	unlogged   int       // errors of that kind since, not logged
}

func newBackgroundErrors(logger *slog.Logger) *backgroundErrors {
	return &backgroundErrors{logger: logger, change: make(chan struct{})}
}

// bgMark is where the background errors and flushes stood at watch.
type bgMark struct{ seq, begun uint64 }

// watch returns where the background errors and flushes stand, and a
// channel closed at the next background error.
func (b *backgroundErrors) watch() (bgMark, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bgMark{b.seq, b.begun}, b.change
}

// since returns the newest background error if there was one after
// watch returned m, and a channel closed at the next one.
func (b *backgroundErrors) since(m bgMark) (error, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seq == m.seq {
		return nil, b.change
	}
	return b.last, b.change
}

// failedSince is since, for errors at the end of a flush begun after
// watch returned m: the failure of one begun before (a retry that was
// writing when space was freed, say) does not tell the flushes after it
// fail too. (A compaction's error then counts as well.)
func (b *backgroundErrors) failedSince(m bgMark) (error, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seq == m.seq || b.lastBegun <= m.begun {
		return nil, b.change
	}
	return b.last, b.change
}

// flushBegun counts a flush begun.
func (b *backgroundErrors) flushBegun() {
	b.mu.Lock()
	b.begun++
	b.mu.Unlock()
}

// report records and logs err: the first of its kind at once, then at
// most one every backgroundLogEvery, with how many were not logged.
func (b *backgroundErrors) report(err error) {
	now := time.Now()
	kind := errorKind(err)
	b.mu.Lock()
	b.seq++
	b.last = err
	b.lastBegun = b.begun
	close(b.change)
	b.change = make(chan struct{})
	log, repeated := false, 0
	if kind != b.loggedKind || now.Sub(b.loggedAt) >= backgroundLogEvery {
		log, repeated = true, b.unlogged
		b.loggedKind, b.loggedAt, b.unlogged = kind, now, 0
	} else {
		b.unlogged++
	}
	b.mu.Unlock()
	if !log {
		return
	}
	attrs := []any{"component", "pebble"}
	if repeated > 0 {
		attrs = append(attrs, "not_logged_since_last", repeated)
	}
	if IsDiskFull(err) {
		attrs = append(attrs, "hint", "the data dir's disk is full: free space")
	}
	b.logger.Error("background error: "+err.Error(), attrs...)
}

// errorKind groups errors that differ only in numbers (file numbers,
// sizes): the errno when there is one, else the message without digits.
func errorKind(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return "errno " + errno.Error()
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsDigit(r) {
			return -1
		}
		return r
	}, err.Error())
}

// openWait is an Open waiting for pebble.Open. A disk-full background
// error while it waits makes it give up: pebble.Open would wait forever
// for the flush its WAL replay needs. Once given up on, the database is
// abandoned: its background errors hold Pebble's retries back
// (abandonedRetryEvery), so that it neither spins nor logs thousands of
// failures a second, and should pebble.Open still return (space freed),
// the database is closed.
type openWait struct {
	mu        sync.Mutex
	fullErr   error         // the disk-full error given up at
	full      chan struct{} // closed when fullErr is set
	abandoned bool
	done      bool // pebble.Open returned
	db        *pebble.DB
	err       error
}

func newOpenWait() *openWait { return &openWait{full: make(chan struct{})} }

// backgroundError is called for each background error of the database
// being opened.
func (w *openWait) backgroundError(err error) {
	w.mu.Lock()
	if !w.done && w.fullErr == nil && IsDiskFull(err) {
		w.fullErr = err
		close(w.full)
	}
	abandoned := w.abandoned || w.fullErr != nil
	w.mu.Unlock()
	if abandoned {
		// Pebble calls this from the failed flush or compaction, and
		// retries once it returns.
		time.Sleep(abandonedRetryEvery)
	}
}

// opened hands pebble.Open's result over, or closes the database if the
// Open waiting gave up on it.
func (w *openWait) opened(db *pebble.DB, err error) {
	w.mu.Lock()
	abandoned := w.abandoned
	w.done, w.db, w.err = true, db, err
	w.mu.Unlock()
	if abandoned && db != nil {
		db.Close()
	}
}

// abandon gives up on the database; one opened meanwhile is closed.
func (w *openWait) abandon() {
	w.mu.Lock()
	w.abandoned = true
	db := w.db
	w.db = nil
	w.mu.Unlock()
	if db != nil {
		db.Close()
	}
}

// openPebbleContext opens the database in dir like openPebble, but gives
// up when Pebble reports a full disk while it opens, or when ctx ends.
func (f *FSM) openPebbleContext(ctx context.Context, dir string) (*pebble.DB, error) {
	w := newOpenWait()
	opts := f.pebbleOptions(w)
	result := make(chan struct{})
	go func() {
		defer close(result)
		w.opened(pebble.Open(dir, opts))
	}()
	select {
	case <-result:
		w.mu.Lock()
		db, err, full := w.db, w.err, w.fullErr
		w.mu.Unlock()
		if err != nil {
			return nil, openError(dir, err)
		}
		if full == nil {
			return db, nil
		}
		// Opened all the same, but its background errors are held back
		// now: given up on as below.
		w.abandon()
		return nil, openError(dir, full)
	case <-w.full:
		w.abandon()
		w.mu.Lock()
		err := w.fullErr
		w.mu.Unlock()
		return nil, openError(dir, err)
	case <-ctx.Done():
		w.abandon()
		err := fmt.Errorf("fsm: opening the state in %s: stopped: %w", dir, context.Cause(ctx))
		if last, _ := f.bg.since(bgMark{}); last != nil {
			err = fmt.Errorf("%w, while Pebble kept failing: %w%s", err, last, openHint(last))
		}
		return nil, err
	}
}

func openError(dir string, err error) error {
	return fmt.Errorf("fsm: opening the state in %s: %w%s", dir, err, openHint(err))
}
