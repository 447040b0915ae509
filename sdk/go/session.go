package stated

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// Sessions (see "Sessions" in the package documentation). A Client opens a
// session for its client id when it is dialled and sends every commit in
// it. Within the session, each commit in flight holds a lane: an ordered
// stream of commits with its own sequence, so that concurrent commits of
// one Client never overtake one another within a lane. A retried attempt
// carries the same session, lane and sequence; the daemon applies it once.

// sessionState is the Client's session and its lanes.
type sessionState struct {
	mu sync.Mutex
	// id is the open session, zero when none is: before the first open
	// succeeded, or after the daemon said it expired.
	id uint64
	// idleTimeout is the daemon's idle timeout of the session.
	idleTimeout time.Duration
	// opening is closed when the open in flight ends; nil when none is.
	opening chan struct{}
	// openErr is the last failed open's error (nil once one succeeded).
	openErr error
	// fenced is set once a newer session of the client id fenced this
	// Client: every later commit returns it.
	fenced error
	// free lanes of session id, and how many lanes it has.
	free   []*lane
	nLanes uint32
	// own are the ids of the Client's latest sessions, proposed or
	// opened, newest last (at most maxOwnSessions): a commit of an older
	// session refused as superseded by one of them was superseded by this
	// Client, after that older session ended, not fenced by another
	// process.
	own []uint64
}

// maxOwnSessions is how many of its latest session ids a Client
// remembers as its own.
const maxOwnSessions = 8

// lane is a lane of one session, held by one commit at a time.
type lane struct {
	session uint64
	id      uint32
	next    uint64 // the sequence of the lane's next commit
}

// SessionError is a commit's attempt refused by the daemon because of its
// session: nothing of that attempt was applied (an earlier attempt of a
// retried commit may have been; Commit's error then says so). It matches
// ErrFailedPrecondition, and ErrSessionFenced when another Client opened
// a session with the same client id, or ErrSessionExpired when the
// session expired.
type SessionError struct {
	ClientID  string
	SessionID uint64
	// CurrentSessionID is the client id's newer session, when fenced.
	CurrentSessionID uint64
	// Reason is the daemon's: "superseded", "not open", "sequence reused"
	// or "sequence stale".
	Reason string
	err    error
	// ownNewer is set for a session superseded by a newer session of the
	// same Client, which opened it once the older one had expired (or
	// was dropped by a restore): to the caller, that session expired.
	ownNewer bool
}

func (e *SessionError) Error() string { return e.err.Error() }

// Unwrap returns the underlying daemon error (ErrFailedPrecondition).
func (e *SessionError) Unwrap() error { return e.err }

// Is matches ErrSessionFenced for a session superseded by another
// Client's, and ErrSessionExpired for one that is not open or that the
// same Client superseded after it expired.
func (e *SessionError) Is(target error) bool {
	switch {
	case e.Reason == "superseded" && !e.ownNewer:
		return target == ErrSessionFenced
	case e.Reason == "not open", e.Reason == "superseded":
		return target == ErrSessionExpired
	}
	return false
}

var sessionReasonNames = map[statedv1.SessionRefused_Reason]string{
	statedv1.SessionRefused_REASON_SUPERSEDED:      "superseded",
	statedv1.SessionRefused_REASON_NOT_OPEN:        "not open",
	statedv1.SessionRefused_REASON_SEQUENCE_REUSED: "sequence reused",
	statedv1.SessionRefused_REASON_SEQUENCE_STALE:  "sequence stale",
	statedv1.SessionRefused_REASON_ENDED:           "ended",
}

// asSessionError returns err as a *SessionError when its status carries a
// SessionRefused detail, else nil.
func asSessionError(err error) *SessionError {
	var se *statusError
	if !errors.As(err, &se) {
		return nil
	}
	for _, d := range se.st.Details() {
		if sr, ok := d.(*statedv1.SessionRefused); ok {
			return &SessionError{ClientID: sr.GetClientId(), SessionID: sr.GetSessionId(),
				CurrentSessionID: sr.GetCurrentSessionId(), Reason: sessionReasonNames[sr.GetReason()], err: err}
		}
	}
	return nil
}

// SessionID returns the id of the Client's open session, zero while it has
// none (before the first open succeeded, or after its session expired and
// before the next commit opened another).
func (c *Client) SessionID() uint64 {
	c.sess.mu.Lock()
	defer c.sess.mu.Unlock()
	return c.sess.id
}

// openSessionAsync starts opening the Client's session in the background,
// for Dial; commits wait for it. It retries, as the Client's retry policy
// says, until it succeeds or the Client is closed.
func (c *Client) openSessionAsync() {
	c.sess.mu.Lock()
	ch := c.startOpenLocked()
	c.sess.mu.Unlock()
	if ch == nil {
		return
	}
	go c.runOpen(c.life, ch)
}

