//go:build unix

package raftstore

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// lockFile takes an exclusive flock of the file at path, created if
// missing, and returns its release. The file is neither truncated nor
// written, so that taking the lock changes nothing on disk once the file
// exists (a refused start must leave the data dir as it was). A flock
// belongs to its open file: a second lockFile of one path fails in the
// same process too.
//
// A refused start or restore that created the file removes it again; a
// lock taken on the file it opened just before the removal is on a file
// no longer at path, so the lock is taken only once the file locked is
// still the one at path.
func lockFile(path string) (func(), error) {
	for range 10 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			return nil, err
		}
		held, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, err
		}
		if now, err := os.Stat(path); err == nil && os.SameFile(held, now) {
			return func() { f.Close() }, nil
		}
		f.Close() // removed, or replaced, meanwhile: lock the file there now
	}
	return nil, fmt.Errorf("%s was removed or replaced at every attempt to lock it", path)
}
