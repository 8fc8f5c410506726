package codec_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	"github.com/streamgate/streamgate/internal/codec"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// keeper keeps every publish request it receives, as the gateway keeps
// payloads until they are produced, and sends batches to subscribers.
type keeper struct {
	pb.UnimplementedPublisherServer
	pb.UnimplementedSubscriberServer
	kept    chan []*pb.PublishRequest
	batches []*pb.SubscribeResponse
}

func (k *keeper) Publish(stream grpc.BidiStreamingServer[pb.PublishRequest, pb.PublishResponse]) error {
	var reqs []*pb.PublishRequest
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			k.kept <- reqs
			return nil
		}
		if err != nil {
			return err
		}
		reqs = append(reqs, req)
	}
}

func (k *keeper) Subscribe(stream grpc.BidiStreamingServer[pb.SubscribeRequest, pb.SubscribeResponse]) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	for _, b := range k.batches {
		if err := stream.Send(b); err != nil {
			return err
		}
	}
	return nil
}

// Through a real gRPC server and client sharing a pool that poisons what
// is put back: the server decodes in Alias mode, the client in Copy mode,
// and messages each side kept are intact after many more frames went
// through the pool. Health requests take the fallback.
func TestGRPCKeepsDecodedMessages(t *testing.T) {
	pool := poisonPool{codec.NewBufferPool()}
	k := &keeper{kept: make(chan []*pb.PublishRequest, 1)}
	for i := range 20 {
		k.batches = append(k.batches, messageBatch(i, 100, 1024))
	}
	conn := serve(t, pool, k)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, hc.GetStatus())

	pub, err := pb.NewPublisherClient(conn).Publish(ctx)
	require.NoError(t, err)
	var sent []*pb.PublishRequest
	for i := range 30 {
		req := publishRequest(i, 100, 1024)
		require.NoError(t, pub.Send(req))
		sent = append(sent, req)
	}
	require.NoError(t, pub.CloseSend())
	_, err = pub.Recv()
	require.ErrorIs(t, err, io.EOF)
	var kept []*pb.PublishRequest
	select {
	case kept = <-k.kept:
	case <-ctx.Done():
		t.Fatal("the server did not finish the publish stream")
	}
	require.Len(t, kept, len(sent))
	for i := range sent {
		require.True(t, proto.Equal(sent[i], kept[i]), "server: request %d changed after later frames", i)
	}

	sub, err := pb.NewSubscriberClient(conn).Subscribe(ctx)
	require.NoError(t, err)
	require.NoError(t, sub.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Open{Open: &pb.Open{Subscription: "s", Topics: []string{"orders"}}}}))
	var got []*pb.SubscribeResponse
	for {
		r, err := sub.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		got = append(got, r)
	}
	require.Len(t, got, len(k.batches))
	for i := range got {
		require.True(t, proto.Equal(k.batches[i], got[i]), "client: batch %d changed after later frames", i)
	}
}

// serve starts a gRPC server on an in-memory listener with the codec and
// pool as node/server.go configures them, and returns a client connection
// configured as client.DefaultDialOptions does. Both stop when t ends.
func serve(t *testing.T, pool mem.BufferPool, k *keeper) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(grpc.ForceServerCodecV2(codec.New(pool, codec.Alias)), experimental.BufferPool(pool))
	pb.RegisterPublisherServer(srv, k)
	pb.RegisterSubscriberServer(srv, k)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		require.NoError(t, <-served)
	})

	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec.New(pool, codec.Copy))),
		experimental.WithBufferPool(pool))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, conn.Close()) })
	return conn
}
