package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// children starts the demo's child processes (this same binary with
// other arguments) and keeps track of the live ones, so that every way
// out of the demo (success, a failed check, an error, SIGINT) kills and
// waits for all of them.
type children struct {
	bin     string
	logDir  string
	verbose bool
	term    io.Writer // the terminal, for -v

	mu   sync.Mutex
	live map[*child]struct{}
	// termMu keeps lines of several children from interleaving with -v.
	termMu sync.Mutex
}

// child is one running process.
type child struct {
	name string
	args []string
	cmd  *exec.Cmd
	log  string        // the log file, "" with -v
	done chan struct{} // closed once the process has exited and was waited for
	err  error         // cmd.Wait's result, set before done is closed
}

func newChildren(bin, logDir string, verbose bool, term io.Writer) *children {
	return &children{bin: bin, logDir: logDir, verbose: verbose, term: term, live: map[*child]struct{}{}}
}

// logPath is where the output of the child called name goes without -v.
func (cs *children) logPath(name string) string { return filepath.Join(cs.logDir, name+".log") }

// start runs the binary with args as the child called name. Its output is
// appended to its log file, or with -v written to the terminal with the
// name before each line.
func (cs *children) start(name string, args ...string) (*child, error) {
	c := &child{name: name, args: args, done: make(chan struct{})}
	c.cmd = exec.Command(cs.bin, args...)
	c.cmd.SysProcAttr = childSysProcAttr()
	var logFile *os.File
	if cs.verbose {
		w := &prefixWriter{prefix: name + " | ", w: cs.term, mu: &cs.termMu}
		c.cmd.Stdout, c.cmd.Stderr = w, w
	} else {
		c.log = cs.logPath(name)
		f, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open the log of %s: %w", name, err)
		}
		fmt.Fprintf(f, "=== %s: stated %s\n", time.Now().UTC().Format(time.RFC3339Nano), strings.Join(args, " "))
		logFile = f
		c.cmd.Stdout, c.cmd.Stderr = f, f
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	err := c.cmd.Start()
	if logFile != nil {
		logFile.Close() // the child has its own descriptor
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cs.live[c] = struct{}{}
	go func() {
		c.err = c.cmd.Wait()
		cs.mu.Lock()
		delete(cs.live, c)
		cs.mu.Unlock()
		close(c.done)
	}()
	return c, nil
}

// exited reports whether the child has exited.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// childExitBound bounds the wait for a child to exit after a signal.
const childExitBound = 15 * time.Second

// kill sends SIGKILL to the child and waits until it has exited.
func (c *child) kill() error {
	if c.exited() {
		return nil
	}
	c.cmd.Process.Kill()
	select {
	case <-c.done:
		return nil
	case <-time.After(childExitBound):
		return fmt.Errorf("%s (pid %d) did not exit within %s of SIGKILL", c.name, c.cmd.Process.Pid, childExitBound)
	}
}

// stop asks the child to shut down with SIGTERM, and kills it if it has
// not exited within the bound.
func (c *child) stop() error {
	if c.exited() {
		return nil
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return nil
	case <-time.After(childExitBound):
		return c.kill()
	}
}

// killAll kills every live child and waits for each.
func (cs *children) killAll() error {
	cs.mu.Lock()
	var all []*child
	for c := range cs.live {
		all = append(all, c)
	}
	cs.mu.Unlock()
	var errs []error
	for _, c := range all {
		c.cmd.Process.Kill()
	}
	for _, c := range all {
		errs = append(errs, c.kill())
	}
	return errors.Join(errs...)
}

// run runs the binary with args to completion, as a user runs a command,
// and returns what it printed (stdout and stderr together). It is killed
// when ctx ends.
func (cs *children) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, cs.bin, args...)
	cmd.SysProcAttr = childSysProcAttr()
	cmd.WaitDelay = childExitBound
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		return out.String(), fmt.Errorf("stated %s: %w", args[0], context.Cause(ctx))
	}
	if err != nil {
		return out.String(), fmt.Errorf("stated %s: %w", args[0], err)
	}
	return out.String(), nil
}

// tail returns the last lines of the child's log, for an error message.
func (c *child) tail(lines int) string {
	if c.log == "" {
		return ""
	}
	b, err := os.ReadFile(c.log)
	if err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

// logged reports whether the child's output since its start contains s.
// Without a log file (-v) it cannot tell and says no.
func (c *child) logged(s string) bool {
	if c.log == "" {
		return false
	}
	b, err := os.ReadFile(c.log)
	if err != nil {
		return false
	}
	header := "stated " + strings.Join(c.args, " ")
	if i := bytes.LastIndex(b, []byte(header)); i >= 0 {
		b = b[i:]
	}
	return bytes.Contains(b, []byte(s))
}

// prefixWriter writes each line with a prefix, whole lines at a time.
type prefixWriter struct {
	prefix string
	w      io.Writer
	mu     *sync.Mutex
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		p.mu.Lock()
		_, err := fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf[:i])
		p.mu.Unlock()
		p.buf = p.buf[i+1:]
		if err != nil {
			return len(b), err
		}
	}
}
