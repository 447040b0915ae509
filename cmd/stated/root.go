package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
)

// Exit codes; see doc.go.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUnreachable = 2
	exitUsage       = 64
)

// defaultAddr is where `stated run` puts its socket when started without
// flags in the same directory.
const defaultAddr = "./stated-data/stated.sock"

// lookupEnv is os.LookupEnv, injected so that tests set no process state.
type lookupEnv func(string) (string, bool)

// cli holds what every command shares.
type cli struct {
	stdout, stderr io.Writer
	env            lookupEnv

	addr    string
	timeout time.Duration
	// tlsCA and tlsServerName make client commands use TLS; see tls.go.
	tlsCA, tlsServerName string
	// tlsCert and tlsKey are the client certificate they present.
	tlsCert, tlsKey string
	// token is the bearer token client commands send; see token.go.
	token string
}

// exitError carries the exit code of a failure whose message the command
// already chose.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// execute runs the command line args and returns the process exit code.
// Cobra's own error and usage printing is off: runtime failures print one
// line, command-line mistakes a line and a hint.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer, env lookupEnv) int {
	c := &cli{stdout: stdout, stderr: stderr, env: env}
	root := c.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		fmt.Fprintf(stderr, "stated: %v\n", ee.err)
		return ee.code
	}
	fmt.Fprintf(stderr, "stated: %v\nRun '%s --help' for usage.\n", err, cmd.CommandPath())
	return exitUsage
}

func (c *cli) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "stated",
		Short:         "stated keeps the state of stream-processing services and makes it recoverable",
		SilenceUsage:  true,
		SilenceErrors: true,
		// Environment variables fill the flags the command line left unset.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags(), c.env); err != nil {
				return err
			}
			return c.checkTimeout(cmd)
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return err })
	f := root.PersistentFlags()
	f.StringVar(&c.addr, "addr", defaultAddr, "daemon address for client commands: a unix socket path or host:port; several members of a cluster, comma-separated")
	f.DurationVar(&c.timeout, "timeout", defaultTimeout, "how long a client command waits for the daemon; commands that wait for an operation (checkpoint trigger --wait, checkpoint savepoint, recovery, restore) wait as long as it takes unless --timeout is given")
	f.StringVar(&c.tlsCA, "tls-ca", "", "client commands connect with TLS, trusting the CA certificates in this PEM file (the daemon's --tls-cert issuer)")
	f.StringVar(&c.tlsServerName, "tls-server-name", "", "with --tls-ca: the name the daemon's certificate must hold (default: the --addr host)")
	f.StringVar(&c.tlsCert, "tls-cert", "", "client commands present this PEM certificate, for a daemon with --tls-client-ca (with --tls-key); for stated run, --tls-cert is the certificate it serves")
	f.StringVar(&c.tlsKey, "tls-key", "", "PEM private key of the client commands' --tls-cert")
	f.StringVar(&c.token, "token", "", "bearer token client commands send, for a daemon with --token-file; prefer the environment variable, which stays out of the process list")
	bindEnv(f, "addr", "timeout", "tls-ca", "tls-server-name", "tls-cert", "tls-key", "token")
	root.AddCommand(c.runCommand(), c.kvCommand(), c.offsetsCommand(), c.clusterCommand(), c.statusCommand(), c.checkpointCommand(), c.restoreCommand(), c.recoveryCommand(), c.windowsCommand(), c.demoCommand())
	return root
}

// checkTimeout refuses a --timeout (or STATED_TIMEOUT) that is not
// positive: every call would end before it began, reported as a daemon
// that did not answer.
func (c *cli) checkTimeout(cmd *cobra.Command) error {
	if c.timeout > 0 {
		return nil
	}
	err := fmt.Errorf("--timeout %s is not positive", c.timeout)
	if f := cmd.Flags().Lookup("timeout"); f != nil && !f.Changed {
		err = fmt.Errorf("environment variable %s: %w", envName("timeout"), err)
	}
	return &exitError{code: exitUsage, err: err}
}

// runtime wraps a command's function so that its failures are reported as
// runtime errors (exit 1 unless they say otherwise), not usage errors.
func runtime(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := fn(cmd, args)
		if err == nil {
			return nil
		}
		var ee *exitError
		if errors.As(err, &ee) {
			return err
		}
		return &exitError{code: exitFailed, err: err}
	}
}
