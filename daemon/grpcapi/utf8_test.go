package grpcapi_test

import (
	"bytes"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// rawMsg is an already encoded protobuf message, sent as it is.
type rawMsg []byte

// rawCodec sends rawMsg bytes without the Go protobuf
// marshaller, as a client in another language (or one built without UTF-8
// checks) does; answers are kept as bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return []byte(*v.(*rawMsg)), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*(v.(*rawMsg)) = append([]byte(nil), b...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// encodeWithBadString encodes m, whose string under test is the
// placeholder "s~c", then replaces the placeholder with "s\xffc": the same
// length, not valid UTF-8.
func encodeWithBadString(t *testing.T, m proto.Message) *rawMsg {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(b, []byte("s~c")) != 1 {
		t.Fatalf("placeholder not found once in %x", b)
	}
	raw := rawMsg(bytes.Replace(b, []byte("s~c"), []byte("s\xffc"), 1))
	return &raw
}

// README.md, Limits: "namespace | 1..256 bytes, valid UTF-8, no control
// characters", and "Requests that break these are refused with
// InvalidArgument and a message that names the field
// (mutations[3].key: empty); nothing of such a commit is applied." The
// proto says the same of a window namespace ("non-empty valid UTF-8").
//
// A namespace of invalid UTF-8 never reached validateNamespace: the
// generated proto3 code refused the string while gRPC decoded the
// request, and gRPC answered that with INTERNAL ("grpc: failed to
// unmarshal the received message: string field contains invalid UTF-8"),
// naming no field. The contract is now edition 2023 without that check
// (stated.proto's header); the daemon checks every string it keeps.
func TestAStringThatIsNotUTF8IsInvalidArgumentNamingTheField(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, noPeriodicCheckpoints) // the applied index moves only with commits
	conn, err := grpc.NewClient("unix://"+d.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := statedv1.NewStateClient(conn)
	ctx := testContext(t)

	before := d.Store().AppliedIndex()
	cases := []struct {
		name, method string
		req          *rawMsg
		want         string
	}{
		{"commit", "/stated.v1.State/Commit", encodeWithBadString(t, &statedv1.CommitRequest{
			Mutations: []*statedv1.Mutation{put("ns", "a", "1"), put("s~c", "k", "v")},
		}), "mutations[1].namespace"},
		{"get", "/stated.v1.State/Get", encodeWithBadString(t, &statedv1.GetRequest{
			Namespace: "s~c", Key: []byte("k"), Kind: statedv1.Kind_KIND_VALUE,
		}), "namespace"},
		{"window define", "/stated.v1.Windows/Define", encodeWithBadString(t, &statedv1.DefineWindowsRequest{Spec: tumblingCount("s~c")}),
			"spec.namespace"},
		{"offsets of a group", "/stated.v1.State/GetOffsets", encodeWithBadString(t, &statedv1.GetOffsetsRequest{Group: "s~c"}), "group"},
		{"session of a client", "/stated.v1.State/OpenSession", encodeWithBadString(t, &statedv1.OpenSessionRequest{ClientId: "s~c"}), "client_id"},
		{"claim by an owner", "/stated.v1.State/Claim", encodeWithBadString(t, &statedv1.ClaimRequest{Group: "g", Owner: "s~c",
			Partitions: []*statedv1.TopicPartition{{Topic: "t", Partition: 0}}}), "owner"},
		{"join of a node", "/stated.v1.Cluster/Join", encodeWithBadString(t, &statedv1.JoinRequest{NodeId: "s~c", RaftAddr: "127.0.0.1:1", GrpcAddr: "127.0.0.1:2"}), "node_id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out rawMsg
			err := conn.Invoke(ctx, tc.method, tc.req, &out, grpc.ForceCodec(rawCodec{}))
			wantStatus(t, err, codes.InvalidArgument, tc.want)
		})
	}
	if get(t, c, "ns", "a").GetFound() {
		t.Error(`key "a" of the refused commit was written`)
	}
	if after := d.Store().AppliedIndex(); after != before {
		t.Errorf("applied index moved from %d to %d", before, after)
	}
}
