package daemon_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/authz"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

func tokenHash(token string) string {
	s := sha256.Sum256([]byte(token))
	return hex.EncodeToString(s[:])
}

// authzTokens: root may do anything; other holds every operation but on
// other namespaces; no-<op> holds every namespace but not <op>.
const authzTokenFile = `
- {name: root, sha256: %s, namespaces: ["*"], operations: [read, write, admin]}
- {name: other, sha256: %s, namespaces: [other, kafka-group/other], operations: [read, write, admin]}
- {name: no-read, sha256: %s, namespaces: ["*"], operations: [write, admin]}
- {name: no-write, sha256: %s, namespaces: ["*"], operations: [read, admin]}
- {name: no-admin, sha256: %s, namespaces: ["*"], operations: [read, write]}
`

func writeTokenFile(t *testing.T, path string) {
	t.Helper()
	data := fmt.Sprintf(authzTokenFile, tokenHash("root-tok"), tokenHash("other-tok"), tokenHash("no-read-tok"), tokenHash("no-write-tok"), tokenHash("no-admin-tok"))
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func asToken(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// rpcCase calls one RPC; op is what it needs (read, write, admin) and
// scope whether the namespace matters ("ns"), any namespace will do
// ("any"), or any token will do ("token").
type rpcCase struct {
	method string
	op     authz.Operation
	scope  string
	call   func(ctx context.Context, conn *grpc.ClientConn) error
}

func everyRPC() []rpcCase {
	st := func(c *grpc.ClientConn) statedv1.StateClient { return statedv1.NewStateClient(c) }
	cl := func(c *grpc.ClientConn) statedv1.ClusterClient { return statedv1.NewClusterClient(c) }
	ck := func(c *grpc.ClientConn) statedv1.CheckpointsClient { return statedv1.NewCheckpointsClient(c) }
	wn := func(c *grpc.ClientConn) statedv1.WindowsClient { return statedv1.NewWindowsClient(c) }
	return []rpcCase{
		{statedv1.State_Commit_FullMethodName, authz.Write, "ns", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := st(c).Commit(ctx, &statedv1.CommitRequest{
				Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "ns", Key: []byte("k"), Value: []byte("v")}},
				Offsets:   []*statedv1.Offset{{Group: "g", Topic: "t", Partition: 0, Offset: 7}},
			})
			return err
		}},
		// A batch passes the call's check with write anywhere; each commit
		// in it is then checked as a Commit: its refusal is the call's error
		// here.
		{statedv1.State_CommitBatch_FullMethodName, authz.Write, "ns", func(ctx context.Context, c *grpc.ClientConn) error {
			resp, err := st(c).CommitBatch(ctx, &statedv1.CommitBatchRequest{Commits: []*statedv1.CommitRequest{{
				Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "ns", Key: []byte("k"), Value: []byte("v")}},
			}}})
			if err != nil {
				return err
			}
			if e := resp.GetResults()[0].GetError(); e != nil {
				return status.Error(codes.Code(e.GetCode()), e.GetMessage())
			}
			return nil
		}},
		// A commit stream needs write anywhere to open; each commit of
		// each request is then checked as a Commit.
		{statedv1.State_CommitStream_FullMethodName, authz.Write, "ns", func(ctx context.Context, c *grpc.ClientConn) error {
			s, err := st(c).CommitStream(ctx)
			if err != nil {
				return err
			}
			defer s.CloseSend()
			return streamedPut(s, 1, "ns", "k")
		}},
		{statedv1.State_Get_FullMethodName, authz.Read, "ns", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := st(c).Get(ctx, &statedv1.GetRequest{Namespace: "ns", Key: []byte("k"), Kind: statedv1.Kind_KIND_VALUE})
			return err
		}},
		{statedv1.State_Scan_FullMethodName, authz.Read, "ns", func(ctx context.Context, c *grpc.ClientConn) error {
			s, err := st(c).Scan(ctx, &statedv1.ScanRequest{Namespace: "ns"})
			if err != nil {
				return err
			}
			for {
				if _, err := s.Recv(); err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
			}
		}},
		{statedv1.State_GetOffsets_FullMethodName, authz.Read, "ns", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := st(c).GetOffsets(ctx, &statedv1.GetOffsetsRequest{Group: "g"})
			return err
		}},
		{statedv1.State_Claim_FullMethodName, authz.Write, "ns", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := st(c).Claim(ctx, &statedv1.ClaimRequest{Group: "g", Owner: "o", Partitions: []*statedv1.TopicPartition{{Topic: "t", Partition: 1}}})
			return err
		}},
		{statedv1.State_Release_FullMethodName, authz.Write, "ns", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := st(c).Release(ctx, &statedv1.ReleaseRequest{Group: "g", Owner: "o"})
			return err
		}},
		{statedv1.State_OpenSession_FullMethodName, authz.Write, "any", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := st(c).OpenSession(ctx, &statedv1.OpenSessionRequest{ClientId: "c1"})
			return err
		}},
		{statedv1.Cluster_Join_FullMethodName, authz.Admin, "cluster", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := cl(c).Join(ctx, &statedv1.JoinRequest{NodeId: "intruder", RaftAddr: "127.0.0.1:1"})
			return err
		}},
		{statedv1.Cluster_Remove_FullMethodName, authz.Admin, "cluster", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := cl(c).Remove(ctx, &statedv1.RemoveRequest{NodeId: "nobody"})
			return err
		}},
		{statedv1.Cluster_Members_FullMethodName, "", "token", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := cl(c).Members(ctx, &statedv1.MembersRequest{})
			return err
		}},
		{statedv1.Cluster_NodeStatus_FullMethodName, "", "token", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := cl(c).NodeStatus(ctx, &statedv1.NodeStatusRequest{})
			return err
		}},
		{statedv1.Checkpoints_Trigger_FullMethodName, authz.Admin, "cluster", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := ck(c).Trigger(ctx, &statedv1.TriggerCheckpointRequest{})
			return err
		}},
		{statedv1.Checkpoints_List_FullMethodName, "", "token", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := ck(c).List(ctx, &statedv1.ListCheckpointsRequest{})
			return err
		}},
		{statedv1.Checkpoints_Get_FullMethodName, "", "token", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := ck(c).Get(ctx, &statedv1.GetCheckpointRequest{})
			return err
		}},
		{statedv1.Checkpoints_Savepoint_FullMethodName, authz.Admin, "cluster", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := ck(c).Savepoint(ctx, &statedv1.SavepointRequest{})
			return err
		}},
		{statedv1.Checkpoints_Delete_FullMethodName, authz.Admin, "cluster", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := ck(c).Delete(ctx, &statedv1.DeleteCheckpointRequest{})
			return err
		}},
		{statedv1.Checkpoints_Status_FullMethodName, "", "token", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := ck(c).Status(ctx, &statedv1.CheckpointStatusRequest{})
			return err
		}},
		{statedv1.Checkpoints_Recovery_FullMethodName, "", "token", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := ck(c).Recovery(ctx, &statedv1.RecoveryRequest{})
			return err
		}},
		{statedv1.Windows_Define_FullMethodName, authz.Write, "ns", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := wn(c).Define(ctx, &statedv1.DefineWindowsRequest{Spec: &statedv1.WindowSpec{Namespace: "ns"}})
			return err
		}},
		{statedv1.Windows_Get_FullMethodName, authz.Read, "ns", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := wn(c).Get(ctx, &statedv1.GetWindowsRequest{Namespace: "ns", Key: []byte("k")})
			return err
		}},
		{statedv1.Windows_ListOpen_FullMethodName, authz.Read, "ns", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := wn(c).ListOpen(ctx, &statedv1.ListOpenWindowsRequest{Namespace: "ns"})
			return err
		}},
		{statedv1.Windows_Emissions_FullMethodName, authz.Read, "ns", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := wn(c).Emissions(ctx, &statedv1.ReadEmissionsRequest{Namespace: "ns"})
			return err
		}},
		{statedv1.Windows_Status_FullMethodName, authz.Read, "ns", func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := wn(c).Status(ctx, &statedv1.WindowStatusRequest{Namespace: "ns"})
			return err
		}},
	}
}

