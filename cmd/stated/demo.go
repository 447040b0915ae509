package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// The demo's fixed names and shape.
const (
	demoTopic      = "events"
	demoPartitions = 4
	demoGroup      = "demo"
	demoNamespace  = "counts"
	demoNodes      = 3
	// demoPorts are the ports from --base-port on: gRPC and Raft of each
	// node, then Kafka.
	demoPorts = 2*demoNodes + 1
	// demoBound bounds the whole demo; each wait has its own, shorter one.
	demoBound = 4 * time.Minute
	// maxSocketPath is the longest unix socket path Linux accepts.
	maxSocketPath = 107
)

// demoOptions are the demo's flags.
type demoOptions struct {
	dir      string
	records  int
	keys     int
	basePort int
	keep     bool
	verbose  bool
}

func (c *cli) demoCommand() *cobra.Command {
	o := demoOptions{records: 20000, keys: 50, basePort: 7520}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole mission on this machine: a cluster, Kafka, a processor, crashes, a total loss and a restore",
		Long: `Run stated's whole mission in one command, on 127.0.0.1 only, and check it.

The demo starts an in-process Kafka (kfake) with a topic of 4 partitions, a
three-node stated cluster (child processes of this binary: stated run ...)
checkpointing every 2s to a bucket in the demo's directory, and a counter
processor (sdk/go/kafka, one counter per record key, committed together
with the offsets). It produces --records records over --keys keys in
bursts, and then:

  1. SIGKILLs the Raft leader and the processor mid-stream, restarts both,
     waits until the processor has caught up, and checks that every count
     is exact on every node;
  2. takes a checkpoint, produces more, SIGKILLs every node and the
     processor, wipes every data dir, prints the recovery report
     (stated recovery), restores the first node from the bucket (stated
     restore), starts the cluster again (the others join it), lets the
     processor replay from the checkpoint's offsets, and checks every
     count again.

It exits 0 only if every check passed, and 1 saying what differed
otherwise. The nodes use ports --base-port to --base-port+5 (gRPC and Raft)
and Kafka --base-port+6. Child logs go to DIR/logs (-v: to the terminal).
On failure, SIGINT or SIGTERM every child process is killed and waited for;
a failure keeps the directory, even a temporary one, for its logs.`,
		Args: cobra.NoArgs,
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, _ []string) error {
		for _, n := range []string{"addr", "timeout"} {
			if cmd.Flags().Changed(n) {
				return &exitError{code: exitUsage, err: fmt.Errorf("demo: --%s is for client commands; the demo runs its own cluster", n)}
			}
		}
		return c.runDemo(cmd.Context(), o)
	})
	f := cmd.Flags()
	f.StringVar(&o.dir, "dir", "", "directory for the data dirs, the bucket and the logs: empty or absent, and kept (default: a new temporary directory, removed at the end unless --keep or a failure)")
	f.IntVar(&o.records, "records", o.records, "records in the stream (at least 100); a quarter more are produced after the checkpoint")
	f.IntVar(&o.keys, "keys", o.keys, "distinct record keys, one counter each (1 to --records)")
	f.IntVar(&o.basePort, "base-port", o.basePort, fmt.Sprintf("first of the %d ports the demo uses on 127.0.0.1", demoPorts))
	f.BoolVar(&o.keep, "keep", false, "keep the temporary directory at the end")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "write the logs of the child processes to the terminal")
	cmd.AddCommand(c.demoProcessorCommand())
	return cmd
}

// validate checks the flags that need no file system or network.
func (o demoOptions) validate() error {
	switch {
	case o.records < 100:
		return fmt.Errorf("--records %d: at least 100, so that there is a stream to crash in the middle of", o.records)
	case o.records > 10_000_000:
		return fmt.Errorf("--records %d: at most 10000000 (the demo keeps every record's key in memory to check the counts)", o.records)
	case o.keys < 1 || o.keys > o.records:
		return fmt.Errorf("--keys %d: from 1 to --records (%d)", o.keys, o.records)
	case o.basePort < 1024 || o.basePort > 65535-(demoPorts-1):
		return fmt.Errorf("--base-port %d: from 1024 to %d (the demo uses %d ports from it)", o.basePort, 65535-(demoPorts-1), demoPorts)
	}
	return nil
}

