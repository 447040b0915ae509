package uploader

import (
	"os"
	"syscall"
)

// inode returns fi's inode number, or zero where the platform has none.
func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino)
	}
	return 0
}
