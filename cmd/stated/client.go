package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	stated "github.com/statedhq/stated/sdk/go"
)

// notFoundError is a read of a key that holds no value or map entry.
type notFoundError struct {
	ns, key string
	what    string // "" for a value, else e.g. `counter` or `map entry "s"`
}

func (e *notFoundError) Error() string {
	if e.what == "" {
		return fmt.Sprintf("key %q not found in namespace %q", e.key, e.ns)
	}
	return fmt.Sprintf("%s of key %q not found in namespace %q", e.what, e.key, e.ns)
}

// withClient dials the daemon at --addr, runs fn with a context bounded by
// --timeout, and turns its error into a message and an exit code.
func (c *cli) withClient(cmd *cobra.Command, fn func(ctx context.Context, client *stated.Client) error) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), c.timeout)
	defer cancel()
	client, err := stated.Dial(ctx, c.addr, stated.WithLazySession())
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
			return &exitError{code: exitUnreachable, err: fmt.Errorf("no answer from the daemon at %s within %s", c.addr, c.timeout)}
		}
		return &exitError{code: exitFailed, err: err}
	}
	switch st.Code() {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.ResourceExhausted:
		return &exitError{code: exitFailed, err: errors.New(st.Message())}
	case codes.Unavailable:
		return &exitError{code: exitUnreachable, err: fmt.Errorf("the daemon at %s is unavailable: %s", c.addr, st.Message())}
	case codes.DeadlineExceeded:
		return &exitError{code: exitUnreachable, err: fmt.Errorf("no answer from the daemon at %s within %s", c.addr, c.timeout)}
	}
	return &exitError{code: exitFailed, err: fmt.Errorf("%s: %s", st.Code(), st.Message())}
}
