package grpcapi_test

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// BenchmarkUnmarshalCommitRequest decodes a commit of 100 puts (namespace,
// 16-byte key, 100-byte value) as the gRPC server does for every Commit:
// what the contract's UTF-8 check of strings (proto3's, dropped by the
// edition 2023 contract) costs there. ns/op is per request.
func BenchmarkUnmarshalCommitRequest(b *testing.B) {
	req := &statedv1.CommitRequest{ClientId: "bench-client"}
	for i := range 100 {
		req.Mutations = append(req.Mutations, &statedv1.Mutation{
			Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "shop-carts",
			Key: fmt.Appendf(nil, "key-%012d", i), Value: make([]byte, 100),
		})
	}
	wire, err := proto.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		var r statedv1.CommitRequest
		if err := proto.Unmarshal(wire, &r); err != nil {
			b.Fatal(err)
		}
	}
}
