package main

import "testing"

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
	checkRefusedNamingSource(t, []sourceCase{
		{"flag not a size", nil, []string{"--cache-size", "lots"}, `invalid argument "lots" for "--cache-size"`},
		{"flag below the minimum", nil, []string{"--cache-size", "512KiB"}, `invalid argument "512KiB" for "--cache-size"`},
		{"env", map[string]string{"STATED_CACHE_SIZE": "1.5GiB"}, nil, `STATED_CACHE_SIZE: value "1.5GiB"`},
		{"file", nil, []string{"--config", writeConfig(t, "cache-size: 100\n")}, `key "cache-size": value "100"`},
	})
}

func TestPrintConfigShowsTheCacheSizeAndItsSource(t *testing.T) {
	t.Parallel()
	checkPrintedWithSource(t, "cache-size", []sourceCase{
		{"default", nil, nil, `cache-size: "256MiB"  # default`},
		{"env", map[string]string{"STATED_CACHE_SIZE": "64MiB"}, nil, `cache-size: "64MiB"  # env STATED_CACHE_SIZE`},
		{"file", nil, []string{"--config", writeConfig(t, "cache-size: 512MB\n")}, `cache-size: "512MB"  # file`},
		{"flag over env", map[string]string{"STATED_CACHE_SIZE": "64MiB"}, []string{"--cache-size", "1GiB"}, `cache-size: "1GiB"  # flag`},
	})
	checkPrintedConfigReadsBack(t, "cache-size", "96MiB", `cache-size: "96MiB"  # file`)
}

func TestMaxInflightRequestBytesRefusesABadSizeNamingWhereItCameFrom(t *testing.T) {
	t.Parallel()
	checkRefusedNamingSource(t, []sourceCase{
		{"flag not a size", nil, []string{"--max-inflight-request-bytes", "lots"}, `invalid argument "lots" for "--max-inflight-request-bytes"`},
		{"flag below the minimum", nil, []string{"--max-inflight-request-bytes", "512KiB"}, `invalid argument "512KiB" for "--max-inflight-request-bytes"`},
		{"env", map[string]string{"STATED_MAX_INFLIGHT_REQUEST_BYTES": "1.5GiB"}, nil, `STATED_MAX_INFLIGHT_REQUEST_BYTES: value "1.5GiB"`},
		{"file", nil, []string{"--config", writeConfig(t, "max-inflight-request-bytes: 100\n")}, `key "max-inflight-request-bytes": value "100"`},
	})
	checkPrintedWithSource(t, "max-inflight-request-bytes", []sourceCase{
		{"default", nil, nil, `max-inflight-request-bytes: "128MiB"  # default`},
		{"flag", nil, []string{"--max-inflight-request-bytes", "1GiB"}, `max-inflight-request-bytes: "1GiB"  # flag`},
	})
}

func TestMinFreeDiskTakesASizeOrZeroNamingWhereABadOneCameFrom(t *testing.T) {
	t.Parallel()
	checkRefusedNamingSource(t, []sourceCase{
		{"flag not a size", nil, []string{"--min-free-disk", "some"}, `invalid argument "some" for "--min-free-disk"`},
		{"flag negative", nil, []string{"--min-free-disk", "-1MiB"}, `invalid argument "-1MiB" for "--min-free-disk"`},
		{"env", map[string]string{"STATED_MIN_FREE_DISK": "1.5GiB"}, nil, `STATED_MIN_FREE_DISK: value "1.5GiB"`},
		{"file", nil, []string{"--config", writeConfig(t, "min-free-disk: lots\n")}, `key "min-free-disk": value "lots"`},
	})
	checkPrintedWithSource(t, "min-free-disk", []sourceCase{
		{"default", nil, nil, `min-free-disk: "128MiB"  # default`},
		{"off", nil, []string{"--min-free-disk", "0"}, `min-free-disk: "0"  # flag`},
		{"env", map[string]string{"STATED_MIN_FREE_DISK": "1GiB"}, nil, `min-free-disk: "1GiB"  # env STATED_MIN_FREE_DISK`},
		{"file", nil, []string{"--config", writeConfig(t, "min-free-disk: 512MB\n")}, `min-free-disk: "512MB"  # file`},
	})
}

func TestWindowCacheSizeTakesASizeOrZeroNamingWhereABadOneCameFrom(t *testing.T) {
	t.Parallel()
	checkRefusedNamingSource(t, []sourceCase{
		{"flag not a size", nil, []string{"--window-cache-size", "big"}, `invalid argument "big" for "--window-cache-size"`},
		{"flag negative", nil, []string{"--window-cache-size", "-64MiB"}, `invalid argument "-64MiB" for "--window-cache-size"`},
		{"env", map[string]string{"STATED_WINDOW_CACHE_SIZE": "0.5GiB"}, nil, `STATED_WINDOW_CACHE_SIZE: value "0.5GiB"`},
		{"file", nil, []string{"--config", writeConfig(t, "window-cache-size: lots\n")}, `key "window-cache-size": value "lots"`},
	})
	checkPrintedWithSource(t, "window-cache-size", []sourceCase{
		{"default", nil, nil, `window-cache-size: "128MiB"  # default`},
		{"off", nil, []string{"--window-cache-size", "0"}, `window-cache-size: "0"  # flag`},
		{"env", map[string]string{"STATED_WINDOW_CACHE_SIZE": "1GiB"}, nil, `window-cache-size: "1GiB"  # env STATED_WINDOW_CACHE_SIZE`},
		{"file", nil, []string{"--config", writeConfig(t, "window-cache-size: 512MB\n")}, `window-cache-size: "512MB"  # file`},
	})
	checkPrintedConfigReadsBack(t, "window-cache-size", "32MiB", `window-cache-size: "32MiB"  # file`)
}
