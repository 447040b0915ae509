//go:build !linux

package daemontest

import "os/exec"

// DieWithParent returns cmd: only Linux kills a child with its parent.
func DieWithParent(cmd *exec.Cmd) *exec.Cmd { return cmd }
