package bench

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncData writes f's data out with fdatasync(2), as the Raft log's
// zeroed segments are synced.
func syncData(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
