#!/usr/bin/env bash
# Regenerates proto/streamgate/v1/*.pb.go with pinned plugin versions.
# protoc-gen-go-vtproto adds MarshalToSizedBufferVT, SizeVT and
# UnmarshalVTUnsafe (*_vtproto.pb.go), which internal/codec uses: marshal
# into pooled buffers, and unmarshal with bytes and strings aliasing the
# received frame instead of copying them.
set -euo pipefail
cd "$(dirname "$0")"
PROTOC_GEN_GO=v1.36.12
PROTOC_GEN_GO_GRPC=v1.5.1
PROTOC_GEN_GO_VTPROTO=v0.6.0
bin="$(pwd)/../.bin"
mkdir -p "$bin"
command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }
GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO}"
GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@${PROTOC_GEN_GO_GRPC}"
GOBIN="$bin" go install "github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto@${PROTOC_GEN_GO_VTPROTO}"
protoc -I . \
  --plugin=protoc-gen-go="$bin/protoc-gen-go" \
  --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
  --plugin=protoc-gen-go-vtproto="$bin/protoc-gen-go-vtproto" \
  --go_out=. --go_opt=paths=source_relative \
  --go-grpc_out=. --go-grpc_opt=paths=source_relative \
  --go-vtproto_out=. --go-vtproto_opt=paths=source_relative,features=marshal+unmarshal+unmarshal_unsafe+size \
  streamgate/v1/*.proto
