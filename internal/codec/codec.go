// Package codec is streamgate's gRPC codec for protobuf. For messages with
// vtprotobuf's generated methods (the streamgate API) it marshals with
// MarshalToSizedBufferVT straight into a pooled buffer and unmarshals with
// UnmarshalVT or UnmarshalVTUnsafe, instead of protobuf-go's table-driven
// code; any other message (health, reflection) gets what grpc's standard
// codec does. It is given to grpc per server or per connection
// (grpc.ForceServerCodecV2, grpc.ForceCodecV2), never registered globally:
// the client package is a library, and a global registration would change
// the codec of every other grpc user in the importing program.
//
// Unlike protobuf-go, the vtprotobuf code does not check that string fields
// hold valid UTF-8, neither when it marshals nor when it unmarshals.
package codec

import (
	"bytes"
	"errors"
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// Name is the codec's name: grpc's content-subtype for protobuf, so peers
// with the standard codec understand it.
const Name = "proto"

// Mode is how Unmarshal treats the bytes and string fields it decodes.
type Mode int

const (
	// Copy gives every bytes and string field memory of its own, as grpc's
	// standard codec does: the received message is read from grpc's pooled
	// buffers, which go back to the pool afterwards.
	Copy Mode = iota
	// Alias copies the received message once, into one new allocation, and
	// leaves every bytes and string field pointing into it. That allocation
	// is never returned to a pool: the decoded message, and whatever keeps
	// one of its fields (franz-go keeps a payload until it is produced),
	// keeps all of it alive. Two consequences for holders of such fields:
	//   - keeping one field keeps the whole message's memory;
	//   - a bytes field's capacity runs to the end of the message, so
	//     appending to it overwrites the fields after it (strings among
	//     them): copy a field before appending to it.
	Alias
)

// vtMessage is what protoc-gen-go-vtproto generates with the features
// marshal, unmarshal, unmarshal_unsafe and size (proto/gen.sh).
type vtMessage interface {
	SizeVT() int
	MarshalToSizedBufferVT(dAtA []byte) (int, error)
	UnmarshalVT(dAtA []byte) error
	UnmarshalVTUnsafe(dAtA []byte) error
	Reset()
}

// errSizeChanged reports a message that changed while it was marshalled
// (another goroutine wrote to it).
var errSizeChanged = errors.New("codec: message size changed during marshal")

// Codec is a grpc encoding.CodecV2 for protobuf. It is safe for concurrent
// use.
type Codec struct {
	pool mem.BufferPool
	mode Mode
}

var _ encoding.CodecV2 = (*Codec)(nil)

// New returns a codec that takes its marshal buffers (and, in Copy mode,
// the buffers it assembles received messages in) from pool, and decodes
// bytes and strings as mode says.
func New(pool mem.BufferPool, mode Mode) *Codec {
	return &Codec{pool: pool, mode: mode}
}

// Name implements encoding.CodecV2.
func (c *Codec) Name() string { return Name }

// Marshal implements encoding.CodecV2.
func (c *Codec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(vtMessage); ok {
		size := m.SizeVT()
		buf, out := c.get(size)
		// It writes backwards from the end of buf: when n == size, buf is
		// filled, which a buffer from a pool that does not zero needs.
		n, err := m.MarshalToSizedBufferVT(buf)
		if err == nil && n != size {
			err = errSizeChanged
		}
		if err != nil {
			out.Free()
			return nil, err
		}
		return mem.BufferSlice{out}, nil
	}
	m := messageV2Of(v)
	if m == nil {
		return nil, fmt.Errorf("codec: cannot marshal %T: not a protobuf message", v)
	}
	// UseCachedSize reuses what proto.Size just computed.
	size := proto.Size(m)
	buf, out := c.get(size)
	enc, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(buf[:0], m)
	if err == nil && len(enc) != size {
		err = errSizeChanged
	}
	if err != nil {
		out.Free()
		return nil, err
	}
	return mem.BufferSlice{out}, nil
}

// get returns a buffer of size bytes and the mem.Buffer that owns it:
// pooled, or a plain slice for sizes grpc does not pool either.
func (c *Codec) get(size int) ([]byte, mem.Buffer) {
	if mem.IsBelowBufferPoolingThreshold(size) {
		b := make([]byte, size)
		return b, mem.SliceBuffer(b)
	}
	b := c.pool.Get(size)
	return *b, mem.NewBuffer(b, c.pool)
}

// Unmarshal implements encoding.CodecV2. grpc frees data when it returns.
func (c *Codec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(vtMessage); ok {
		// The vtprotobuf methods merge into m; proto.Unmarshal, which the
		// standard codec uses, replaces it.
		m.Reset()
		if c.mode == Alias {
			return m.UnmarshalVTUnsafe(materialize(data))
		}
		buf := data.MaterializeToBuffer(c.pool)
		defer buf.Free()
		return m.UnmarshalVT(buf.ReadOnlyData())
	}
	m := messageV2Of(v)
	if m == nil {
		return fmt.Errorf("codec: cannot unmarshal into %T: not a protobuf message", v)
	}
	buf := data.MaterializeToBuffer(c.pool)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m) // copies what it keeps
}

// materialize copies data into one new allocation of exactly its length.
// bytes.Join allocates without clearing the memory first (it is all
// overwritten at once); mem.BufferSlice.Materialize clears it.
func materialize(data mem.BufferSlice) []byte {
	var parts [16][]byte // a message of up to 16 frames needs no other allocation
	s := parts[:0]
	for _, b := range data {
		s = append(s, b.ReadOnlyData())
	}
	return bytes.Join(s, nil)
}

// messageV2Of is the message as protobuf-go's API, as grpc's standard
// codec accepts it: generated by protoc-gen-go of either API.
func messageV2Of(v any) proto.Message {
	switch v := v.(type) {
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(v)
	case protoadapt.MessageV2:
		return v
	}
	return nil
}
