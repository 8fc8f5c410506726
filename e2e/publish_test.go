package e2e

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/client"
)

// TestE2E_PublishThroughContainerReadBackFromBroker publishes through a
// streamgate container from the test process, via the gRPC port mapped on
// the host, and reads every message back from the devbroker container the
// gateway reached by its network alias: nothing lost, nothing duplicated,
// keys, headers and payloads intact, and each key's messages in the order
// they were published.
func TestE2E_PublishThroughContainerReadBackFromBroker(t *testing.T) {
	requireDocker(t)
	const (
		topic      = "e2e-events"
		partitions = 4
		count      = 1000
		batchSize  = 50
	)
	nw := newNetwork(t)
	broker := startBroker(t, nw, topic, partitions)
	gateway := startGateway(t, nw, "n1")

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	grpcAddr, err := gateway.PortEndpoint(ctx, grpcPort, "")
	require.NoError(t, err)
	c, err := client.Dial(grpcAddr)
	require.NoError(t, err)
	defer c.Close()

	msgs := testMessages(topic, count)
	results := make(map[string]client.Result, count)
	var dupResults []string
	err = c.Publish(ctx, slices.Values(msgs), batchSize, func(r client.Result) {
		// Publish calls fn from one goroutine: no lock needed.
		if _, dup := results[r.RequestID]; dup {
			dupResults = append(dupResults, r.RequestID)
		}
		results[r.RequestID] = r
	})
	require.NoError(t, err, "publish")
	require.Empty(t, dupResults, "requests with more than one result")
	require.Len(t, results, count, "results")
	ids := make(map[string]string, count)
	for _, m := range msgs {
		r := results[m.RequestID]
		require.Equal(t, codes.OK, r.Code, "request %s: %s", m.RequestID, r.Error)
		require.NotEmpty(t, r.MessageID, "request %s: no message id", m.RequestID)
		prev, dup := ids[r.MessageID]
		require.False(t, dup, "requests %s and %s got the same message id %q", prev, m.RequestID, r.MessageID)
		ids[r.MessageID] = m.RequestID
	}

	brokerAddr, err := broker.PortEndpoint(ctx, brokerPort, "")
	require.NoError(t, err)
	requireAdvertised(ctx, t, brokerClient(t, brokerAddr))
	require.EqualValues(t, count, recordCount(ctx, t, brokerClient(t, brokerAddr), topic),
		"records in %s: a message was lost or written twice", topic)

	recs := consume(ctx, t, brokerAddr, topic, count)
	require.Len(t, recs, count)
	byPayload := make(map[string]int, count)
	for i, m := range msgs {
		byPayload[string(m.Payload)] = i
	}
	seen := make([]bool, count)
	lastOfKey := map[string]int{}        // index of the last message read per key
	partitionOfKey := map[string]int32{} // where each key's messages went
	for _, rec := range recs {
		i, ok := byPayload[string(rec.Value)]
		require.True(t, ok, "read a record nobody published: %q", rec.Value)
		require.False(t, seen[i], "read message %d twice", i)
		seen[i] = true
		want := msgs[i]
		require.Equal(t, topic, rec.Topic)
		require.Equal(t, string(want.Key), string(rec.Key), "key of message %d", i)
		require.Equal(t, headerStrings(want.Headers), recordHeaderStrings(rec.Headers), "headers of message %d", i)

		if len(want.Key) == 0 {
			continue
		}
		key := string(want.Key)
		if p, ok := partitionOfKey[key]; ok {
			require.Equal(t, p, rec.Partition, "key %q is in two partitions", key)
		}
		partitionOfKey[key] = rec.Partition
		if last, ok := lastOfKey[key]; ok {
			require.Less(t, last, i, "key %q: message %d comes after message %d in partition %d", key, i, last, rec.Partition)
		}
		lastOfKey[key] = i
	}
}

// testMessages returns n messages for topic with distinct payloads. Two in
// three have one of ten keys (to check per-key order), every other one has
// headers, and a few have a header repeated (Kafka allows it and keeps the
// order).
func testMessages(topic string, n int) []client.Message {
	msgs := make([]client.Message, n)
	for i := range msgs {
		m := client.Message{
			RequestID: "req-" + strconv.Itoa(i),
			Topic:     topic,
			Payload:   fmt.Appendf(nil, "e2e message %04d of %d: %x", i, n, i*7919),
		}
		if i%3 != 0 {
			m.Key = fmt.Appendf(nil, "key-%d", i%10)
		}
		if i%2 == 0 {
			m.Headers = []client.Header{
				{Key: "seq", Value: []byte(strconv.Itoa(i))},
				{Key: "source", Value: []byte("e2e")},
			}
			if i%10 == 0 {
				m.Headers = append(m.Headers, client.Header{Key: "seq", Value: []byte("again")})
			}
		}
		msgs[i] = m
	}
	return msgs
}

// headerStrings and recordHeaderStrings put headers in one comparable form
// (an absent and an empty list are the same).
func headerStrings(hs []client.Header) []string {
	out := []string{}
	for _, h := range hs {
		out = append(out, h.Key+"="+string(h.Value))
	}
	return out
}

func recordHeaderStrings(hs []kgo.RecordHeader) []string {
	out := []string{}
	for _, h := range hs {
		out = append(out, h.Key+"="+string(h.Value))
	}
	return out
}
