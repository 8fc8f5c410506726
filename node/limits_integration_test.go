package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/testenv"
	"github.com/streamgate/streamgate/node"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// A message with too many headers or too long a key fails alone with
// INVALID_ARGUMENT naming the limit's flag; messages at the limit and the
// rest of the stream are published.
func TestLimit_HeaderCountAndKeySizeFailAloneWithInvalidArgument(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Node: func(c *node.Config) {
		c.MaxHeaders = 3
		c.MaxKeyBytes = 8
	}})
	headers := func(n int) []client.Header {
		hs := make([]client.Header, n)
		for i := range hs {
			hs[i] = client.Header{Key: fmt.Sprint("h", i), Value: []byte("v")}
		}
		return hs
	}
	results := publish(t, env.Client, []client.Message{
		{RequestID: "ok-headers", Topic: "t", Payload: []byte("a"), Headers: headers(3)},
		{RequestID: "many-headers", Topic: "t", Payload: []byte("b"), Headers: headers(4)},
		{RequestID: "ok-key", Topic: "t", Key: []byte("12345678"), Payload: []byte("c")},
		{RequestID: "long-key", Topic: "t", Key: []byte("123456789"), Payload: []byte("d")},
		{RequestID: "ok-last", Topic: "t", Payload: []byte("e")},
	}, 10)
	for _, id := range []string{"ok-headers", "ok-key", "ok-last"} {
		assert.Equal(t, codes.OK, results[id].Code, "%s: %s", id, results[id].Error)
	}
	assert.Equal(t, codes.InvalidArgument, results["many-headers"].Code)
	assert.Contains(t, results["many-headers"].Error, "4 headers, over the limit of 3 (--max-headers)")
	assert.Equal(t, codes.InvalidArgument, results["long-key"].Code)
	assert.Contains(t, results["long-key"].Error, "key is 9 bytes, over the limit of 8 (--max-key-bytes)")
	recs := testenv.ReadAll(t, env.Consumer(t, "t"), 3, 10*time.Second)
	assert.Len(t, recs, 3)
}

// An ack, nack or modify_ack_deadline of more ids than --max-ack-ids ends
// the stream with INVALID_ARGUMENT naming the limit; one at it does not.
func TestLimit_AckIDsPerRequestOverTheLimitEndsTheStream(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Node: func(c *node.Config) { c.MaxAckIDs = 3 }})
	ids := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprint("no-such-id-", i)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		req  func(ids []string) *pb.SubscribeRequest
	}{
		{"ack", func(ids []string) *pb.SubscribeRequest {
			return &pb.SubscribeRequest{Request: &pb.SubscribeRequest_Ack{Ack: &pb.Ack{MessageIds: ids}}}
		}},
		{"nack", func(ids []string) *pb.SubscribeRequest {
			return &pb.SubscribeRequest{Request: &pb.SubscribeRequest_Nack{Nack: &pb.Nack{MessageIds: ids}}}
		}},
		{"modify_ack_deadline", func(ids []string) *pb.SubscribeRequest {
			return &pb.SubscribeRequest{Request: &pb.SubscribeRequest_ModifyAckDeadline{ModifyAckDeadline: &pb.ModifyAckDeadline{MessageIds: ids, AckDeadlineSeconds: 10}}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			stream, err := pb.NewSubscriberClient(env.Client.Conn()).Subscribe(ctx)
			require.NoError(t, err)
			require.NoError(t, stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Open{Open: earliest("s-"+tc.name, "t")}}))
			resp, err := stream.Recv()
			require.NoError(t, err)
			require.NotNil(t, resp.GetOpened())
			require.NoError(t, stream.Send(tc.req(ids(3))), "at the limit")
			require.NoError(t, stream.Send(tc.req(ids(4))))
			for {
				_, err = stream.Recv()
				if err != nil {
					break
				}
			}
			st := status.Convert(err)
			require.Equal(t, codes.InvalidArgument, st.Code(), "%v", err)
			assert.Contains(t, st.Message(), tc.name+": 4 message ids, over the limit of 3 per request (--max-ack-ids)")
		})
	}
}
