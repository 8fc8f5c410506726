package codec_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // grpc's standard codec, to compare with
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/streamgate/streamgate/internal/codec"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

var modes = []struct {
	name string
	mode codec.Mode
}{{"copy", codec.Copy}, {"alias", codec.Alias}}

// Every hot message marshals to protobuf-go's exact bytes and decodes back
// to an equal message, whether it arrives in one buffer or in many small
// ones.
func TestRoundTrip(t *testing.T) {
	for _, md := range modes {
		for _, tc := range hotMessages() {
			for _, frameSize := range []int{16 << 10, 7} {
				t.Run(fmt.Sprintf("%s/%s/frames-%d", md.name, tc.name, frameSize), func(t *testing.T) {
					pool := poisonPool{codec.NewBufferPool()}
					c := codec.New(pool, md.mode)

					out, err := c.Marshal(tc.msg)
					require.NoError(t, err)
					wire := out.Materialize()
					out.Free()
					want, err := proto.Marshal(tc.msg)
					require.NoError(t, err)
					require.True(t, bytes.Equal(want, wire), "the wire bytes differ from protobuf-go's")

					got := newOf(tc.msg)
					data := frames(pool, wire, frameSize)
					require.NoError(t, c.Unmarshal(data, got))
					data.Free()
					require.True(t, proto.Equal(tc.msg, got), "decoded %v, want %v", got, tc.msg)
				})
			}
		}
	}
}

// Unmarshal replaces what the message held, as proto.Unmarshal does; the
// vtprotobuf methods alone would append to its repeated fields.
func TestUnmarshalReplaces(t *testing.T) {
	for _, md := range modes {
		t.Run(md.name, func(t *testing.T) {
			c := codec.New(codec.NewBufferPool(), md.mode)
			want := publishRequest(1, 3, 100)
			out, err := c.Marshal(want)
			require.NoError(t, err)
			got := publishRequest(2, 5, 10)
			require.NoError(t, c.Unmarshal(out, got))
			out.Free()
			require.True(t, proto.Equal(want, got), "decoded %v, want %v", got, want)
		})
	}
}

// A decoded message stays intact after grpc frees its frames, the pool
// hands them out again and later messages are decoded into them. In Alias
// mode its payloads point into one allocation that holds the message
// (the copy the mode saves); in Copy mode each has its own.
func TestDecodedMessagesOutliveFrames(t *testing.T) {
	for _, md := range modes {
		t.Run(md.name, func(t *testing.T) {
			pool := poisonPool{codec.NewBufferPool()}
			c := codec.New(pool, md.mode)
			var sent, kept []*pb.PublishRequest
			var wires [][]byte
			for i := range 30 {
				req := publishRequest(i, 100, 1024)
				out, err := c.Marshal(req)
				require.NoError(t, err)
				wire := out.Materialize()
				out.Free()

				got := &pb.PublishRequest{}
				data := frames(pool, wire, 16<<10)
				require.NoError(t, c.Unmarshal(data, got))
				data.Free() // what grpc does when Unmarshal returns
				sent, kept, wires = append(sent, req), append(kept, got), append(wires, wire)
			}
			for i := range sent {
				require.True(t, proto.Equal(sent[i], kept[i]), "request %d changed after later frames were decoded", i)
			}

			// Two payloads are as far apart in memory as on the wire exactly
			// when they point into one copy of the message.
			first, second := kept[0].Messages[0].Payload, kept[0].Messages[1].Payload
			onWire := bytes.Index(wires[0], second) - bytes.Index(wires[0], first)
			inMemory := int(uintptr(unsafe.Pointer(unsafe.SliceData(second))) - uintptr(unsafe.Pointer(unsafe.SliceData(first))))
			if md.mode == codec.Alias {
				require.Equal(t, onWire, inMemory, "Alias mode copied a payload")
			} else {
				require.Equal(t, len(first), cap(first), "Copy mode left a payload inside a larger buffer")
			}
		})
	}
}

// Messages without vtprotobuf methods (health, reflection) take protobuf-go's
// way, small and pooled sizes alike, and come out as with grpc's standard
// codec.
func TestFallback(t *testing.T) {
	std := encoding.GetCodecV2("proto")
	for _, md := range modes {
		for _, service := range []string{"", "streamgate.v1.Publisher", strings.Repeat("s", 5000)} {
			t.Run(fmt.Sprintf("%s/%d", md.name, len(service)), func(t *testing.T) {
				pool := poisonPool{codec.NewBufferPool()}
				c := codec.New(pool, md.mode)
				msg := &healthpb.HealthCheckRequest{Service: service}

				out, err := c.Marshal(msg)
				require.NoError(t, err)
				stdOut, err := std.Marshal(msg)
				require.NoError(t, err)
				require.Equal(t, stdOut.Materialize(), out.Materialize())
				stdOut.Free()

				got := &healthpb.HealthCheckRequest{}
				data := frames(pool, out.Materialize(), 1000)
				out.Free()
				require.NoError(t, c.Unmarshal(data, got))
				data.Free()
				require.True(t, proto.Equal(msg, got))
			})
		}
	}
}

