package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseByteSizeReadsDecimalAndBinaryUnits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"64MiB", 64 << 20}, {"512MB", 512e6}, {"1GiB", 1 << 30}, {"1gb", 1e9},
		{"2048KiB", 2 << 20}, {"3000kb", 3e6}, {"1048576", 1 << 20}, {"1048576B", 1 << 20}, {" 128 MiB ", 128 << 20},
	} {
		got, err := parseByteSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
		if back, err := parseByteSize(formatByteSize(got)); err != nil || back != got {
			t.Errorf("formatByteSize(%d) = %q reads back as %d, %v", got, formatByteSize(got), back, err)
		}
	}
	for _, bad := range []string{"", "MiB", "12x", "1.5GiB", "-1MiB", "99999999999TiB"} {
		if n, err := parseByteSize(bad); err == nil {
			t.Errorf("parseByteSize(%q) = %d, want an error", bad, n)
		}
	}
}

func TestCacheSizeRefusesABadSizeNamingWhereItCameFrom(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		msg  string
	}{
		{"flag not a size", nil, []string{"--cache-size", "lots"}, `invalid argument "lots" for "--cache-size"`},
		{"flag below the minimum", nil, []string{"--cache-size", "512KiB"}, `invalid argument "512KiB" for "--cache-size"`},
		{"env", map[string]string{"STATED_CACHE_SIZE": "1.5GiB"}, nil, `STATED_CACHE_SIZE: value "1.5GiB"`},
		{"file", nil, []string{"--config", writeConfig(t, "cache-size: 100\n")}, `key "cache-size": value "100"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			r := cliRun(t, tc.env, append([]string{"run", "--data-dir", dataDir}, tc.args...)...)
			if r.code != exitUsage || !strings.Contains(r.stderr, tc.msg) {
				t.Errorf("exit %d, stderr %q; want %d and %q", r.code, r.stderr, exitUsage, tc.msg)
			}
			if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
				t.Errorf("the data dir was created: %v", err)
			}
		})
	}
}

func TestPrintConfigShowsTheCacheSizeAndItsSource(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, nil, `cache-size: "256MiB"  # default`},
		{map[string]string{"STATED_CACHE_SIZE": "64MiB"}, nil, `cache-size: "64MiB"  # env STATED_CACHE_SIZE`},
		{nil, []string{"--config", writeConfig(t, "cache-size: 512MB\n")}, `cache-size: "512MB"  # file`},
		{map[string]string{"STATED_CACHE_SIZE": "64MiB"}, []string{"--cache-size", "1GiB"}, `cache-size: "1GiB"  # flag`},
	} {
		r := cliRun(t, tc.env, append([]string{"run", "--print-config"}, tc.args...)...)
		if r.code != exitOK {
			t.Fatalf("%v %v: exit %d, stderr %q", tc.env, tc.args, r.code, r.stderr)
		}
		if got := printedLine(t, r.stdout, "cache-size"); got != tc.want {
			t.Errorf("%v %v: %q, want %q", tc.env, tc.args, got, tc.want)
		}
	}
	// What --print-config prints is a config file run accepts.
	r := cliRun(t, nil, "run", "--print-config", "--cache-size", "96MiB")
	file := writeConfig(t, r.stdout)
	r = cliRun(t, nil, "run", "--print-config", "--config", file)
	if got := printedLine(t, r.stdout, "cache-size"); r.code != exitOK || got != `cache-size: "96MiB"  # file` {
		t.Errorf("read back: exit %d, %q, stderr %q", r.code, got, r.stderr)
	}
}
