//go:build !unix

package uploader

import "os"

// inode returns zero where the platform has no inode numbers; the
// checksum cache then relies on name, size and mtime.
func inode(os.FileInfo) uint64 { return 0 }
