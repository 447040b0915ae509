package daemon_test

import (
	"testing"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/raftstore/fsm"
)

func TestStartOpensTheStateWithTheConfiguredBlockCache(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		size int64
		want int64
	}{
		{"configured", 3 << 20, 3 << 20},
		{"zero keeps the default", 0, fsm.DefaultCacheSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.CacheSize = tc.size
			d, err := daemon.Start(testContext(t), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if got := d.Store().CacheMaxSize(); got != tc.want {
				t.Errorf("the state's block cache is %d bytes, want %d", got, tc.want)
			}
		})
	}
}

func TestStartOpensTheStateWithTheConfiguredWindowCache(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		size int64
	}{
		{"default", daemon.DefaultConfig().WindowCacheSize},
		{"configured", 8 << 20},
		{"off", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.WindowCacheSize = tc.size
			d, err := daemon.Start(testContext(t), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if got := d.Store().WindowCacheMaxSize(); got != tc.size {
				t.Errorf("the state machine's window cache may take %d bytes, want %d", got, tc.size)
			}
		})
	}
	if got := daemon.DefaultConfig().WindowCacheSize; got != fsm.DefaultWindowCacheSize {
		t.Errorf("DefaultConfig's WindowCacheSize is %d, want fsm.DefaultWindowCacheSize (%d)", got, fsm.DefaultWindowCacheSize)
	}
}
