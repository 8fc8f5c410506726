package node_test

import (
	"context"
	"fmt"
	"iter"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/broker/kafka"
	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/testenv"
	"github.com/streamgate/streamgate/node"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// publish sends msgs on one stream and returns the results by request id.
func publish(t *testing.T, c *client.Client, msgs []client.Message, batch int) map[string]client.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	results := make(map[string]client.Result, len(msgs))
	err := c.Publish(ctx, slices.Values(msgs), batch, func(r client.Result) {
		_, dup := results[r.RequestID]
		require.False(t, dup, "two results for request %q", r.RequestID)
		results[r.RequestID] = r
	})
	require.NoError(t, err)
	require.Len(t, results, len(msgs), "one result per message")
	return results
}

func TestPublish_10000MessagesOverThreeTopicsAllGetOKWithMessageIDs(t *testing.T) {
	topics := []string{"orders", "payments", "audit"}
	env := testenv.Start(t, testenv.Options{Topics: topics, Partitions: 4})

	const n = 10000
	msgs := make([]client.Message, n)
	for i := range msgs {
		msgs[i] = client.Message{
			RequestID: fmt.Sprint(i),
			Topic:     topics[i%3],
			Payload:   fmt.Appendf(nil, "payload-%d", i),
		}
	}
	results := publish(t, env.Client, msgs, 250)
	ids := make(map[string]bool, n)
	for _, r := range results {
		require.Equal(t, codes.OK, r.Code, "request %s: %s", r.RequestID, r.Error)
		require.NotEmpty(t, r.MessageID)
		require.False(t, ids[r.MessageID], "message id %q given twice", r.MessageID)
		ids[r.MessageID] = true
	}
	recs := testenv.ReadAll(t, env.Consumer(t, topics...), n, 30*time.Second)
	perTopic := map[string]int{}
	for _, r := range recs {
		perTopic[r.Topic]++
	}
	assert.Equal(t, map[string]int{"orders": 3334, "payments": 3333, "audit": 3333}, perTopic)
}

func TestPublish_OneKeyLandsOnOneShardInSendOrderWithHeadersAndKeysIntact(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 8})
	const n = 2000
	keys := []string{"alice", "bob", "carol"}
	msgs := make([]client.Message, n)
	for i := range msgs {
		msgs[i] = client.Message{
			RequestID: fmt.Sprint(i),
			Topic:     "t",
			Key:       []byte(keys[i%len(keys)]),
			Payload:   fmt.Appendf(nil, "%d", i),
			Headers: []client.Header{
				{Key: "seq", Value: fmt.Appendf(nil, "%d", i)},
				{Key: "empty", Value: nil},
				{Key: "seq", Value: []byte("repeated keys keep their order")},
			},
		}
	}
	results := publish(t, env.Client, msgs, 100)
	for _, r := range results {
		require.Equal(t, codes.OK, r.Code, r.Error)
	}
	recs := testenv.ReadAll(t, env.Consumer(t, "t"), n, 30*time.Second)
	shardOf := map[string]int32{}
	last := map[string]int{}
	for _, r := range recs {
		k := string(r.Key)
		if p, ok := shardOf[k]; ok {
			require.Equal(t, p, r.Partition, "key %q on two shards", k)
		}
		shardOf[k] = r.Partition
		// Java's producer: murmur2(key) & 0x7fffffff % partitions.
		require.Equal(t, int32((murmur2(r.Key)&0x7fffffff)%8), r.Partition, "key %q not where Kafka's partitioner puts it", k)
		var seq int
		_, err := fmt.Sscan(string(r.Value), &seq)
		require.NoError(t, err)
		if prev, ok := last[k]; ok {
			require.Greater(t, seq, prev, "key %q out of send order", k)
		}
		last[k] = seq
		require.Len(t, r.Headers, 3)
		assert.Equal(t, "seq", r.Headers[0].Key)
		assert.Equal(t, string(r.Value), string(r.Headers[0].Value))
		assert.Equal(t, "empty", r.Headers[1].Key)
		assert.Empty(t, r.Headers[1].Value)
		assert.Equal(t, "repeated keys keep their order", string(r.Headers[2].Value))
	}
	require.Len(t, last, len(keys))
}

