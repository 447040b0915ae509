package main

import (
	"strings"
	"testing"

	"github.com/statedhq/stated/daemon/daemontest"
)

// README.md, Limits: a namespace is "1..256 bytes, valid UTF-8, no control
// characters", refused with "a message that names the field
// (mutations[3].key: empty)"; cmd/stated/doc.go: exit 1 for "an invalid
// argument". `stated windows define` checks its NS argument ("NS: is not
// valid UTF-8"), but the kv commands handed the namespace to the Go proto
// marshaller, which failed before anything was sent: the user read
// "Internal: grpc: error while marshaling: string field contains invalid
// UTF-8", which names neither the field nor the argument.
func TestKVWithANamespaceThatIsNotUTF8NamesTheNamespace(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	for _, args := range [][]string{
		{"kv", "put", "s\xffc", "k", "v"},
		{"kv", "get", "s\xffc", "k"},
	} {
		r := client(t, d, args...)
		if r.code != 1 && r.code != 64 {
			t.Errorf("%q: exit %d, want 1 (invalid argument) or 64 (command line); stderr %q", args, r.code, r.stderr)
		}
		if !strings.Contains(r.stderr, "namespace") && !strings.Contains(r.stderr, "NS") {
			t.Errorf("%q: stderr %q names neither the namespace field nor the NS argument", args, r.stderr)
		}
		if strings.Contains(r.stderr, "Internal") {
			t.Errorf("%q: stderr %q reports an internal error for bad input", args, r.stderr)
		}
	}
	if r := client(t, d, "kv", "scan", "s\xffc"); r.code == 0 {
		t.Errorf("kv scan of an invalid UTF-8 namespace succeeded: %q", r.stdout)
	}
}
