package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	stated "github.com/statedhq/stated/sdk/go"
)

// notFoundError is a read of a key that holds no value or map entry.
type notFoundError struct {
	ns, key string
	what    string // "" for a value, else e.g. `counter` or `map entry "s"`
	// holds names the other kinds the key holds (a value's read only), so
	// that a read of the wrong kind says which --kind reads it.
	holds []string
}

func (e *notFoundError) Error() string {
	if e.what == "" {
		msg := fmt.Sprintf("key %q not found in namespace %q", e.key, e.ns)
		if len(e.holds) > 0 {
			msg = fmt.Sprintf("no value at key %q in namespace %q; it holds %s",
				e.key, e.ns, strings.Join(e.holds, ", and "))
		}
		return msg
	}
	return fmt.Sprintf("%s of key %q not found in namespace %q", e.what, e.key, e.ns)
}

// withClient dials the daemon at --addr, runs fn with a context bounded by
// --timeout, and turns its error into a message and an exit code.
func (c *cli) withClient(cmd *cobra.Command, fn func(ctx context.Context, client *stated.Client) error) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), c.timeout)
	defer cancel()
	tlsOpts, err := c.tlsOptions()
	if err != nil {
		return err
	}
	client, err := stated.Dial(ctx, c.addr, append(tlsOpts, stated.WithLazySession())...)
	if err != nil {
		return &exitError{code: exitUnreachable, err: fmt.Errorf("cannot reach the daemon at %s: %w", c.addr, err)}
	}
	defer client.Close()
	return c.clientError(fn(ctx, client))
}

// clientError maps an SDK error to what the user sees and the exit code.
func (c *cli) clientError(err error) error {
	if err == nil {
		return nil
	}
	var nf *notFoundError
	if errors.As(err, &nf) {
		return &exitError{code: exitFailed, err: err}
	}
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, context.DeadlineExceeded) {
			return &exitError{code: exitUnreachable, err: c.noAnswer(err)}
		}
		return &exitError{code: exitFailed, err: err}
	}
	switch st.Code() {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.ResourceExhausted:
		return &exitError{code: exitFailed, err: errors.New(st.Message())}
	case codes.Unavailable:
		return &exitError{code: exitUnreachable, err: fmt.Errorf("the daemon at %s is unavailable: %s", c.addr, st.Message())}
	case codes.DeadlineExceeded:
		return &exitError{code: exitUnreachable, err: c.noAnswer(err)}
	}
	return &exitError{code: exitFailed, err: fmt.Errorf("%s: %s", st.Code(), st.Message())}
}

// noAnswer is the message of a call that ran out of --timeout. When the
// daemon refused an earlier attempt (the SDK retries Unavailable), it
// says what the refusal was: a call that keeps meeting "no leader is
// known" or another cluster must not read as a daemon that never answered.
func (c *cli) noAnswer(err error) error {
	if r := stated.LastRefusal(err); r != nil {
		msg := r.Error()
		if st, ok := status.FromError(r); ok {
			msg = st.Message()
		}
		return fmt.Errorf("the daemon at %s did not serve the call within %s; it refused the attempt before with: %s", c.addr, c.timeout, msg)
	}
	return fmt.Errorf("no answer from the daemon at %s within %s", c.addr, c.timeout)
}

// defaultTimeout bounds a quick call to the daemon when --timeout is not
// given.
const defaultTimeout = 5 * time.Second

// Operations that take as long as the work takes (checkpoint trigger
// --wait, checkpoint savepoint, recovery, restore) are not bounded by the
// default --timeout, which is meant for quick calls: only a --timeout (or
// STATED_TIMEOUT) the user gave bounds them. The daemon must still answer
// a quick call within the default.

// explicitTimeout reports whether the user gave --timeout or
// STATED_TIMEOUT.
func (c *cli) explicitTimeout(cmd *cobra.Command) bool {
	if f := cmd.Flags().Lookup("timeout"); f != nil && f.Changed {
		return true
	}
	if c.env == nil {
		return false
	}
	_, ok := c.env(envName("timeout"))
	return ok
}

// opContext returns the context of a long operation: bounded by an
// explicit --timeout, else by nothing but the command's own context.
func (c *cli) opContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	if c.explicitTimeout(cmd) {
		return context.WithTimeout(cmd.Context(), c.timeout)
	}
	return context.WithCancel(cmd.Context())
}

// boundReached reports whether err ended an operation of ctx because its
// explicit --timeout passed. The deadline is read from the clock, not only
// from ctx.Err(): the daemon's copy of the deadline can fire, and its
// DeadlineExceeded arrive, before the goroutine that cancels ctx has run
// on a loaded machine, and the user must then still hear what runs on.
func boundReached(ctx context.Context, err error) bool {
	if err == nil {
		return false
	}
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		if dl, ok := ctx.Deadline(); !ok || time.Now().Before(dl) {
			return false
		}
	}
	return errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded || status.Code(err) == codes.Canceled
}

// stillRunning is the failure of a long operation whose --timeout passed:
// msg says what is still running, or was stopped.
func (c *cli) stillRunning(msg string) error {
	return &exitError{code: exitUnreachable, err: errors.New(msg)}
}

// withLongClient runs fn, a long operation, with a client of the daemon
// at --addr. ping, a quick call, runs first within the default --timeout
// so that a daemon that does not answer is reported at once. When an
// explicit --timeout ends fn, still (called with a fresh context of
// --timeout) says what is still running.
func (c *cli) withLongClient(cmd *cobra.Command, ping func(ctx context.Context, client *stated.Client) error,
	fn func(ctx context.Context, client *stated.Client) error, still func(ctx context.Context, client *stated.Client) string) error {
	dctx, cancel := context.WithTimeout(cmd.Context(), c.timeout)
	defer cancel()
	tlsOpts, err := c.tlsOptions()
	if err != nil {
		return err
	}
	// No command commits through this client: a session would be left
	// behind, and opening one needs write, which an admin token lacks.
	client, err := stated.Dial(dctx, c.addr, append(tlsOpts, stated.WithLazySession())...)
	if err != nil {
		return &exitError{code: exitUnreachable, err: fmt.Errorf("cannot reach the daemon at %s: %w", c.addr, err)}
	}
	defer client.Close()
	if ping != nil {
		if err := ping(dctx, client); err != nil {
			return c.clientError(err)
		}
	}
	ctx, cancelOp := c.opContext(cmd)
	defer cancelOp()
	err = fn(ctx, client)
	if boundReached(ctx, err) {
		qctx, qcancel := context.WithTimeout(context.WithoutCancel(cmd.Context()), c.timeout)
		defer qcancel()
		return c.stillRunning(still(qctx, client))
	}
	return c.clientError(err)
}