// observable is what the refused calls must leave as it was, read with
// the root token.
func observable(t *testing.T, ctx context.Context, conn *grpc.ClientConn) string {
	t.Helper()
	ctx = asToken(ctx, "root-tok")
	get, err := statedv1.NewStateClient(conn).Get(ctx, &statedv1.GetRequest{Namespace: "ns", Key: []byte("k"), Kind: statedv1.Kind_KIND_VALUE})
	if err != nil {
		t.Fatalf("read back as root: %v", err)
	}
	offs, err := statedv1.NewStateClient(conn).GetOffsets(ctx, &statedv1.GetOffsetsRequest{Group: "g"})
	if err != nil {
		t.Fatalf("read offsets as root: %v", err)
	}
	ms, err := statedv1.NewClusterClient(conn).Members(ctx, &statedv1.MembersRequest{})
	if err != nil {
		t.Fatalf("members as root: %v", err)
	}
	cks, err := statedv1.NewCheckpointsClient(conn).List(ctx, &statedv1.ListCheckpointsRequest{})
	if err != nil {
		t.Fatalf("checkpoints as root: %v", err)
	}
	return fmt.Sprintf("found=%v offsets=%d claims=%d members=%d checkpoints=%d", get.GetFound(), len(offs.GetOffsets()), len(offs.GetClaims()), len(ms.GetMembers()), len(cks.GetCheckpoints()))
}

