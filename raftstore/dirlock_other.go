//go:build !unix

package raftstore

import "github.com/cockroachdb/pebble/v2/vfs"

// lockFile takes Pebble's lock of the file at path and returns its
// release.
func lockFile(path string) (func(), error) {
	l, err := vfs.Default.Lock(path)
	if err != nil {
		return nil, err
	}
	return func() { l.Close() }, nil
}