// startOpenLocked marks an open in flight and returns its channel, or nil
// when one is in flight already or a session is open.
func (c *Client) startOpenLocked() chan struct{} {
	if c.sess.opening != nil || c.sess.id != 0 || c.sess.fenced != nil {
		return nil
	}
	ch := make(chan struct{})
	c.sess.opening = ch
	return ch
}

// runOpen opens a session under ctx and ends the open in flight, ch.
//
// Every attempt proposes the same session id: an attempt given up on (a
// partitioned node that still forwarded it) may apply after a later one
// succeeded, and then finds its own session open and changes nothing. With
// an id per attempt it would open another session and fence this Client.
//
// The daemon refuses an attempt whose session ended (REASON_ENDED): an
// earlier attempt opened it, its answer was lost, and it expired or was
// replaced (another process's open of the client id) before this one
// applied. No commit was sent under it, so the open starts again with a
// new id; every attempt of the old id is refused from then on.
func (c *Client) runOpen(ctx context.Context, ch chan struct{}) {
	var resp *statedv1.OpenSessionResponse
	req := &statedv1.OpenSessionRequest{ClientId: c.id}
	before := c.lastIndex.Load()
	var err error
	for ids := 0; ; ids++ {
		req.SessionId = newSessionID()
		c.sess.mu.Lock()
		c.addOwnLocked(req.SessionId)
		c.sess.mu.Unlock()
		err = c.withRetries(ctx, func(ctx context.Context) error {
			var err error
			resp, err = c.rpc.OpenSession(ctx, req)
			if err != nil {
				// Visible to commits waiting for this open, which report
				// it if their ctx ends first.
				c.sess.mu.Lock()
				c.sess.openErr = c.rpcErr("open session", err)
				c.sess.mu.Unlock()
			}
			return err
		})
		ended := endedRefusal(err, req.SessionId)
		if ids == maxOpenIDs-1 || ended == nil || c.closed.Load() {
			break
		}
		if cur := ended.GetCurrentSessionId(); cur != 0 {
			c.sess.mu.Lock()
			own := c.ownLocked(cur)
			c.sess.mu.Unlock()
			if !own {
				// Another process opened the client id's session after
				// this open's first attempt applied: it dialled last and
				// holds the id; this Client is the one fenced, as if
				// that open had come after this one's answer.
				msg := fmt.Sprintf("session %d of client %q was replaced by session %d, which another Client opened after this open's first attempt applied: this Client is fenced (%s)",
					req.SessionId, c.id, cur, status.Convert(err).Message())
				fenced := &SessionError{ClientID: c.id, SessionID: req.SessionId, CurrentSessionID: cur,
					Reason: "superseded", err: c.rpcErr("open session", status.Error(codes.FailedPrecondition, msg))}
				c.sess.mu.Lock()
				if c.sess.fenced == nil {
					c.sess.fenced = fenced
				}
				c.sess.mu.Unlock()
				break
			}
		}
	}
	c.sess.mu.Lock()
	defer c.sess.mu.Unlock()
	c.sess.opening = nil
	close(ch)
	if err != nil {
		c.sess.openErr = c.rpcErr("open session", err)
		if c.sess.fenced != nil {
			c.sess.openErr = c.sess.fenced
		}
		return
	}
	c.lineage.learn(resp.GetLineageId())
	if idx := resp.GetIndex(); idx != 0 && idx < before {
		// The open applied below a commit the Client saw before sending
		// it: the cluster's log started again (a restore from a
		// checkpoint, which also dropped the old session). Indexes of the
		// old log mean nothing here; a read waiting for one would wait
		// until the new log reached it. Unless a newer index was seen
		// meanwhile, the Client's reads wait for its open from now on.
		c.lastIndex.CompareAndSwap(before, idx)
	}
	c.sess.id = resp.GetSessionId()
	c.addOwnLocked(c.sess.id)
	c.sess.idleTimeout = time.Duration(resp.GetIdleTimeoutMillis()) * time.Millisecond
	c.sess.openErr = nil
	c.sess.free, c.sess.nLanes = nil, 0
}

// maxOpenIDs bounds the session ids one open tries: a new id's open is
// refused as ended only if an attempt of it applied and that session
// ended before the next attempt did (an idle timeout shorter than the
// open's retries, or another process opening the same client id at
// every turn).
const maxOpenIDs = 8

// endedRefusal returns the SessionRefused detail of err when err is the
// daemon's refusal of an open of session id because that session ended
// (REASON_ENDED), else nil.
func endedRefusal(err error, id uint64) *statedv1.SessionRefused {
	if err == nil {
		return nil
	}
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		return nil
	}
	for _, d := range st.Details() {
		if sr, ok := d.(*statedv1.SessionRefused); ok && sr.GetReason() == statedv1.SessionRefused_REASON_ENDED && sr.GetSessionId() == id {
			return sr
		}
	}
	return nil
}

