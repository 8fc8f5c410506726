package client_test

import (
	"bytes"
	"context"
	"fmt"
	"iter"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/testenv"
)

// What Recv returns behaves as if each field had memory of its own, however
// the codec decodes frames: appending to a payload, key or header value
// never writes over the next message, and everything stays intact while
// later batches arrive.
func TestSubscriber_ReceivedFieldsStayIntactAndAppendSafe(t *testing.T) {
	e := testenv.Start(t, testenv.Options{Topics: []string{"frames"}, Partitions: 1})
	const n = 300
	var msgs iter.Seq[client.Message] = func(yield func(client.Message) bool) {
		for i := range n {
			m := client.Message{Topic: "frames", Key: fmt.Appendf(nil, "k%d", i), Payload: fmt.Appendf(nil, "payload-%d", i),
				Headers: []client.Header{{Key: fmt.Sprintf("h%d", i), Value: fmt.Appendf(nil, "v%d", i)}}}
			if !yield(m) {
				return
			}
		}
	}
	require.NoError(t, e.Client.Publish(t.Context(), msgs, 50, func(r client.Result) { require.Equal(t, codes.OK, r.Code, r.Error) }))

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	sub, err := e.Client.Subscribe(ctx, client.SubscribeOptions{Subscription: "frames", Topics: []string{"frames"}, FromBeginning: true, MaxUnacked: 100})
	require.NoError(t, err)
	defer sub.Close()
	var got []client.Received
	for len(got) < n {
		batch, _, err := sub.RecvContext(ctx)
		require.NoError(t, err)
		for i := range batch {
			m := &batch[i]
			m.Payload = append(m.Payload, "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"...)
			m.Key = append(m.Key, 'X')
			m.Headers[0].Value = append(m.Headers[0].Value, 'X')
			require.NoError(t, sub.Ack(m.ID))
		}
		got = append(got, batch...)
	}
	for i, m := range got {
		require.Equal(t, fmt.Sprintf("payload-%dXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", i), string(m.Payload))
		require.Equal(t, fmt.Sprintf("k%dX", i), string(m.Key))
		require.Equal(t, fmt.Sprintf("h%d", i), m.Headers[0].Key)
		require.True(t, bytes.Equal(fmt.Appendf(nil, "v%dX", i), m.Headers[0].Value))
		require.Equal(t, "frames", m.Topic)
		require.Equal(t, "frames/0", m.Shard)
		require.NotEmpty(t, m.ID)
	}
}
