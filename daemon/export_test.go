package daemon

import "context"

// SetCheckpointCutHook lets a test replace the local checkpoint directory
// of an epoch before the coordinator reads it. Set it before the first
// checkpoint.
func SetCheckpointCutHook(d *Daemon, hook func(epoch uint64, dir string) string) {
	d.ckpt.cutHook = hook
}

// ChangelogCapturing reports whether d's state machine captures the
// entries it applies for the next changelog segment.
func ChangelogCapturing(d *Daemon) bool { return d.ckpt.capturing.Load() }

// SetCheckpointUploadHook has hook run, with the checkpoint's context,
// as a table checkpoint's upload is about to start. Set it before the
// first checkpoint.
func SetCheckpointUploadHook(d *Daemon, hook func(ctx context.Context, epoch uint64)) {
	d.ckpt.uploadHook = hook
}

// SetCheckpointCountHook has hook run as the count of a table
// checkpoint's state starts, with the count's context; the count's time
// includes the hook's. Set it before the first checkpoint.
func SetCheckpointCountHook(d *Daemon, hook func(ctx context.Context, epoch uint64)) {
	d.ckpt.countHook = hook
}
