package daemon

// SetCheckpointCutHook lets a test replace the local checkpoint directory
// of an epoch before the coordinator reads it. Set it before the first
// checkpoint.
func SetCheckpointCutHook(d *Daemon, hook func(epoch uint64, dir string) string) {
	d.ckpt.cutHook = hook
}

// ChangelogCapturing reports whether d's state machine captures the
// entries it applies for the next changelog segment.
func ChangelogCapturing(d *Daemon) bool { return d.ckpt.capturing.Load() }
