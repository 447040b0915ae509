//go:build unix

package uploader

import (
	"os"
	"syscall"
)

// inode returns fi's inode number.
func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino)
	}
	return 0
}
