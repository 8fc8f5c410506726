// Package client is a Go client for streamgate's gRPC API.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/streamgate/streamgate/internal/codec"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// Client is a connection to streamgate: one node, several, or a load
// balancer in front of them. It is safe for concurrent use.
type Client struct {
	conn *grpc.ClientConn
}

// DefaultDialOptions are what Dial starts from; options given to Dial are
// applied after them, so one option replaces only its own default:
//   - plaintext (grpc.WithTransportCredentials replaces it);
//   - a 16 MiB receive limit (a batch of messages can be large);
//   - streams spread round-robin over every address of the target, skipping
//     the ones that do not answer;
//   - keepalive pings every 10 s (the least grpc-go allows), so a stream on
//     a node that froze or vanished without closing its connections fails
//     within about 15 s instead of waiting forever;
//   - for this connection only (nothing is registered globally), a protobuf
//     codec on generated vtprotobuf code, a buffer pool that does not clear
//     buffers, and 1 MiB read and write buffers. Received messages are
//     decoded as with grpc's standard codec: every payload has memory of
//     its own.
func DefaultDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.ForceCodecV2(codec.New(codec.BufferPool(), codec.Copy))),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		experimental.WithBufferPool(codec.BufferPool()),
		grpc.WithReadBufferSize(1 << 20), grpc.WithWriteBufferSize(1 << 20),
	}
}

// listScheme names the resolver of a comma-separated address list.
var listScheme atomic.Uint64

// Dial connects to target, which is one of
//   - "host:port": every address the name resolves to (DNS), so a name with
//     one record per node reaches all of them;
//   - "host1:port,host2:port,...": these addresses;
//   - any gRPC target ("dns:///name:port", "unix:///path").
//
// Streams go round-robin over the addresses that answer, and the high-level
// Receive and Publisher open their next stream on another one when a node
// dies or drains. opts are applied after DefaultDialOptions.
func Dial(target string, opts ...grpc.DialOption) (*Client, error) {
	all := append(DefaultDialOptions(), opts...)
	if addrs := splitList(target); len(addrs) > 1 {
		r := manual.NewBuilderWithScheme(fmt.Sprintf("streamgate-list-%d", listScheme.Add(1)))
		state := resolver.State{}
		for _, a := range addrs {
			state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
		}
		r.InitialState(state)
		all = append(all, grpc.WithResolvers(r))
		target = r.Scheme() + ":///" + strings.Join(addrs, ",")
	} else if len(addrs) == 1 {
		target = addrs[0]
	} else {
		return nil, errors.New("streamgate: dial: no address given")
	}
	conn, err := grpc.NewClient(target, all...)
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn}, nil
}

// splitList splits a comma-separated target, dropping empty items.
func splitList(target string) []string {
	var out []string
	for _, a := range strings.Split(target, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Conn is the underlying connection, for the generated stubs.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Header is one message header.
type Header struct {
	Key   string
	Value []byte
}

// Message is one message to publish.
type Message struct {
	RequestID string // echoed in its Result
	Topic     string
	Key       []byte
	Payload   []byte
	Headers   []Header
}

// Result is the outcome of one published message.
type Result struct {
	RequestID string
	MessageID string     // on success
	Code      codes.Code // OK on success
	Error     string     // on failure
}

// Err is the result's failure as an error, nil on success.
func (r Result) Err() error {
	if r.Code == codes.OK {
		return nil
	}
	return fmt.Errorf("%s: %s", r.Code, r.Error)
}

// maxRequestBytes starts a new request before a batch grows past it (the
// server reads requests of up to 16 MiB).
const maxRequestBytes = 4 << 20

// Publish sends msgs on one stream in batches of batchSize and calls fn
// with each result as it arrives (from one goroutine). It returns when every
// message has its result, or the stream fails.
func (c *Client) Publish(ctx context.Context, msgs iter.Seq[Message], batchSize int, fn func(Result)) error {
	if batchSize < 1 {
		batchSize = 1
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := pb.NewPublisherClient(c.conn).Publish(ctx)
	if err != nil {
		return err
	}
	sendErr := make(chan error, 1)
	go func() { sendErr <- sendAll(stream, msgs, batchSize) }()
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return <-sendErr
		}
		if err != nil {
			cancel()
			<-sendErr
			return err
		}
		for _, r := range resp.GetResults() {
			fn(Result{
				RequestID: r.GetRequestId(),
				MessageID: r.GetMessageId(),
				Code:      codes.Code(r.GetError().GetCode()),
				Error:     r.GetError().GetMessage(),
			})
		}
	}
}

func sendAll(stream grpc.BidiStreamingClient[pb.PublishRequest, pb.PublishResponse], msgs iter.Seq[Message], batchSize int) error {
	batch := make([]*pb.OutgoingMessage, 0, batchSize)
	size := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := stream.Send(&pb.PublishRequest{Messages: batch})
		batch, size = make([]*pb.OutgoingMessage, 0, batchSize), 0
		return err
	}
	for m := range msgs {
		om := &pb.OutgoingMessage{RequestId: m.RequestID, Topic: m.Topic, Key: m.Key, Payload: m.Payload}
		n := len(m.RequestID) + len(m.Topic) + len(m.Key) + len(m.Payload) + 16
		for _, h := range m.Headers {
			om.Headers = append(om.Headers, &pb.Header{Key: h.Key, Value: h.Value})
			n += len(h.Key) + len(h.Value) + 4
		}
		if len(batch) > 0 && size+n > maxRequestBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		batch = append(batch, om)
		size += n
		if len(batch) == batchSize {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return stream.CloseSend()
}