// Values that are not protobuf messages are errors, not panics.
func TestNotAMessage(t *testing.T) {
	c := codec.New(codec.NewBufferPool(), codec.Alias)
	_, err := c.Marshal("text")
	require.Error(t, err)
	require.Error(t, c.Unmarshal(mem.BufferSlice{mem.SliceBuffer{0x0a, 0x00}}, new(string)))
	require.Equal(t, "proto", c.Name())
}

// badInputs are malformed encodings of every hot message type: each one's
// field 1 is a message (length-delimited).
var badInputs = []struct {
	name string
	wire []byte
}{
	{"truncated tag", []byte{0x80}},
	{"tag too long", []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}},
	{"field number 0", []byte{0x02, 0x00}},
	{"length past the end", []byte{0x0a, 0x05, 0x01}},
	{"length overflows", []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}},
	{"truncated length", []byte{0x0a, 0x80}},
	{"truncated inner message", []byte{0x0a, 0x02, 0x12, 0x05}},
	{"inner length past outer", []byte{0x0a, 0x02, 0x0a, 0x7f}},
	{"end group without start", []byte{0x0c}},
	{"truncated fixed64 unknown field", []byte{0x79, 0x01, 0x02}},
	// protobuf-go keeps a field of the wrong wire type as an unknown field;
	// the vtprotobuf code rejects it.
	{"field 1 as varint", []byte{0x08, 0x01}},
}

// Malformed input is an error, never a panic, in both modes.
func TestBadInput(t *testing.T) {
	types := []proto.Message{&pb.PublishRequest{}, &pb.PublishResponse{}, &pb.SubscribeRequest{}, &pb.SubscribeResponse{}}
	for _, md := range modes {
		for _, bad := range badInputs {
			for _, typ := range types {
				t.Run(fmt.Sprintf("%s/%s/%T", md.name, bad.name, typ), func(t *testing.T) {
					c := codec.New(codec.NewBufferPool(), md.mode)
					got := newOf(typ)
					require.NotPanics(t, func() {
						require.Error(t, c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(bad.wire)}, got))
					})
				})
			}
		}
	}
	t.Run("fallback", func(t *testing.T) {
		c := codec.New(codec.NewBufferPool(), codec.Alias)
		require.Error(t, c.Unmarshal(mem.BufferSlice{mem.SliceBuffer{0x0a, 0x05, 0x01}}, &healthpb.HealthCheckRequest{}))
	})
}

// FuzzUnmarshal: no input panics, and where protobuf-go and the codec both
// accept an input they decode the same message. (They may disagree on
// accepting one: the vtprotobuf code does not check UTF-8 and rejects
// fields of the wrong wire type, which protobuf-go keeps as unknown.)
func FuzzUnmarshal(f *testing.F) {
	for _, tc := range hotMessages() {
		if wire, err := proto.Marshal(tc.msg); err == nil && len(wire) < 4096 {
			f.Add(wire)
		}
	}
	for _, bad := range badInputs {
		f.Add(bad.wire)
	}
	types := []proto.Message{&pb.PublishRequest{}, &pb.PublishResponse{}, &pb.SubscribeRequest{}, &pb.SubscribeResponse{}}
	pool := codec.NewBufferPool()
	codecs := []*codec.Codec{codec.New(pool, codec.Copy), codec.New(pool, codec.Alias)}
	f.Fuzz(func(t *testing.T, wire []byte) {
		for _, typ := range types {
			want := newOf(typ)
			wantErr := proto.Unmarshal(wire, want)
			for _, c := range codecs {
				got := newOf(typ)
				data := frames(pool, wire, 3)
				err := c.Unmarshal(data, got)
				data.Free()
				if err == nil && wantErr == nil && !proto.Equal(normal(t, want), normal(t, got)) {
					t.Fatalf("%T: codec decoded %v, protobuf-go %v", typ, got, want)
				}
			}
		}
	})
}

// normal is m with its unknown fields as protobuf-go writes them: it
// re-encodes a tag written in more bytes than needed, the vtprotobuf code
// keeps such a field's bytes as they came.
func normal(t *testing.T, m proto.Message) proto.Message {
	wire, err := proto.Marshal(m)
	if err != nil {
		t.Fatalf("marshal %T: %v", m, err)
	}
	n := newOf(m)
	if err := proto.Unmarshal(wire, n); err != nil {
		t.Fatalf("unmarshal %T: %v", m, err)
	}
	return n
}