func TestEveryRPCRefusesCallsOutsideTheTokensGrantAndChangesNothing(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens.yaml")
	writeTokenFile(t, tokens)
	d := daemontest.Start(t, func(c *daemon.Config) {
		c.TokenFile = tokens
		c.CheckpointInterval = 0
	})
	ctx := testContext(t)
	cases := everyRPC()
	if len(cases) != len(authz.Rules) {
		t.Fatalf("the table covers %d RPCs, authz.Rules %d", len(cases), len(authz.Rules))
	}
	for _, target := range []string{"unix://" + d.SocketPath(), d.TCPAddr()} {
		conn := dial(t, target)
		before := observable(t, ctx, conn)
		for _, rc := range cases {
			type try struct {
				token string
				want  codes.Code
			}
			tries := []try{{"", codes.Unauthenticated}, {"wrong-tok", codes.Unauthenticated}}
			if rc.op != "" {
				tries = append(tries, try{"no-" + string(rc.op) + "-tok", codes.PermissionDenied})
			}
			if rc.scope == "ns" || rc.scope == "cluster" {
				tries = append(tries, try{"other-tok", codes.PermissionDenied})
			}
			for _, tr := range tries {
				t.Run(fmt.Sprintf("%s/%s/token=%q", target, rc.method, tr.token), func(t *testing.T) {
					cctx, cancel := context.WithTimeout(asToken(ctx, tr.token), 10*time.Second)
					defer cancel()
					err := rc.call(cctx, conn)
					if got := status.Code(err); got != tr.want {
						t.Fatalf("%s with token %q: %v (code %s), want %s", rc.method, tr.token, err, got, tr.want)
					}
					if tr.token != "" && strings.Contains(err.Error(), tr.token) {
						t.Fatalf("the refusal %q holds the token", err)
					}
					if tr.want == codes.PermissionDenied && rc.op != "" && !strings.Contains(err.Error(), string(rc.op)) {
						t.Fatalf("the refusal %q does not name the operation %s", err, rc.op)
					}
				})
			}
		}
		if after := observable(t, ctx, conn); after != before {
			t.Fatalf("refused calls changed the state: before %s, after %s", before, after)
		}
	}
	// Health stays open without a token.
	conn := dial(t, "unix://"+d.SocketPath())
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health without a token: %v", err)
	}
	// Allowed: every RPC gets past authorization with the root token (it
	// may still fail on its own terms, e.g. NotFound).
	for _, rc := range cases {
		t.Run("root/"+rc.method, func(t *testing.T) {
			cctx, cancel := context.WithTimeout(asToken(ctx, "root-tok"), 10*time.Second)
			defer cancel()
			err := rc.call(cctx, conn)
			if c := status.Code(err); c == codes.Unauthenticated || c == codes.PermissionDenied {
				t.Fatalf("%s as root: %v", rc.method, err)
			}
		})
	}
	if got := observable(t, ctx, conn); !strings.HasPrefix(got, "found=true offsets=1") {
		t.Fatalf("root's commit is not there: %s", got)
	}
}

