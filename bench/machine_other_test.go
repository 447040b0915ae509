//go:build !linux

package bench

import (
	"os"
	"time"
)

// syncData is fsync where there is no fdatasync(2).
func syncData(f *os.File) error { return f.Sync() }

// processCPU is not measured here.
func processCPU(int) (time.Duration, bool) { return 0, false }
