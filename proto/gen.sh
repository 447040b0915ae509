#!/usr/bin/env bash
# Regenerates the Go code of the stated.v1 contract with pinned tools.
# Usage: bash proto/gen.sh   (or: go generate ./proto/...)
# Needs protoc 3.21.12 (Debian bookworm's protobuf-compiler); the Go plugins
# are installed at pinned versions into .bin/ of the repository.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
want_protoc="libprotoc 3.21.12"
have=$(protoc --version 2>/dev/null || true)
if [ "$have" != "$want_protoc" ]; then
  echo "proto/gen.sh: need protoc '$want_protoc' (apt-get install protobuf-compiler), have '${have:-none}'" >&2
  exit 1
fi
export GOBIN="$root/.bin"
go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.11
go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
module=$(go list -m)
PATH="$GOBIN:$PATH" protoc -I proto \
  --go_out=. --go_opt=module="$module" \
  --go-grpc_out=. --go-grpc_opt=module="$module" \
  proto/statedv1/*.proto
