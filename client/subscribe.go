package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"

	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// SubscribeOptions open a subscriber.
type SubscribeOptions struct {
	Subscription  string
	Topics        []string
	FromBeginning bool   // start at the earliest message if the subscription has no position yet
	MaxUnacked    uint32 // 0: the server's limit
}

// Subscriber is one open Subscribe stream. Recv from one goroutine; Ack and
// Nack may be called from another.
type Subscriber struct {
	stream pb.Subscriber_SubscribeClient
	cancel context.CancelFunc
	// ID, MaxUnacked and Node come from the server's opened reply.
	ID         string
	MaxUnacked uint32
	Node       string
}

// Received is one message.
type Received struct {
	ID              string
	Topic           string
	Shard           string
	Key             []byte
	Payload         []byte
	Headers         []Header
	PublishTime     time.Time
	DeliveryAttempt uint32
}

// Notice is a condition the server reports; Terminal ones end the stream.
type Notice struct {
	Code     codes.Code
	Message  string
	Terminal bool
}

// Subscribe opens a subscriber and waits for the server's opened reply.
func (c *Client) Subscribe(ctx context.Context, o SubscribeOptions) (*Subscriber, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := pb.NewSubscriberClient(c.conn).Subscribe(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	start := pb.StartPosition_START_POSITION_UNSPECIFIED
	if o.FromBeginning {
		start = pb.StartPosition_START_POSITION_EARLIEST
	}
	err = stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Open{Open: &pb.Open{
		Subscription: o.Subscription, Topics: o.Topics, StartPosition: start, MaxUnacked: o.MaxUnacked,
	}}})
	if err != nil {
		cancel()
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		cancel()
		return nil, err
	}
	opened := resp.GetOpened()
	if opened == nil {
		cancel()
		return nil, errors.New("streamgate: the server did not answer opened")
	}
	return &Subscriber{stream: stream, cancel: cancel, ID: opened.GetSubscriberId(), MaxUnacked: opened.GetMaxUnacked(), Node: opened.GetNode()}, nil
}

// Recv waits for the next batch of messages or a notice (one of the two is
// set). After a terminal notice, or when the stream ends, it returns an
// error with the stream's status.
func (s *Subscriber) Recv() ([]Received, *Notice, error) {
	resp, err := s.stream.Recv()
	if err != nil {
		return nil, nil, err
	}
	if n := resp.GetNotice(); n != nil {
		return nil, &Notice{Code: codes.Code(n.GetStatus().GetCode()), Message: n.GetStatus().GetMessage(), Terminal: n.GetTerminal()}, nil
	}
	batch := resp.GetMessages().GetMessages()
	out := make([]Received, len(batch))
	for i, m := range batch {
		r := Received{
			ID: m.GetId(), Topic: m.GetTopic(), Shard: m.GetShard(), Key: m.GetKey(), Payload: m.GetPayload(),
			DeliveryAttempt: m.GetDeliveryAttempt(),
		}
		if m.GetPublishTime() != nil {
			r.PublishTime = m.GetPublishTime().AsTime()
		}
		for _, h := range m.GetHeaders() {
			r.Headers = append(r.Headers, Header{Key: h.GetKey(), Value: h.GetValue()})
		}
		out[i] = r
	}
	return out, nil, nil
}

// Ack acks messages by id.
func (s *Subscriber) Ack(ids ...string) error {
	return s.stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Ack{Ack: &pb.Ack{MessageIds: ids}}})
}

// Nack hands messages back for redelivery.
func (s *Subscriber) Nack(ids ...string) error {
	return s.stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Nack{Nack: &pb.Nack{MessageIds: ids}}})
}

// Close leaves: the server hands un-acked messages to other subscribers.
func (s *Subscriber) Close() error {
	err := s.stream.CloseSend()
	s.cancel()
	return err
}

// String describes a notice.
func (n *Notice) String() string {
	kind := "notice"
	if n.Terminal {
		kind = "terminal notice"
	}
	return fmt.Sprintf("%s %s: %s", kind, n.Code, n.Message)
}
