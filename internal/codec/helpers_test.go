package codec_test

import (
	"encoding/binary"
	"fmt"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// The gRPC test starts a server and a client: they must be gone after it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// poisonPool overwrites every buffer put back, so that a decoded message
// still pointing into a pooled buffer shows up as corrupted at once, not
// only after the buffer is handed out again.
type poisonPool struct{ mem.BufferPool }

func (p poisonPool) Put(b *[]byte) {
	full := (*b)[:cap(*b)]
	for i := range full {
		full[i] = 0xEE
	}
	p.BufferPool.Put(b)
}

// frames splits wire into pooled buffers of at most size bytes, as grpc's
// transport hands a received message to the codec (16 KiB DATA frames).
func frames(pool mem.BufferPool, wire []byte, size int) mem.BufferSlice {
	var s mem.BufferSlice
	for len(wire) > 0 {
		n := min(size, len(wire))
		b := pool.Get(n)
		copy(*b, wire[:n])
		s = append(s, mem.NewBuffer(b, pool))
		wire = wire[n:]
	}
	return s
}

// payload is size bytes that differ from every other (seed, i) pair's.
func payload(seed, i, size int) []byte {
	p := make([]byte, size)
	for j := range p {
		p[j] = byte(seed*31 + i*7 + j)
	}
	if size >= 16 {
		binary.BigEndian.PutUint64(p, uint64(seed))
		binary.BigEndian.PutUint64(p[8:], uint64(i))
	}
	return p
}

// publishRequest is a batch of n messages of size bytes, as the gateway
// receives them (the sgload driver sends 100 of 1 KiB).
func publishRequest(seed, n, size int) *pb.PublishRequest {
	req := &pb.PublishRequest{}
	for i := range n {
		req.Messages = append(req.Messages, &pb.OutgoingMessage{
			RequestId: fmt.Sprintf("req-%d-%d", seed, i),
			Topic:     "orders",
			Key:       []byte(fmt.Sprintf("key-%d", i%7)),
			Payload:   payload(seed, i, size),
			Headers:   []*pb.Header{{Key: "trace", Value: []byte(fmt.Sprintf("t%d", i))}},
		})
	}
	return req
}

// messageBatch is a SubscribeResponse with n messages of size bytes, as
// the gateway sends them.
func messageBatch(seed, n, size int) *pb.SubscribeResponse {
	batch := &pb.MessageBatch{}
	for i := range n {
		batch.Messages = append(batch.Messages, &pb.Message{
			Id:              fmt.Sprintf("id-%d-%d", seed, i),
			Topic:           "orders",
			Key:             []byte("k"),
			Payload:         payload(seed, i, size),
			Headers:         []*pb.Header{{Key: "h", Value: []byte("v")}, {Key: "empty"}},
			PublishTime:     &timestamppb.Timestamp{Seconds: 1_700_000_000 + int64(i), Nanos: int32(i)},
			DeliveryAttempt: uint32(i%3 + 1),
			Shard:           fmt.Sprintf("orders/%d", i%8),
		})
	}
	return &pb.SubscribeResponse{Response: &pb.SubscribeResponse_Messages{Messages: batch}}
}

// hotMessages are the messages of the Publish and Subscribe streams, in
// every shape the gateway sends or receives.
func hotMessages() []struct {
	name string
	msg  proto.Message
} {
	return []struct {
		name string
		msg  proto.Message
	}{
		{"PublishRequest/batch", publishRequest(1, 100, 1024)},
		{"PublishRequest/one", publishRequest(2, 1, 10)},
		{"PublishRequest/large", publishRequest(3, 2, 300_000)},
		{"PublishRequest/empty", &pb.PublishRequest{}},
		{"PublishRequest/empty-fields", &pb.PublishRequest{Messages: []*pb.OutgoingMessage{{}, {Topic: "t", Key: []byte{}, Payload: []byte{}}}}},
		{"PublishResponse", &pb.PublishResponse{Results: []*pb.PublishResult{
			{RequestId: "a", MessageId: "orders/3/17"},
			{RequestId: "b", Error: &pb.Status{Code: 14, Message: "backend unavailable"}},
			{RequestId: "c", Error: &pb.Status{}},
		}}},
		{"SubscribeRequest/open", &pb.SubscribeRequest{Request: &pb.SubscribeRequest_Open{Open: &pb.Open{
			Subscription: "billing", Topics: []string{"orders", "refunds"},
			StartPosition: pb.StartPosition_START_POSITION_EARLIEST, MaxUnacked: 500,
		}}}},
		{"SubscribeRequest/ack", &pb.SubscribeRequest{Request: &pb.SubscribeRequest_Ack{Ack: &pb.Ack{MessageIds: []string{"id-1", "id-2", ""}}}}},
		{"SubscribeRequest/nack", &pb.SubscribeRequest{Request: &pb.SubscribeRequest_Nack{Nack: &pb.Nack{MessageIds: []string{"id-3"}}}}},
		{"SubscribeRequest/empty", &pb.SubscribeRequest{}},
		{"SubscribeResponse/opened", &pb.SubscribeResponse{Response: &pb.SubscribeResponse_Opened{Opened: &pb.Opened{SubscriberId: "s-1", MaxUnacked: 500, Node: "node-a"}}}},
		{"SubscribeResponse/messages", messageBatch(4, 50, 1024)},
		{"SubscribeResponse/notice", &pb.SubscribeResponse{Response: &pb.SubscribeResponse_Notice{Notice: &pb.Notice{Status: &pb.Status{Code: 10, Message: "shard moved"}, Terminal: true}}}},
	}
}

// newOf is a new empty message of m's type.
func newOf(m proto.Message) proto.Message {
	return m.ProtoReflect().Type().New().Interface()
}
