package node_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/auth"
	"github.com/streamgate/streamgate/internal/testenv"
	"github.com/streamgate/streamgate/node"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// openSub opens a Subscribe stream on conn and returns it once opened, or
// the status the open ended with.
func openSub(ctx context.Context, t *testing.T, conn *grpc.ClientConn, sub string) (pb.Subscriber_SubscribeClient, error) {
	t.Helper()
	stream, err := pb.NewSubscriberClient(conn).Subscribe(ctx)
	if err != nil {
		return nil, err
	}
	require.NoError(t, stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Open{Open: earliest(sub, "t")}}))
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	require.NotNil(t, resp.GetOpened())
	return stream, nil
}

// With auth off, a caller is its IP address: past --max-streams-per-identity
// open Publish and Subscribe streams, a new one fails with
// RESOURCE_EXHAUSTED naming the limit; once one closes, a new one opens.
func TestLimit_StreamsPerIdentityByAddressWhenAuthIsOff(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Node: func(c *node.Config) { c.MaxStreamsPerIdentity = 2 }})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := env.Client.Conn()
	subCtx, closeSub := context.WithCancel(ctx)
	_, err := openSub(subCtx, t, conn, "s1")
	require.NoError(t, err)
	pub, err := pb.NewPublisherClient(conn).Publish(ctx)
	require.NoError(t, err)
	require.NoError(t, pub.Send(&pb.PublishRequest{Messages: []*pb.OutgoingMessage{{RequestId: "r", Topic: "t", Payload: []byte("x")}}}))
	_, err = pub.Recv()
	require.NoError(t, err, "the publish stream is open")

	_, err = openSub(ctx, t, conn, "s2")
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	assert.Contains(t, status.Convert(err).Message(), "address 127.0.0.1 has 2 Publish and Subscribe streams open, the limit (--max-streams-per-identity)")

	closeSub()
	require.Eventually(t, func() bool {
		s, err := openSub(ctx, t, conn, "s2")
		return err == nil && s != nil
	}, 10*time.Second, 20*time.Millisecond, "a closed stream frees its place")
}

// With auth on, the identity counts, whatever connection it comes on.
func TestLimit_StreamsPerIdentityCountsTheAuthenticatedIdentity(t *testing.T) {
	dir := t.TempDir()
	cfg := auth.DefaultConfig()
	cfg.TokensFile = filepath.Join(dir, "tokens")
	require.NoError(t, os.WriteFile(cfg.TokensFile, []byte(tokenLine("alice", "alice-tok")+tokenLine("bob", "bob-tok")), 0o600))
	a, err := auth.New(cfg, slog.New(slog.DiscardHandler), nil)
	require.NoError(t, err)
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"},
		Node:        func(c *node.Config) { c.MaxStreamsPerIdentity = 1 },
		NodeOptions: func(o *node.Options) { o.Auth = a },
		DialOptions: []grpc.DialOption{client.WithToken("alice-tok")},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = openSub(ctx, t, connAs(t, env.Addr, "alice-tok"), "a1")
	require.NoError(t, err)
	_, err = openSub(ctx, t, connAs(t, env.Addr, "alice-tok"), "a2")
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	assert.Contains(t, status.Convert(err).Message(), `identity "alice" has 1 Publish and Subscribe streams open, the limit (--max-streams-per-identity)`)
	_, err = openSub(ctx, t, connAs(t, env.Addr, "bob-tok"), "b1")
	require.NoError(t, err, "another identity from the same address has a count of its own")
}

// Past --max-opens-per-second, an open fails with RESOURCE_EXHAUSTED saying
// when to retry.
func TestLimit_OpenRatePerIdentity(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Node: func(c *node.Config) { c.MaxOpensPerSecond = 0.01 }})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := openSub(ctx, t, env.Client.Conn(), "s1")
	require.NoError(t, err, "the burst of 1")
	_, err = openSub(ctx, t, env.Client.Conn(), "s2")
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	msg := status.Convert(err).Message()
	assert.Contains(t, msg, "address 127.0.0.1 opens Subscribe streams faster than the limit of 0.01 per second (--max-opens-per-second): retry after 1m")
	pub, err := pb.NewPublisherClient(env.Client.Conn()).Publish(ctx)
	require.NoError(t, err)
	require.NoError(t, pub.Send(&pb.PublishRequest{Messages: []*pb.OutgoingMessage{{RequestId: "r", Topic: "t", Payload: []byte("x")}}}))
	_, err = pub.Recv()
	require.NoError(t, err, "publish streams are not rate limited")
}

// --max-streams-per-connection is advertised to the client, which queues
// a call past it until a stream of the connection ends.
func TestLimit_StreamsPerConnectionQueueAtTheClient(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Node: func(c *node.Config) { c.MaxStreamsPerConnection = 1 }})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := connAs(t, env.Addr, "")
	subCtx, closeSub := context.WithCancel(ctx)
	_, err := openSub(subCtx, t, conn, "s1")
	require.NoError(t, err)
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	_, err = openSub(short, t, conn, "s2")
	require.Equal(t, codes.DeadlineExceeded, status.Code(err), "the second call waits for the first: %v", err)
	closeSub()
	_, err = openSub(ctx, t, conn, "s2")
	require.NoError(t, err, "the queued call goes once the first stream ends")
}
