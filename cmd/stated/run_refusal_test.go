package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestARunRefusedForItsTokenFileCreatesNoDirectories: a malformed token
// file stops `stated run` (README, Authorization), and the refusal leaves
// no directory behind, the parents of --data-dir included (it removed the
// data dir it made, not its parents).
func TestARunRefusedForItsTokenFileCreatesNoDirectories(t *testing.T) {
	root := t.TempDir()
	tokens := filepath.Join(root, "tokens.yaml")
	if err := os.WriteFile(tokens, []byte("- {name: a, sha256: nothex, namespaces: [ns], operations: [read]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(root, "var", "lib", "stated")
	r := cliRun(t, nil, "run", "--data-dir", dataDir, "--socket", shortSocket(t), "--grpc-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--token-file", tokens)
	if r.code == 0 || !strings.Contains(r.stderr, "sha256") {
		t.Fatalf("exit %d, stderr %q; want a refusal naming sha256", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(root, "var")); !os.IsNotExist(err) {
		t.Errorf("the refused run left %s behind (exit %d, %q)", filepath.Join(root, "var"), r.code, strings.TrimSpace(r.stderr))
	}
}