func TestReloadSwapsTheTokenFileAndKeepsTheOldOneWhenMalformed(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(tokens, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("- {name: a, sha256: " + tokenHash("old") + ", namespaces: [ns], operations: [read]}")
	d := daemontest.Start(t, func(c *daemon.Config) { c.TokenFile = tokens })
	ctx := testContext(t)
	conn := dial(t, "unix://"+d.SocketPath())
	get := func(token string) codes.Code {
		_, err := statedv1.NewStateClient(conn).Get(asToken(ctx, token), &statedv1.GetRequest{Namespace: "ns", Key: []byte("k"), Kind: statedv1.Kind_KIND_VALUE})
		return status.Code(err)
	}
	if c := get("old"); c != codes.OK {
		t.Fatalf("old token before reload: %s", c)
	}
	write("- {name: b, sha256: " + tokenHash("new") + ", namespaces: [ns], operations: [read]}")
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	if c, o := get("new"), get("old"); c != codes.OK || o != codes.Unauthenticated {
		t.Fatalf("after reload: new token %s (want OK), old token %s (want Unauthenticated)", c, o)
	}
	write("- {name: c, sha256: nothex, namespaces: [ns], operations: [read]}")
	if err := d.Reload(); err == nil || !strings.Contains(err.Error(), "sha256") || !strings.Contains(err.Error(), tokens) {
		t.Fatalf("Reload of a malformed file: %v; want an error naming the file and sha256", err)
	}
	if c := get("new"); c != codes.OK {
		t.Fatalf("the kept grant: %s", c)
	}
}

func TestStartRefusesAMalformedTokenFileAndOpenNonLoopbackTCP(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens.yaml")
	if err := os.WriteFile(tokens, []byte("- {name: a, sha256: "+tokenHash("x")+", namespaces: [ns], operations: [raed]}"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.TokenFile = tokens
	_, err := daemon.Start(testContext(t), cfg)
	if err == nil || !strings.Contains(err.Error(), tokens) || !strings.Contains(err.Error(), `grant 0 ("a"): operations[0] "raed"`) {
		t.Fatalf("Start with a malformed token file: %v", err)
	}
	if _, statErr := os.Stat(cfg.SocketPath); !os.IsNotExist(statErr) {
		t.Fatalf("the refused start left its socket: %v", statErr)
	}

	cfg = testConfig(t)
	cfg.GRPCAddr = "0.0.0.0:0"
	err = cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "TokenFile (--token-file)") || !strings.Contains(err.Error(), "TLSCertFile (--tls-cert)") || !strings.Contains(err.Error(), "--insecure") {
		t.Fatalf("Validate of 0.0.0.0 without TLS or tokens: %v", err)
	}
	for _, ok := range []func(*daemon.Config){
		func(c *daemon.Config) { c.Insecure = true },
		func(c *daemon.Config) { c.TokenFile = tokens },
		func(c *daemon.Config) { c.GRPCAddr = "localhost:0" },
	} {
		c := cfg
		ok(&c)
		if err := c.Validate(); err != nil {
			t.Fatalf("Validate: %v", err)
		}
	}
}

func TestAClusterWithTokensJoinsWithTheJoinTokenAndForwardsTheClientsToken(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens.yaml")
	writeTokenFile(t, tokens)
	nodes := daemontest.StartCluster(t, 2, func(c *daemon.Config) {
		c.TokenFile = tokens
		c.JoinToken = "root-tok"
	})
	ctx := testContext(t)
	follower := dial(t, "unix://"+nodes[1].SocketPath())
	commit := func(token, ns string) error {
		_, err := statedv1.NewStateClient(follower).Commit(asToken(ctx, token), &statedv1.CommitRequest{
			Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: ns, Key: []byte("k"), Value: []byte("v")}},
		})
		return err
	}
	// The follower forwards to the leader, which checks the same token.
	if err := commit("other-tok", "other"); err != nil {
		t.Fatalf("a granted commit through the follower: %v", err)
	}
	if err := commit("other-tok", "ns"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a commit outside the grant through the follower: %v, want PermissionDenied", err)
	}
	leader := dial(t, "unix://"+nodes[0].SocketPath())
	got, err := statedv1.NewStateClient(leader).Get(asToken(ctx, "root-tok"), &statedv1.GetRequest{Namespace: "other", Key: []byte("k"), Kind: statedv1.Kind_KIND_VALUE})
	if err != nil || !got.GetFound() {
		t.Fatalf("the forwarded commit on the leader: %v, found %v", err, got.GetFound())
	}
}

