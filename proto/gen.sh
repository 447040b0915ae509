#!/usr/bin/env bash
# Regenerates the Go code of the stated.v1 contract with pinned tools.
# Usage: bash proto/gen.sh   (or: go generate ./proto/...)
# stated.proto is edition 2023 (see its header). It is compiled by
# proto/internal/protogen (protocompile, the compiler of buf, pinned in
# go.mod), which runs the Go plugins as protoc would; the plugins are
# installed at pinned versions into .bin/ of the repository. No protoc
# is needed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export GOBIN="$root/.bin"
go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.11
go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
module=$(go list -m)
go run ./proto/internal/protogen -I proto \
  -plugin "go=$GOBIN/protoc-gen-go,module=$module" \
  -plugin "go-grpc=$GOBIN/protoc-gen-go-grpc,module=$module" \
  statedv1/stated.proto
