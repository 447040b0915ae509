//go:build linux

package daemontest

import (
	"os/exec"
	"syscall"
)

// DieWithParent has the kernel SIGKILL cmd's process when the process
// that started it dies, so that a test killed by -timeout (or a panic)
// leaves no `stated run` behind holding its ports and data dirs. It
// returns cmd. Pdeathsig follows the thread that started the child; the
// Go runtime ends a thread only when a goroutine exits with it locked.
func DieWithParent(cmd *exec.Cmd) *exec.Cmd {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	return cmd
}
