package authz_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon/authz"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestTheHashOfAnEmptyTokenIsRefusedAndABlankBearerIsNoToken: the README's
// recipe, `printf %s "$TOKEN" | sha256sum`, with TOKEN unset yields the
// SHA-256 of the empty string; a grant holding it is refused, naming the
// grant and the field (it let a call with a blank "Bearer " header in).
// A blank bearer is no token, whatever the grants.
func TestTheHashOfAnEmptyTokenIsRefusedAndABlankBearerIsNoToken(t *testing.T) {
	_, err := authz.Parse([]byte("- {name: ops, sha256: " + hash("") + ", namespaces: [\"*\"], operations: [read, write, admin]}\n"))
	if err == nil || !strings.Contains(err.Error(), `grant 0 ("ops"): sha256: the SHA-256 of an empty token`) {
		t.Fatalf("Parse of a grant holding the empty token's hash = %v, want a refusal naming the grant and sha256", err)
	}
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	if err := os.WriteFile(path, []byte("- {name: ops, sha256: "+hash("t")+", namespaces: [\"*\"], operations: [read, write, admin]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := authz.New(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, header := range []string{"Bearer  ", "Bearer \t", "bearer   "} {
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", header))
		err := a.Authorize(ctx, statedv1.Cluster_Remove_FullMethodName, &statedv1.RemoveRequest{NodeId: "n2"})
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "no bearer token") {
			t.Errorf("authorization %q: %v, want Unauthenticated for no token", header, err)
		}
	}
}

// TestAScalarWhereAListBelongsNamesTheGrantAndField: README,
// Authorization: "A malformed file at start stops `stated run`, naming
// the grant and the field." `operations: read` is an easy slip; the YAML
// decoder's own error named neither.
func TestAScalarWhereAListBelongsNamesTheGrantAndField(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"operations", "- name: svc-a\n  sha256: " + hash("t") + "\n  namespaces: [users]\n  operations: read\n", `grant 0 ("svc-a"): operations: want a list, such as [read]`},
		{"namespaces", "- name: svc-a\n  sha256: " + hash("t") + "\n  namespaces: users\n  operations: [read]\n", `grant 0 ("svc-a"): namespaces: want a list, such as [users]`},
		{"a list in a list", "- name: svc-a\n  sha256: " + hash("t") + "\n  namespaces: [[users]]\n  operations: [read]\n", `grant 0 ("svc-a"): namespaces[0]: want a string`},
		{"sha256", "- name: svc-a\n  sha256: [x]\n  namespaces: [users]\n  operations: [read]\n", `grant 0 ("svc-a"): sha256: want a string`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := authz.Parse([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %v; want %q", err, tc.want)
			}
		})
	}
}
