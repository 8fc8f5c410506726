#!/usr/bin/env bash
# Regenerates the Python stubs (streamgate/v1/streamgate_pb2*.py) from
# ../../proto with Debian's protoc and gRPC plugin:
#   apt-get install protobuf-compiler protobuf-compiler-grpc
# The stubs are committed, so running the examples needs neither.
set -euo pipefail
cd "$(dirname "$0")"
command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }
plugin="$(command -v grpc_python_plugin)" || { echo "grpc_python_plugin not found: apt-get install protobuf-compiler-grpc" >&2; exit 1; }
rm -rf streamgate
protoc -I ../../proto \
  --plugin=protoc-gen-grpc_python="$plugin" \
  --python_out=. --grpc_python_out=. \
  ../../proto/streamgate/v1/*.proto
