package authz_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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

func hash(token string) string {
	s := sha256.Sum256([]byte(token))
	return hex.EncodeToString(s[:])
}

func TestEveryRPCHasARule(t *testing.T) {
	fd := statedv1.File_statedv1_stated_proto
	n := 0
	for i := 0; i < fd.Services().Len(); i++ {
		svc := fd.Services().Get(i)
		for j := 0; j < svc.Methods().Len(); j++ {
			m := svc.Methods().Get(j)
			full := "/" + string(svc.FullName()) + "/" + string(m.Name())
			n++
			if _, ok := authz.Rules[full]; !ok {
				t.Errorf("%s has no rule in authz.Rules", full)
			}
		}
	}
	if n != len(authz.Rules) {
		t.Errorf("the proto has %d RPCs, authz.Rules %d: a rule for a method that does not exist?", n, len(authz.Rules))
	}
}

func TestParseNamesTheGrantAndFieldAtFault(t *testing.T) {
	good := hash("t")
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown key", "- {name: a, sha256: " + good + ", namespaces: [x], operations: [read], extra: 1}", "extra"},
		{"bad hex", "- {name: a, sha256: zz, namespaces: [x], operations: [read]}", `grant 0 ("a"): sha256`},
		{"short hash", "- {name: a, sha256: abcd, namespaces: [x], operations: [read]}", `grant 0 ("a"): sha256`},
		{"unknown operation", "- {name: a, sha256: " + good + ", namespaces: [x], operations: [delete]}", `grant 0 ("a"): operations[0] "delete"`},
		{"empty namespaces", "- {name: a, sha256: " + good + ", namespaces: [], operations: [read]}", `grant 0 ("a"): namespaces is empty`},
		{"star inside a namespace", "- {name: a, sha256: " + good + ", namespaces: [a*b], operations: [read]}", `namespaces[0] "a*b"`},
		{"empty operations", "- {name: a, sha256: " + good + ", namespaces: [x]}", `grant 0 ("a"): operations is empty`},
		{"no name", "- {sha256: " + good + ", namespaces: [x], operations: [read]}", "grant 0: name is empty"},
		{"same token twice", "- {name: a, sha256: " + good + ", namespaces: [x], operations: [read]}\n- {name: b, sha256: " + good + ", namespaces: [x], operations: [read]}", `grant 1 ("b"): sha256: same token as grant "a"`},
		{"empty file", "", "no grants"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokens.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := authz.ParseFile(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("ParseFile: %v; want an error naming %s and %q", err, path, tc.want)
			}
		})
	}
}

func withToken(token string) context.Context {
	if token == "" {
		return context.Background()
	}
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+token))
}

