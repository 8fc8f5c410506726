package codec_test

import (
	"testing"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/streamgate/streamgate/internal/codec"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// The two hot paths of the gateway, against grpc's standard codec with its
// default pool: decoding a publish request of 100 messages of 1 KiB that
// arrived in 16 KiB frames, and encoding a batch of 100 such messages.
//
//	go test -run '^$' -bench . -benchmem ./internal/codec/
func BenchmarkUnmarshalPublishRequest(b *testing.B) {
	wire, err := proto.Marshal(publishRequest(1, 100, 1024))
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name  string
		codec encoding.CodecV2
		pool  mem.BufferPool
	}{
		{"standard", encoding.GetCodecV2("proto"), mem.DefaultBufferPool()},
		{"copy", codec.New(codec.BufferPool(), codec.Copy), codec.BufferPool()},
		{"alias", codec.New(codec.BufferPool(), codec.Alias), codec.BufferPool()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(wire)))
			for b.Loop() {
				data := frames(bc.pool, wire, 16<<10)
				if err := bc.codec.Unmarshal(data, &pb.PublishRequest{}); err != nil {
					b.Fatal(err)
				}
				data.Free()
			}
		})
	}
}

func BenchmarkMarshalMessageBatch(b *testing.B) {
	msg := messageBatch(1, 100, 1024)
	for _, bc := range []struct {
		name  string
		codec encoding.CodecV2
	}{
		{"standard", encoding.GetCodecV2("proto")},
		{"codec", codec.New(codec.BufferPool(), codec.Alias)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(proto.Size(msg)))
			for b.Loop() {
				out, err := bc.codec.Marshal(msg)
				if err != nil {
					b.Fatal(err)
				}
				out.Free()
			}
		})
	}
}