// TestWindowStatusOfEveryNamespaceListsWhatTheTokenMayRead: the window
// part of `stated status` asks for every window namespace. A token
// limited to some namespaces gets those it may read, with no error; one
// with read on "*" gets all, one with admin alone none (no operation
// implies another). Asking for one namespace by name stays checked.
func TestWindowStatusOfEveryNamespaceListsWhatTheTokenMayRead(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens.yaml")
	data := fmt.Sprintf(`
- {name: svc-a, sha256: %s, namespaces: [users, "clicks-*", kafka-group/svc-a], operations: [read, write]}
- {name: ops, sha256: %s, namespaces: ["*"], operations: [read, write, admin]}
- {name: operator, sha256: %s, namespaces: ["*"], operations: [admin]}
`, tokenHash("svc-a-tok"), tokenHash("ops-tok"), tokenHash("operator-tok"))
	if err := os.WriteFile(tokens, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	d := daemontest.Start(t, func(c *daemon.Config) {
		c.TokenFile = tokens
		c.CheckpointInterval = 0
	})
	ctx := testContext(t)
	conn := dial(t, "unix://"+d.SocketPath())
	windows := statedv1.NewWindowsClient(conn)
	zero := int64(0)
	for _, ns := range []string{"users", "clicks-eu", "orders", "clickstream"} {
		if _, err := windows.Define(asToken(ctx, "ops-tok"), &statedv1.DefineWindowsRequest{Spec: &statedv1.WindowSpec{
			Namespace: ns, Shape: statedv1.WindowShape_WINDOW_SHAPE_TUMBLING, SizeMs: 60_000,
			GraceMs: &zero, MaxOutOfOrderMs: &zero,
			Aggregate: statedv1.WindowAggregate_WINDOW_AGGREGATE_COUNT,
			Emit:      statedv1.WindowEmit_WINDOW_EMIT_FINAL, Late: statedv1.LatePolicy_LATE_POLICY_DROP,
		}}); err != nil {
			t.Fatalf("define %s as ops: %v", ns, err)
		}
	}
	all := []string{"clicks-eu", "clickstream", "orders", "users"}
	want := map[string][]string{"svc-a-tok": {"clicks-eu", "users"}, "ops-tok": all, "operator-tok": nil}
	names := func(got []string) string {
		slices.Sort(got)
		return strings.Join(got, ",")
	}
	for token, wantNS := range want {
		// Over the wire, as any client asks.
		resp, err := windows.Status(asToken(ctx, token), &statedv1.WindowStatusRequest{})
		if err != nil {
			t.Fatalf("window status of every namespace with %s: %v", token, err)
		}
		var got []string
		for _, n := range resp.GetNamespaces() {
			got = append(got, n.GetSpec().GetNamespace())
		}
		if names(got) != strings.Join(wantNS, ",") {
			t.Errorf("window status with %s lists %v, want %v", token, got, wantNS)
		}
		// Through the SDK, as `stated status` asks.
		c, err := stated.Dial(ctx, d.SocketPath(), stated.WithToken(token), stated.WithLazySession())
		if err != nil {
			t.Fatalf("dial with %s: %v", token, err)
		}
		sts, err := c.WindowStatus(ctx)
		c.Close()
		if err != nil {
			t.Fatalf("client.WindowStatus with %s: %v", token, err)
		}
		got = got[:0]
		for _, st := range sts {
			got = append(got, st.Spec.Namespace)
		}
		if names(got) != strings.Join(wantNS, ",") {
			t.Errorf("client.WindowStatus with %s lists %v, want %v", token, got, wantNS)
		}
	}
	// One namespace by name: read on it, as before.
	if _, err := windows.Status(asToken(ctx, "svc-a-tok"), &statedv1.WindowStatusRequest{Namespace: "users"}); err != nil {
		t.Fatalf("svc-a's own namespace by name: %v", err)
	}
	_, err := windows.Status(asToken(ctx, "svc-a-tok"), &statedv1.WindowStatusRequest{Namespace: "orders"})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `may not read namespace "orders"`) {
		t.Fatalf("another namespace by name with svc-a: %v, want PermissionDenied naming it", err)
	}
	if _, err := windows.Status(ctx, &statedv1.WindowStatusRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("window status without a token: %v, want Unauthenticated", err)
	}
}