func TestAuthorizeMatchesNamespacesAndOperations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	file := `
- name: users-rw
  sha256: ` + hash("users-token") + `
  namespaces: [users, "clicks-*", kafka-group/g1]
  operations: [read, write]
- name: reader
  sha256: ` + hash("reader-token") + `
  namespaces: ["*"]
  operations: [read]
- name: users-admin
  sha256: ` + hash("users-admin-token") + `
  namespaces: [users]
  operations: [admin]
- name: root
  sha256: ` + hash("root-token") + `
  namespaces: ["*"]
  operations: [read, write, admin]
`
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := authz.New(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	put := func(ns string) *statedv1.CommitRequest {
		return &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{Namespace: ns, Key: []byte("k")}}}
	}
	for _, tc := range []struct {
		name, token, method string
		req                 any
		want                codes.Code
	}{
		{"no token", "", statedv1.State_Get_FullMethodName, &statedv1.GetRequest{Namespace: "users"}, codes.Unauthenticated},
		{"wrong token", "nope", statedv1.State_Get_FullMethodName, &statedv1.GetRequest{Namespace: "users"}, codes.Unauthenticated},
		{"exact namespace", "users-token", statedv1.State_Get_FullMethodName, &statedv1.GetRequest{Namespace: "users"}, codes.OK},
		{"prefix namespace", "users-token", statedv1.State_Commit_FullMethodName, put("clicks-eu"), codes.OK},
		{"outside the prefix", "users-token", statedv1.State_Commit_FullMethodName, put("clicks"), codes.PermissionDenied},
		{"a name is not a prefix", "users-token", statedv1.State_Get_FullMethodName, &statedv1.GetRequest{Namespace: "users2"}, codes.PermissionDenied},
		{"one namespace of a commit outside", "users-token", statedv1.State_Commit_FullMethodName,
			&statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{Namespace: "users"}, {Namespace: "orders"}}}, codes.PermissionDenied},
		{"offset of a granted group", "users-token", statedv1.State_Commit_FullMethodName,
			&statedv1.CommitRequest{Offsets: []*statedv1.Offset{{Group: "g1"}}}, codes.OK},
		{"offset of another group", "users-token", statedv1.State_Commit_FullMethodName,
			&statedv1.CommitRequest{Offsets: []*statedv1.Offset{{Group: "g2"}}}, codes.PermissionDenied},
		{"claim of another group", "users-token", statedv1.State_Claim_FullMethodName, &statedv1.ClaimRequest{Group: "g2"}, codes.PermissionDenied},
		{"read-only writes", "reader-token", statedv1.State_Commit_FullMethodName, put("users"), codes.PermissionDenied},
		{"read-only opens no session", "reader-token", statedv1.State_OpenSession_FullMethodName, &statedv1.OpenSessionRequest{}, codes.PermissionDenied},
		{"a writer opens sessions", "users-token", statedv1.State_OpenSession_FullMethodName, &statedv1.OpenSessionRequest{}, codes.OK},
		{"any token lists members", "reader-token", statedv1.Cluster_Members_FullMethodName, &statedv1.MembersRequest{}, codes.OK},
		{"admin of one namespace is not cluster admin", "users-admin-token", statedv1.Cluster_Remove_FullMethodName, &statedv1.RemoveRequest{}, codes.PermissionDenied},
		{"cluster admin removes", "root-token", statedv1.Cluster_Remove_FullMethodName, &statedv1.RemoveRequest{}, codes.OK},
		{"savepoint needs admin", "users-token", statedv1.Checkpoints_Savepoint_FullMethodName, &statedv1.SavepointRequest{}, codes.PermissionDenied},
		{"health stays open", "", "/grpc.health.v1.Health/Check", nil, codes.OK},
		{"an unknown method is refused", "root-token", "/stated.v1.State/Nope", nil, codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := a.Authorize(withToken(tc.token), tc.method, tc.req)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("Authorize: %v (code %s), want %s", err, got, tc.want)
			}
			if err != nil && tc.token != "" && strings.Contains(err.Error(), tc.token) {
				t.Fatalf("the error %q holds the token", err)
			}
		})
	}
}

func TestReloadKeepsTheOldGrantsWhenTheNewFileIsMalformed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("- {name: a, sha256: " + hash("old") + ", namespaces: [x], operations: [read]}")
	a, err := authz.New(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	get := &statedv1.GetRequest{Namespace: "x"}
	write("- {name: a, sha256: " + hash("new") + ", namespaces: [x], operations: [read]}")
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := a.Authorize(withToken("new"), statedv1.State_Get_FullMethodName, get); err != nil {
		t.Fatalf("new token after reload: %v", err)
	}
	if got := status.Code(a.Authorize(withToken("old"), statedv1.State_Get_FullMethodName, get)); got != codes.Unauthenticated {
		t.Fatalf("old token after reload: %s, want Unauthenticated", got)
	}
	write("- {name: a, sha256: " + hash("newer") + ", namespaces: [x], operations: [raed]}")
	if err := a.Reload(); err == nil || !strings.Contains(err.Error(), `operations[0] "raed"`) {
		t.Fatalf("Reload of a malformed file: %v, want an error naming operations[0]", err)
	}
	if err := a.Authorize(withToken("new"), statedv1.State_Get_FullMethodName, get); err != nil {
		t.Fatalf("the kept grant refuses: %v", err)
	}
}
