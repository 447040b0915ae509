package daemon_test

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
)

// TestUnixSocketHasTheConfiguredModeWhateverTheUmask: the socket is 0600
// by default and SocketMode widens it, even under a umask that would
// leave it open to everyone (0) or closed to the group (077).
func TestUnixSocketHasTheConfiguredModeWhateverTheUmask(t *testing.T) {
	// The umask is per process: this test changes it, so it does not run
	// in parallel with tests that create files.
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
	for _, tc := range []struct {
		name  string
		umask int
		mode  os.FileMode
		want  os.FileMode
	}{
		{"default under umask 0", 0, 0, 0o600},
		{"0660 under umask 077", 0o077, 0o660, 0o660},
		{"0666 under umask 022", 0o022, 0o666, 0o666},
	} {
		t.Run(tc.name, func(t *testing.T) {
			syscall.Umask(tc.umask)
			d := daemontest.Start(t, func(c *daemon.Config) { c.SocketMode = tc.mode })
			fi, err := os.Stat(d.SocketPath())
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != tc.want {
				t.Errorf("socket mode %v, want a socket with %v", fi.Mode(), tc.want)
			}
		})
	}
}

func TestSocketModeBeyondPermissionBitsIsRefused(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.SocketMode = 0o1777
	_, err := daemon.Start(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "SocketMode") {
		t.Fatalf("Start = %v, want an error naming SocketMode", err)
	}
	if _, err := os.Stat(cfg.SocketPath); !os.IsNotExist(err) {
		t.Errorf("socket created anyway: %v", err)
	}
}
