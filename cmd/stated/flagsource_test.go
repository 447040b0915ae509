package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sourceCase is a run setting given one way (a flag, a STATED_ variable
// or a config file) and what stated run must say of it.
type sourceCase struct {
	name string
	env  map[string]string
	args []string
	want string
}

// checkRefusedNamingSource runs `stated run` with each case: it must exit
// 64 with stderr holding the case's want and every also, and create no
// data dir.
func checkRefusedNamingSource(t *testing.T, cases []sourceCase, also ...string) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			r := cliRun(t, tc.env, append([]string{"run", "--data-dir", dataDir}, tc.args...)...)
			ok := r.code == exitUsage && strings.Contains(r.stderr, tc.want)
			for _, a := range also {
				ok = ok && strings.Contains(r.stderr, a)
			}
			if !ok {
				t.Errorf("exit %d, stderr %q; want %d, %q and %q", r.code, r.stderr, exitUsage, tc.want, also)
			}
			if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
				t.Errorf("the data dir was created: %v", err)
			}
		})
	}
}

// checkPrintedWithSource runs `stated run --print-config` with each case:
// key's line must be the case's want.
func checkPrintedWithSource(t *testing.T, key string, cases []sourceCase) {
	t.Helper()
	for _, tc := range cases {
		r := cliRun(t, tc.env, append([]string{"run", "--print-config"}, tc.args...)...)
		if r.code != exitOK {
			t.Fatalf("%v %v: exit %d, stderr %q", tc.env, tc.args, r.code, r.stderr)
		}
		if got := printedLine(t, r.stdout, key); got != tc.want {
			t.Errorf("%v %v: %q, want %q", tc.env, tc.args, got, tc.want)
		}
	}
}

// checkPrintedConfigReadsBack: what `stated run --print-config --key value`
// prints is a config file run accepts, giving key that value.
func checkPrintedConfigReadsBack(t *testing.T, key, value, want string) {
	t.Helper()
	r := cliRun(t, nil, "run", "--print-config", "--"+key, value)
	file := writeConfig(t, r.stdout)
	r = cliRun(t, nil, "run", "--print-config", "--config", file)
	if got := printedLine(t, r.stdout, key); r.code != exitOK || got != want {
		t.Errorf("read back: exit %d, %q, stderr %q", r.code, got, r.stderr)
	}
}
