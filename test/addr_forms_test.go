package test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	stated "github.com/statedhq/stated/sdk/go"
)

// socketForms are the ways to write the address of the unix socket
// DIR/s.sock, seen from the working directory DIR, that the README and
// the examples' docs show. Each must reach the daemon in the SDK, the CLI
// and every example.
func socketForms(dir string) []string {
	abs := filepath.Join(dir, "s.sock")
	up := filepath.Join("..", filepath.Base(dir), "s.sock")
	return []string{
		"s.sock", "./s.sock", up,
		"unix:s.sock", "unix:./s.sock", "unix:" + abs,
		"unix://./s.sock", "unix://" + up,
		abs, "unix://" + abs,
	}
}

// badSocketForm is refused everywhere, with a message that says how to
// write a relative path: gRPC reads what follows unix:// up to the next
// slash as an authority, not as a file.
const badSocketForm = "unix://s.sock"

// TestEverySocketAddressFormWorksInTheSDKTheCLIAndTheExamples runs the
// SDK, `stated kv`, examples/counter, examples/sessionizer and
// examples/userstore with the forms of a relative, and an absolute,
// socket address.
func TestEverySocketAddressFormWorksInTheSDKTheCLIAndTheExamples(t *testing.T) {
	skipLong(t) // processes only: what runs in this process is race-tested in its own package
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bin, counter, sessionizer, userstore := statedBinary(t), counterBinary(t), sessionizerBinary(t), userstoreBinary(t)
	n := newNode(t)
	n.start(ctx)
	dir := filepath.Dir(n.socket)
	// Relative addresses are read against the working directory; the
	// CLI and the examples run there, and so does this process.
	t.Chdir(dir)

	t.Run("sdk", func(t *testing.T) {
		for i, form := range socketForms(dir) {
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			c, err := stated.Dial(dctx, form, stated.WithBlock())
			if err != nil {
				cancel()
				t.Errorf("Dial(%q): %v", form, err)
				continue
			}
			key := []byte(fmt.Sprint("sdk-", i))
			if _, err := c.Txn().Put("forms", key, []byte(form)).Commit(dctx); err != nil {
				t.Errorf("%q: commit: %v", form, err)
			} else if it, found, err := c.Get(dctx, "forms", key); err != nil || !found || string(it.Value) != form {
				t.Errorf("%q: read back %q (found %v), %v", form, it.Value, found, err)
			}
			c.Close()
			cancel()
		}
		if c, err := stated.Dial(ctx, badSocketForm); err == nil || !strings.Contains(err.Error(), "unix:s.sock") {
			if c != nil {
				c.Close()
			}
			t.Errorf("Dial(%q) = %v; want an error saying to write unix:s.sock", badSocketForm, err)
		}
	})

	run := func(ctx context.Context, name string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "STATED_ADDR=")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	t.Run("cli", func(t *testing.T) {
		for i, form := range socketForms(dir) {
			key := fmt.Sprint("cli-", i)
			if out, err := run(ctx, bin, "kv", "put", "forms", key, form, "--addr", form); err != nil {
				t.Errorf("stated kv put --addr %s: %v\n%s", form, err, out)
				continue
			}
			if out, err := run(ctx, bin, "kv", "get", "forms", key, "--addr", form); err != nil || strings.TrimSpace(out) != form {
				t.Errorf("stated kv get --addr %s = %q, %v; want %q", form, out, err, form)
			}
		}
		out, err := run(ctx, bin, "kv", "get", "forms", "cli-0", "--addr", badSocketForm)
		if err == nil || !strings.Contains(out, "unix:s.sock") {
			t.Errorf("stated kv get --addr %s = %q, %v; want a failure saying to write unix:s.sock", badSocketForm, out, err)
		}
	})

	// The examples run a short kfake demo each; three relative forms and
	// the refused one cover them.
	exampleForms := []string{"./s.sock", "unix:s.sock", "unix://./s.sock"}
	examples := []struct {
		name string
		argv func(form string, i int) []string
		want string // in the output of a run that worked
	}{
		{"counter", func(form string, i int) []string {
			return []string{counter, "--stated", form, "--demo-records", "40"}
		}, "\t"},
		{"sessionizer", func(form string, i int) []string {
			return []string{sessionizer, "--stated", form, "--demo-records", "40", "--seed", "1"}
		}, "summary:"},
	}
	t.Run("userstore", func(t *testing.T) {
		for i, form := range exampleForms {
			app := startUserstore(ctx, t, fmt.Sprint("userstore-", i), form)
			app.waitReady(ctx, 200)
			app.expect(ctx, 200, "PUT", fmt.Sprint("/users/forms/f", i), []byte(form))
			if r := app.expect(ctx, 200, "GET", fmt.Sprint("/users/forms/f", i), nil); string(r.body) != form {
				t.Errorf("userstore --stated %s read back %q", form, r.body)
			}
		}
		out, err := run(ctx, userstore, "--stated", badSocketForm, "--listen", "127.0.0.1:0")
		if err == nil || !strings.Contains(out, "unix:s.sock") {
			t.Errorf("userstore --stated %s: %v; want a failure saying to write unix:s.sock\n%s", badSocketForm, err, out)
		}
	})
	for _, ex := range examples {
		t.Run(ex.name, func(t *testing.T) {
			for i, form := range exampleForms {
				argv := ex.argv(form, i)
				ectx, cancel := context.WithTimeout(ctx, time.Minute)
				out, err := run(ectx, argv[0], argv[1:]...)
				cancel()
				if err != nil || !strings.Contains(out, ex.want) {
					t.Errorf("%s --stated %s: %v\n%s", ex.name, form, err, out)
				}
			}
			argv := ex.argv(badSocketForm, 99)
			ectx, cancel := context.WithTimeout(ctx, time.Minute)
			out, err := run(ectx, argv[0], argv[1:]...)
			cancel()
			if err == nil || !strings.Contains(out, "unix:s.sock") {
				t.Errorf("%s --stated %s: %v; want a failure saying to write unix:s.sock\n%s", ex.name, badSocketForm, err, out)
			}
		})
	}
}
