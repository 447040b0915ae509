package daemon

import (
	"context"
	"errors"
	"time"

	"github.com/statedhq/stated/raftstore"
)

// windowTickInterval is how often the leader checks whether a window
// namespace's watermark would move by its clock alone (a source went
// idle), and proposes a window tick when one would, so that windows close
// while their sources are silent.
const windowTickInterval = time.Second

// windowTickLoop runs beside the expiry loop: on the leader, every
// windowTickInterval, it proposes a window tick when one is due. The tick
// carries the leader's clock in the entry, so every replica closes the
// same windows.
func (d *Daemon) windowTickLoop(ctx context.Context) {
	t := time.NewTicker(windowTickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !d.store.IsLeader() {
			continue
		}
		_, err := d.store.TickWindows(ctx)
		switch {
		case err == nil:
		case ctx.Err() != nil, errors.Is(err, raftstore.ErrNotLeader), errors.Is(err, raftstore.ErrClosed):
			// Leadership moved or the daemon is closing: nothing to report.
		default:
			d.logger.Warn("daemon: window tick", "error", err)
		}
	}
}
