//go:build linux

package main

import "syscall"

// childSysProcAttr puts each child of the demo in a process group of its
// own, so that a Ctrl-C on the terminal reaches the demo only (which then
// kills its children itself, in order), and has the kernel SIGKILL the
// child should the demo die without cleaning up (SIGKILL of the demo).
// Pdeathsig follows the thread that started the child; the Go runtime
// does not end its threads while the program runs, except for goroutines
// that lock one, which the demo does not use.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
