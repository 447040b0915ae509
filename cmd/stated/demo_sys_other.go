//go:build !linux

package main

import "syscall"

// childSysProcAttr is the default elsewhere: the demo tracks its children
// and kills them on every way out, but a SIGKILL of the demo itself leaves
// them running (Linux's parent-death signal has no portable equivalent).
func childSysProcAttr() *syscall.SysProcAttr { return nil }