// murmur2 is Kafka's Utils.murmur2, written out here so the test does not
// trust the code under test.
func murmur2(data []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	h := seed ^ uint32(len(data))
	for len(data) >= 4 {
		k := uint32(data[0]) | uint32(data[1])<<8 | uint32(data[2])<<16 | uint32(data[3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
		data = data[4:]
	}
	switch len(data) {
	case 3:
		h ^= uint32(data[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

func TestPublish_UnknownTopicFailsFastWithNotFound(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"known"}})
	start := time.Now()
	results := publish(t, env.Client, []client.Message{
		{RequestID: "a", Topic: "no-such-topic", Payload: []byte("x")},
		{RequestID: "b", Topic: "known", Payload: []byte("y")},
	}, 10)
	elapsed := time.Since(start)
	assert.Equal(t, codes.NotFound, results["a"].Code, results["a"].Error)
	assert.Contains(t, results["a"].Error, "topic not found")
	assert.Equal(t, codes.OK, results["b"].Code, "a bad message must not fail its neighbour")
	assert.Less(t, elapsed, 2*time.Second, "unknown topic must fail fast, not after retries")
}

func TestPublish_EmptyTopicAndOversizedMessageFailAloneWithInvalidArgument(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Node: func(c *node.Config) { c.MaxMessageBytes = 1000 }})
	results := publish(t, env.Client, []client.Message{
		{RequestID: "ok1", Topic: "t", Payload: []byte("a")},
		{RequestID: "empty-topic", Topic: "", Payload: []byte("b")},
		{RequestID: "ok2", Topic: "t", Payload: []byte("c")},
		{RequestID: "oversized", Topic: "t", Payload: make([]byte, 1001)},
		{RequestID: "ok3", Topic: "t", Payload: []byte("d")},
	}, 10)
	for _, id := range []string{"ok1", "ok2", "ok3"} {
		assert.Equal(t, codes.OK, results[id].Code, "%s: %s", id, results[id].Error)
	}
	assert.Equal(t, codes.InvalidArgument, results["empty-topic"].Code)
	assert.Contains(t, results["empty-topic"].Error, "topic is empty")
	assert.Equal(t, codes.InvalidArgument, results["oversized"].Code)
	assert.Contains(t, results["oversized"].Error, "over the limit of 1000")
	recs := testenv.ReadAll(t, env.Consumer(t, "t"), 3, 10*time.Second)
	assert.Len(t, recs, 3)
}

// The codec does not check UTF-8 as protobuf's own code did (it rejected
// the whole request): the node checks each message's strings, and a bad
// one fails alone.
func TestPublish_NonUTF8StringsFailAloneWithInvalidArgument(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}})
	results := publish(t, env.Client, []client.Message{
		{RequestID: "ok1", Topic: "t", Payload: []byte("a")},
		{RequestID: "header", Topic: "t", Payload: []byte("b"), Headers: []client.Header{{Key: "k\xff", Value: []byte("v")}}},
		{RequestID: "topic", Topic: "t\xfe", Payload: []byte("c")},
		{RequestID: "ok2", Topic: "t", Payload: []byte("\xff binary payloads are fine")},
	}, 10)
	for _, id := range []string{"ok1", "ok2"} {
		assert.Equal(t, codes.OK, results[id].Code, "%s: %s", id, results[id].Error)
	}
	assert.Equal(t, codes.InvalidArgument, results["header"].Code)
	assert.Contains(t, results["header"].Error, "header key")
	assert.Contains(t, results["header"].Error, "is not UTF-8")
	assert.Equal(t, codes.InvalidArgument, results["topic"].Code)
	assert.Contains(t, results["topic"].Error, "is not UTF-8")
	recs := testenv.ReadAll(t, env.Consumer(t, "t"), 2, 10*time.Second)
	assert.Len(t, recs, 2)
}

func TestPublish_BrokerFailingProduceYieldsUnavailableNeverSilence(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  *kerr.Error
		says string // what the result's message tells the client
	}{
		{"non-retriable error", kerr.UnknownServerError, kerr.UnknownServerError.Message},
		{"retriable error until the publish timeout", kerr.NotEnoughReplicas, "timed out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := testenv.Start(t, testenv.Options{
				Topics: []string{"t"},
				Kafka:  func(c *kafka.Config) { c.PublishTimeout = 2 * time.Second },
			})
			fault := env.Cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: tc.err, Count: -1})
			msgs := make([]client.Message, 50)
			for i := range msgs {
				msgs[i] = client.Message{RequestID: fmt.Sprint(i), Topic: "t", Payload: fmt.Appendf(nil, "%d", i)}
			}
			results := publish(t, env.Client, msgs, 10)
			for _, r := range results {
				require.Equal(t, codes.Unavailable, r.Code, "request %s: %s", r.RequestID, r.Error)
				require.Contains(t, r.Error, tc.says)
			}
			require.Positive(t, fault.Hits())
			fault.Remove()
			after := publish(t, env.Client, msgs[:5], 5)
			for _, r := range after {
				require.Equal(t, codes.OK, r.Code, "after the fault: %s", r.Error)
			}
		})
	}
}

// countingBackend counts the messages the node hands to the backend.
type countingBackend struct {
	node.Backend
	handed atomic.Int64
}

func (c *countingBackend) Publish(ctx context.Context, m *broker.Message, done func(broker.PublishResult)) {
	c.handed.Add(1)
	c.Backend.Publish(ctx, m, done)
}