// TestACommitStreamChecksEachRequestAgainstTheTokenFileOfTheMoment: a
// stream opened while its token may write "ns" has a request refused
// once a reload took that grant away (the commit PERMISSION_DENIED,
// nothing applied), and the stream goes on serving the commits the new
// grant allows; a request of a token the reload removed is refused
// UNAUTHENTICATED.
func TestACommitStreamChecksEachRequestAgainstTheTokenFileOfTheMoment(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens.yaml")
	write := func(namespaces string) {
		t.Helper()
		data := "- {name: a, sha256: " + tokenHash("tok") + ", namespaces: [" + namespaces + "], operations: [read, write]}\n" +
			"- {name: root, sha256: " + tokenHash("root-tok") + ", namespaces: [\"*\"], operations: [read, write, admin]}\n"
		if err := os.WriteFile(tokens, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ns, other")
	d := daemontest.Start(t, func(c *daemon.Config) { c.TokenFile = tokens })
	ctx := testContext(t)
	conn := dial(t, "unix://"+d.SocketPath())
	s, err := statedv1.NewStateClient(conn).CommitStream(asToken(ctx, "tok"))
	if err != nil {
		t.Fatal(err)
	}
	var id uint64
	commit := func(ns string) codes.Code {
		t.Helper()
		id++
		return status.Code(streamedPut(s, id, ns, fmt.Sprintf("k%d", id)))
	}
	found := func(ns string, n uint64) bool {
		t.Helper()
		r, err := statedv1.NewStateClient(conn).Get(asToken(ctx, "root-tok"), &statedv1.GetRequest{Namespace: ns, Key: fmt.Appendf(nil, "k%d", n), Kind: statedv1.Kind_KIND_VALUE})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetFound()
	}
	if c := commit("ns"); c != codes.OK || !found("ns", id) {
		t.Fatalf("a commit to ns before the reload: %s", c)
	}
	write("other")
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	if c := commit("ns"); c != codes.PermissionDenied || found("ns", id) {
		t.Fatalf("a commit to ns on the same stream after the reload took ns away: %s (applied %v), want PermissionDenied and nothing applied", c, found("ns", id))
	}
	if c := commit("other"); c != codes.OK || !found("other", id) {
		t.Fatalf("a commit to other on the same stream after the reload: %s", c)
	}
	if err := os.WriteFile(tokens, []byte("- {name: root, sha256: "+tokenHash("root-tok")+", namespaces: [\"*\"], operations: [read, write, admin]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	if c := commit("other"); c != codes.Unauthenticated || found("other", id) {
		t.Fatalf("a commit of a token the reload removed: %s, want Unauthenticated and nothing applied", c)
	}
}

// streamedPut sends a request of one put of ns/key on s and returns the
// status its commit was answered with: the request's, else the commit's
// own; or the stream's error.
func streamedPut(s statedv1.State_CommitStreamClient, id uint64, ns, key string) error {
	if err := s.Send(&statedv1.CommitStreamRequest{Id: id, Batch: &statedv1.CommitBatchRequest{Commits: []*statedv1.CommitRequest{{
		Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: ns, Key: []byte(key), Value: []byte("v")}},
	}}}}); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	resp, err := s.Recv()
	if err != nil {
		return err
	}
	if e := resp.GetError(); e != nil {
		return status.Error(codes.Code(e.GetCode()), e.GetMessage())
	}
	if e := resp.GetBatch().GetResults()[0].GetError(); e != nil {
		return status.Error(codes.Code(e.GetCode()), e.GetMessage())
	}
	return nil
}