// addOwnLocked remembers id as one of the Client's sessions.
func (c *Client) addOwnLocked(id uint64) {
	if n := len(c.sess.own); n > 0 && c.sess.own[n-1] == id {
		return
	}
	if len(c.sess.own) == maxOwnSessions {
		c.sess.own = append(c.sess.own[:0], c.sess.own[1:]...)
	}
	c.sess.own = append(c.sess.own, id)
}

// ownLocked reports whether id is one of the Client's latest sessions.
func (c *Client) ownLocked(id uint64) bool { return slices.Contains(c.sess.own, id) }

// newSessionID is a random session id in [1, 2^63-1].
func newSessionID() uint64 { return rand.Uint64N(1<<63-1) + 1 }

// sessionNotGranted reports whether err is the daemon's refusal to open a
// session because the Client's token may not write (PermissionDenied):
// such a Client reads without a session, so Dial does not fail on it. Its
// first commit tries to open one again, and fails as the daemon says
// unless the token has since been granted write.
func sessionNotGranted(err error) bool {
	return status.Code(err) == codes.PermissionDenied
}

// acquireLane waits until the Client has a session and takes a lane of
// it, with the lane's next sequence reserved for the caller.
func (c *Client) acquireLane(ctx context.Context) (*lane, error) {
	for {
		c.sess.mu.Lock()
		if err := c.sess.fenced; err != nil {
			c.sess.mu.Unlock()
			return nil, err
		}
		if c.sess.id != 0 {
			l := c.takeLaneLocked()
			c.sess.mu.Unlock()
			return l, nil
		}
		ch := c.sess.opening
		if ch == nil {
			// No open in flight: this caller runs one, under its own ctx,
			// unless the Client was closed (an open that Close ended
			// woke it).
			if err := c.checkOpen("open session"); err != nil {
				c.sess.mu.Unlock()
				return nil, err
			}
			ch = c.startOpenLocked()
			c.sess.mu.Unlock()
			c.runOpen(ctx, ch)
			c.sess.mu.Lock()
			id, err := c.sess.id, c.sess.openErr
			c.sess.mu.Unlock()
			if id == 0 && err != nil {
				return nil, err
			}
			continue
		}
		c.sess.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			c.sess.mu.Lock()
			lastErr := c.sess.openErr
			c.sess.mu.Unlock()
			if lastErr != nil {
				return nil, lastErr
			}
			return nil, c.rpcErr("open session", status.FromContextError(ctx.Err()).Err())
		}
	}
}

func (c *Client) takeLaneLocked() *lane {
	var l *lane
	if n := len(c.sess.free); n > 0 {
		l, c.sess.free = c.sess.free[n-1], c.sess.free[:n-1]
	} else {
		l = &lane{session: c.sess.id, id: c.sess.nLanes, next: 1}
		c.sess.nLanes++
	}
	return l
}

// releaseLane returns l after its commit ended, whatever the outcome: its
// sequence moves on, so a commit given up on is never sent again under a
// sequence a later commit uses.
func (c *Client) releaseLane(l *lane) {
	l.next++
	c.sess.mu.Lock()
	defer c.sess.mu.Unlock()
	if l.session == c.sess.id {
		c.sess.free = append(c.sess.free, l)
	}
}

// sessionRefused handles a commit's session refusal: a fenced Client stays
// fenced; an expired session is dropped, so that the next commit opens a
// new one. A session superseded by the Client's own newer one is not a
// fence: the Client opened that one because the older one had expired
// (a commit retried since before the expiry learns it last). It returns
// the error for the caller.
func (c *Client) sessionRefused(l *lane, se *SessionError) error {
	c.sess.mu.Lock()
	defer c.sess.mu.Unlock()
	switch se.Reason {
	case "superseded":
		if se.CurrentSessionID != l.session && c.ownLocked(se.CurrentSessionID) {
			se.ownNewer = true
			// An open the Client gave up on applied after a later one
			// (a slow forward): the session the Client is on was
			// superseded by its own abandoned one. Drop it, so that the
			// next commit opens a new session instead of taking another
			// lane in this one, refused the same way until the abandoned
			// session's idle timeout.
			if c.sess.id == l.session {
				c.sess.id = 0
				c.sess.free, c.sess.nLanes = nil, 0
			}
			break
		}
		if c.sess.fenced == nil {
			c.sess.fenced = se
		}
	case "not open":
		if c.sess.id == l.session {
			c.sess.id = 0
			c.sess.free, c.sess.nLanes = nil, 0
		}
	}
	return se
}

// sessionUnknownOutcome is the error of a commit whose session expired or
// was fenced while it was being retried: an earlier attempt may have
// applied.
func sessionUnknownOutcome(se *SessionError) error {
	ended := "expired"
	if errors.Is(se, ErrSessionFenced) {
		ended = "was fenced"
	}
	return fmt.Errorf("stated: commit: the session %s while the commit was retried, so an earlier attempt may or may not have applied: %w", ended, se)
}