// checkDemoDir checks, without changing anything, that dir can be the
// demo's directory: absent, or an empty directory. It returns it
// absolute.
func checkDemoDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("--dir %s: %w", dir, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return "", fmt.Errorf("--dir %s: %w", dir, err)
	case !fi.IsDir():
		return "", fmt.Errorf("--dir %s: not a directory; give an empty or new directory", dir)
	default:
		entries, err := os.ReadDir(abs)
		if err != nil {
			return "", fmt.Errorf("--dir %s: %w", dir, err)
		}
		if len(entries) > 0 {
			return "", fmt.Errorf("--dir %s: not empty (%d entries, e.g. %s); give an empty or new directory", dir, len(entries), entries[0].Name())
		}
	}
	if sock := demoSocket(abs, "n1"); len(sock) > maxSocketPath {
		return "", fmt.Errorf("--dir %s: too long: the nodes' unix sockets (%s) would be %d bytes, more than the %d a socket path may have; give a shorter --dir", dir, sock, len(sock), maxSocketPath)
	}
	return abs, nil
}

func demoSocket(dir, node string) string { return filepath.Join(dir, node, "stated.sock") }

// makeDemoDir creates the demo's directory (a temporary one when dir is
// "") and its logs directory, and checks that it can write there.
func makeDemoDir(dir string) (string, error) {
	if dir == "" {
		d, err := os.MkdirTemp("", "stated-demo-")
		if err != nil {
			return "", fmt.Errorf("create a temporary directory: %w", err)
		}
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("--dir %s: cannot create it: %w", dir, err)
	}
	if err := os.Mkdir(filepath.Join(dir, "logs"), 0o755); err != nil {
		return "", fmt.Errorf("--dir %s: cannot write to it: %w", dir, err)
	}
	return dir, nil
}

// busyPortError names a port the demo cannot bind, and how to avoid it.
func busyPortError(port, base int, err error) error {
	return fmt.Errorf("port 127.0.0.1:%d is in use (%v); the demo uses 127.0.0.1:%d to 127.0.0.1:%d: pick other ports with --base-port",
		port, err, base, base+demoPorts-1)
}

// checkPorts fails naming the first port of the demo's range that
// something else holds.
func checkPorts(base int) error {
	for p := base; p < base+demoPorts; p++ {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			return busyPortError(p, base, err)
		}
		l.Close()
	}
	return nil
}

// runDemo checks the flags and the environment, runs the demo and cleans
// up: every child is killed and waited for whatever happens.
func (c *cli) runDemo(parent context.Context, o demoOptions) error {
	if err := o.validate(); err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	temp := o.dir == ""
	dir := ""
	if !temp {
		var err error
		if dir, err = checkDemoDir(o.dir); err != nil {
			return &exitError{code: exitUsage, err: err}
		}
	}
	if err := checkPorts(o.basePort); err != nil {
		return &exitError{code: exitFailed, err: err}
	}
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary to run the nodes with: %w", err)
	}
	if dir, err = makeDemoDir(dir); err != nil {
		return &exitError{code: exitFailed, err: err}
	}
	if temp {
		if len(demoSocket(dir, "n1")) > maxSocketPath {
			os.RemoveAll(dir)
			return &exitError{code: exitFailed, err: fmt.Errorf("the temporary directory %s is too long for unix socket paths; give a short --dir", dir)}
		}
	}

	sigCtx, stopSignals := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	ctx, cancel := context.WithTimeoutCause(sigCtx, demoBound, fmt.Errorf("the demo did not finish within %s", demoBound))
	defer cancel()

	d := newDemo(o, dir, bin, c.stdout, c.stderr)
	err = d.run(ctx)
	if cerr := d.close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		what := "FAILED"
		if sigCtx.Err() != nil && parent.Err() == nil {
			what, err = "stopped", errors.New("interrupted by a signal; every child process was killed")
		}
		fmt.Fprintf(c.stderr, "demo %s after %s: %v\n", what, time.Since(d.start).Round(100*time.Millisecond), err)
		switch {
		case what == "stopped" && temp && !o.keep:
			os.RemoveAll(dir)
		default:
			// A failure keeps even a temporary directory: its logs say why.
			if !o.verbose {
				fmt.Fprintf(c.stderr, "child logs: %s\n", filepath.Join(dir, "logs"))
			}
			fmt.Fprintf(c.stderr, "kept %s\n", dir)
		}
		return &exitError{code: exitFailed, err: fmt.Errorf("demo %s", strings.ToLower(what))}
	}
	switch {
	case temp && !o.keep:
		if err := os.RemoveAll(dir); err != nil {
			return &exitError{code: exitFailed, err: fmt.Errorf("remove %s: %w", dir, err)}
		}
	default:
		fmt.Fprintf(c.stdout, "kept %s (data dirs n1 n2 n3, bucket, logs)\n", dir)
	}
	return nil
}
