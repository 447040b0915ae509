//go:build unix

package raftstore

import (
	"os"

	"golang.org/x/sys/unix"
)

// lockFile takes an exclusive flock of the file at path, created if
// missing, and returns its release. The file is neither truncated nor
// written, so that taking the lock changes nothing on disk once the file
// exists (a refused start must leave the data dir as it was). A flock
// belongs to its open file: a second lockFile of one path fails in the
// same process too.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}
