package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/internal/testenv"
)

// processesWithArg returns the pids and command lines of the processes
// other than this one whose arguments contain s.
func processesWithArg(t *testing.T, s string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("list processes: %v", err)
	}
	var found []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue // it exited meanwhile
		}
		if cmdline := string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})); strings.Contains(cmdline, s) {
			found = append(found, fmt.Sprintf("%d: %s", pid, cmdline))
		}
	}
	return found
}

// freeBasePort returns the first of demoPorts consecutive ports that are
// free on 127.0.0.1, below the kernel's ephemeral range, where the ports
// other tests pick with :0 come from.
func freeBasePort(t *testing.T) int {
	t.Helper()
	for range 100 {
		base := 20000 + rand.IntN(10000)
		if checkPorts(base) == nil {
			return base
		}
	}
	t.Fatal("found no free range of ports")
	return 0
}

func TestDemoRefusesABusyPortNamingItAndTheFlagAndStartsNothing(t *testing.T) {
	t.Parallel()
	base := freeBasePort(t)
	busy := base + 3 // n2's Raft port
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(busy)))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := filepath.Join(t.TempDir(), "demo")
	r := cliRun(t, nil, "demo", "--base-port", strconv.Itoa(base), "--dir", dir)
	if r.code == 0 {
		t.Fatalf("exit 0 with port %d taken; stdout %q", busy, r.stdout)
	}
	if want := fmt.Sprintf("port 127.0.0.1:%d is in use", busy); !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "--base-port") {
		t.Errorf("stderr %q: want %q and the flag --base-port", r.stderr, want)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("--dir %s was created (%v); a refused demo changes nothing", dir, err)
	}
	if left := processesWithArg(t, dir); len(left) > 0 {
		t.Errorf("processes left running:\n%s", strings.Join(left, "\n"))
	}
}

func TestDemoRefusesADirThatIsAFileOrNotEmpty(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "data"), []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, dir, want string }{
		{"a file", file, "--dir " + file + ": not a directory; give an empty or new directory"},
		{"a non-empty directory", full, "--dir " + full + ": not empty (1 entries, e.g. data); give an empty or new directory"},
		{"a path under a file", filepath.Join(file, "sub"), "--dir " + filepath.Join(file, "sub") + ": stat " + filepath.Join(file, "sub") + ": not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := cliRun(t, nil, "demo", "--dir", tc.dir, "--base-port", strconv.Itoa(freeBasePort(t)))
			if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want non-zero and %q", r.code, r.stderr, tc.want)
			}
		})
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep me" {
		t.Errorf("the file given as --dir changed: %q, %v", b, err)
	}
	if entries, err := os.ReadDir(full); err != nil || len(entries) != 1 {
		t.Errorf("the non-empty dir changed: %v, %v", entries, err)
	}
}

func TestDemoRefusesBadFlagsNamingThem(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--records", "10"}, "--records 10: at least 100"},
		{[]string{"--keys", "0"}, "--keys 0: from 1 to --records"},
		{[]string{"--records", "100", "--keys", "101"}, "--keys 101: from 1 to --records (100)"},
		{[]string{"--base-port", "80"}, "--base-port 80: from 1024"},
		{[]string{"--base-port", "65530"}, "--base-port 65530: from 1024 to 65529"},
		{[]string{"--addr", "x.sock"}, "--addr is for client commands"},
	} {
		r := cliRun(t, nil, append([]string{"demo"}, tc.args...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("demo %v: exit %d, stderr %q; want %d and %q", tc.args, r.code, r.stderr, exitUsage, tc.want)
		}
	}
}

// buildStated builds this package's binary into dir.
func buildStated(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "stated")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build stated: %v\n%s", err, out)
	}
	return bin
}

