// Package proto holds the streamgate gRPC API. Regenerate the Go code with
// `go generate ./proto/...` (or `make proto`); it needs protoc on PATH
// (Debian: apt-get install protobuf-compiler) and installs the pinned Go
// plugins into ./.bin.
package proto

//go:generate ./gen.sh