func TestPublish_StalledBrokerReadsNoMoreThanTheWindowThenResumes(t *testing.T) {
	const window = 64
	counter := &countingBackend{}
	env := testenv.Start(t, testenv.Options{
		Topics:      []string{"t"},
		Node:        func(c *node.Config) { c.PublishWindow = window },
		WrapBackend: func(b node.Backend) node.Backend { counter.Backend = b; return counter },
	})
	// Warm the producer up so that the stall hits produce requests only.
	publish(t, env.Client, []client.Message{{RequestID: "warm", Topic: "t", Payload: []byte("w")}}, 1)
	counter.handed.Store(0)

	release := make(chan struct{})
	var releaseOnce sync.Once
	unstall := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unstall)
	env.Cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		env.Cluster.KeepControl()
		env.Cluster.SleepControl(func() { <-release })
		return nil, nil, false
	})

	const n = 2000
	var sent atomic.Int64
	msgs := func(yield func(client.Message) bool) {
		for i := range n {
			if !yield(client.Message{RequestID: fmt.Sprint(i), Topic: "t", Payload: make([]byte, 1024)}) {
				return
			}
			sent.Add(1)
		}
	}
	var (
		ok      atomic.Int64
		pubErr  = make(chan error, 1)
		results = make(chan client.Result, n)
	)
	go func() {
		pubErr <- env.Client.Publish(context.Background(), iter.Seq[client.Message](msgs), 1, func(r client.Result) {
			results <- r
			if r.Code == codes.OK {
				ok.Add(1)
			}
		})
	}()

	require.Eventually(t, func() bool { return counter.handed.Load() == window }, 10*time.Second, time.Millisecond,
		"the node should take exactly the window while the broker is stalled")
	// The client keeps writing into gRPC's buffers for a while; the node
	// still takes nothing more.
	require.Eventually(t, func() bool { return sent.Load() > 2*window }, 10*time.Second, time.Millisecond)
	require.Never(t, func() bool { return counter.handed.Load() > window }, 300*time.Millisecond, 10*time.Millisecond,
		"the node read past its window from a stalled stream")
	require.Less(t, sent.Load(), int64(n), "gRPC flow control should hold the client back")
	assert.Zero(t, len(results), "no results while the broker is stalled")

	unstall()
	require.NoError(t, <-pubErr)
	require.Equal(t, int64(n), ok.Load(), "every message gets an ok result after the broker resumes")
	require.Equal(t, int64(n), counter.handed.Load())
}

func TestPublish_ResultsCarryRequestIDsAndEmptyRequestsAreHarmless(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}})
	stream, err := pb.NewPublisherClient(env.Client.Conn()).Publish(context.Background())
	require.NoError(t, err)
	require.NoError(t, stream.Send(&pb.PublishRequest{}))
	require.NoError(t, stream.Send(&pb.PublishRequest{Messages: []*pb.OutgoingMessage{
		{RequestId: "dup", Topic: "t", Payload: []byte("1")},
		{RequestId: "dup", Topic: "t", Payload: []byte("2")},
	}}))
	require.NoError(t, stream.CloseSend())
	var got []*pb.PublishResult
	for {
		resp, err := stream.Recv()
		if err != nil {
			break
		}
		got = append(got, resp.GetResults()...)
	}
	require.Len(t, got, 2, "a duplicate request id is the client's business: both get results")
	for _, r := range got {
		assert.Equal(t, "dup", r.GetRequestId())
		assert.Nil(t, r.GetError())
	}
	assert.NotEqual(t, got[0].GetMessageId(), got[1].GetMessageId())
}

// An unreachable broker fails each message with UNAVAILABLE after the
// publish timeout, never silence; publishing works again when it returns.
func TestPublish_UnreachableBrokerFailsEachMessageWithUnavailableAfterTheTimeout(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Proxied: true,
		Kafka: func(c *kafka.Config) { c.PublishTimeout = time.Second }})
	msgs := []client.Message{{RequestID: "a", Topic: "t", Payload: []byte("1")}, {RequestID: "b", Topic: "t", Payload: []byte("2")}}
	for _, r := range publish(t, env.Client, msgs, 2) {
		require.Equal(t, codes.OK, r.Code, r.Error)
	}
	env.Proxy.Stop()
	start := time.Now()
	for _, r := range publish(t, env.Client, msgs, 2) {
		assert.Equal(t, codes.Unavailable, r.Code, r.Error)
	}
	elapsed := time.Since(start)
	t.Logf("UNAVAILABLE after %s with a 1s publish timeout", elapsed.Round(time.Millisecond))
	assert.Less(t, elapsed, 10*time.Second, "fails about the publish timeout after, not when the broker returns")
	env.Proxy.Start(t)
	start = time.Now()
	require.Eventually(t, func() bool {
		rs := publish(t, env.Client, msgs[:1], 1)
		return rs["a"].Code == codes.OK
	}, 20*time.Second, 100*time.Millisecond, "publishing works again")
	t.Logf("publishing worked again %s after the broker came back", time.Since(start).Round(time.Millisecond))
}