// TestDemoAsAProcess runs `stated demo` as a user does: the demo passes
// end to end, and a demo stopped by a signal leaves no child running.
// The demo's processes are not race builds and take most of a minute, so
// it is skipped under -race and -short.
func TestDemoAsAProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a three-node cluster, Kafka and a processor for up to a minute; skipped with -short")
	}
	if testenv.Race {
		t.Skip("the demo's processes are not race builds; the demo's code runs under -race in the refusal tests")
	}
	bin := buildStated(t, t.TempDir())

	t.Run("CountsEveryRecordExactlyThroughCrashesAndATotalLoss", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "demo")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "demo", "--records", "3000", "--keys", "30", "--base-port", strconv.Itoa(freeBasePort(t)), "--dir", dir)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		err := cmd.Run()
		t.Logf("stated demo took %s:\n%s", time.Since(start).Round(100*time.Millisecond), stdout.String())
		if err != nil {
			t.Fatalf("stated demo: %v\nstderr:\n%s", err, stderr.String())
		}
		for _, want := range []string{
			"(the leader) and the processor with SIGKILL",
			"counts exact after the crash: 3000 records over 30 keys on n1 n2 n3",
			"total loss: killed n1 n2 n3 and the processor with SIGKILL",
			"$ stated recovery --from file://" + dir + "/bucket",
			"files: all present and intact",
			"Kafka will replay ",
			"$ stated restore --from file://" + dir + "/bucket --data-dir " + dir + "/n1 --node-id n1",
			"restored checkpoint ",
			"cluster restored: 3 members",
			"counts exact after the restore: 3750 records over 30 keys on n1 n2 n3",
			"demo passed",
		} {
			if !strings.Contains(stdout.String(), want) {
				t.Errorf("stdout lacks %q", want)
			}
		}
		if left := processesWithArg(t, dir); len(left) > 0 {
			t.Errorf("processes left running:\n%s", strings.Join(left, "\n"))
		}
		for _, f := range []string{"logs/n1.log", "logs/processor.log", "bucket"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Errorf("the given --dir is kept, but: %v", err)
			}
		}
	})

	for _, tc := range []struct {
		name string
		sig  syscall.Signal
	}{{"SIGINT", syscall.SIGINT}, {"SIGKILL", syscall.SIGKILL}} {
		sig := tc.sig
		t.Run("StoppedBy"+tc.name+"LeavesNoChildRunning", func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "demo")
			cmd := exec.Command(bin, "demo", "--base-port", strconv.Itoa(freeBasePort(t)), "--dir", dir)
			var stdout, stderr daemontest.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			defer func() {
				cmd.Process.Kill()
				<-done
			}()
			for deadline := time.Now().Add(time.Minute); !strings.Contains(stdout.String(), "n2 up"); {
				if time.Now().After(deadline) {
					t.Fatalf("the demo did not start n2 within a minute; stdout %q stderr %q", stdout.String(), stderr.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if running := processesWithArg(t, dir); len(running) < 2 {
				t.Fatalf("want n1 and n2 running before the signal, found:\n%s", strings.Join(running, "\n"))
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-done:
				done <- nil // for the deferred wait
			case <-time.After(30 * time.Second):
				t.Fatalf("the demo did not exit within 30s of %v", sig)
			}
			if sig == syscall.SIGINT {
				if code := cmd.ProcessState.ExitCode(); code != exitFailed || !strings.Contains(stderr.String(), "interrupted by a signal") {
					t.Errorf("exit %d, stderr %q; want %d and the interruption", code, stderr.String(), exitFailed)
				}
			}
			// The demo waits for its children after SIGINT; after SIGKILL
			// the kernel kills them (the parent-death signal), a moment
			// later.
			var left []string
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if left = processesWithArg(t, dir); len(left) == 0 || sig == syscall.SIGINT || time.Now().After(deadline) {
					break
				}
			}
			if len(left) > 0 {
				t.Errorf("processes left running after %v of the demo:\n%s", sig, strings.Join(left, "\n"))
			}
		})
	}
}

// A port taken between the demo's check and a node's bind ends the node;
// the demo then names the port and the flag, as the check does.
func TestDemoNamesThePortANodeCouldNotBind(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := newDemo(demoOptions{basePort: 7520}, dir, "stated", &bytes.Buffer{}, &bytes.Buffer{})
	p := &child{name: "n2", args: []string{"run", "--node-id", "n2"}, log: filepath.Join(dir, "n2.log")}
	log := "=== 2026-01-01T00:00:00Z: stated run --node-id n2\n" +
		"stated: daemon: open store: raftstore: raft transport on 127.0.0.1:7523: listen tcp 127.0.0.1:7523: bind: address already in use\n"
	if err := os.WriteFile(p.log, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	err := d.exitedError(p)
	if err == nil || !strings.Contains(err.Error(), "port 127.0.0.1:7523 is in use") || !strings.Contains(err.Error(), "--base-port") {
		t.Errorf("got %v; want the port 127.0.0.1:7523 and --base-port named", err)
	}
}
