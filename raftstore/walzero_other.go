//go:build !linux

package raftstore

import "os"

// syncData syncs f: fsync(2) where there is no fdatasync(2).
func syncData(f *os.File) error { return f.Sync() }
