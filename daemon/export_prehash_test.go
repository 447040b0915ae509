package daemon

import "context"

// PrehashNow runs one pass of d's background hashing of its tables (what
// a follower does every checkpoint interval) and waits for it.
func PrehashNow(ctx context.Context, d *Daemon) { d.ckpt.prehash(ctx) }
