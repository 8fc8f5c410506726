package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/testenv"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// Dead letters and the retry policy (issue 11) on kfake, the subscription
// created through the Admin API and stored by the Kafka backend.

// waitMessage waits until s has received a message that matches, and
// returns it.
func waitMessage(t *testing.T, s *testenv.Subscriber, what string, match func(*pb.Message) bool) *pb.Message {
	t.Helper()
	var got *pb.Message
	s.WaitFor(20*time.Second, what, func() bool {
		for _, m := range s.Messages() {
			if match(m) {
				got = m
				return true
			}
		}
		return false
	})
	return got
}

// nackWithReason nacks ids at once with reason.
func nackWithReason(t *testing.T, s *testenv.Subscriber, reason string, ids ...string) {
	t.Helper()
	require.NoError(t, s.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Nack{Nack: &pb.Nack{MessageIds: ids, Reason: reason}}}))
}

// Issue 11 acceptance: a poison message, nacked on every delivery, is
// delivered 3 times on node 1, which is killed (the attempts saved with
// the position), and the rest on node 2, which dead-letters it after the
// 5th: the dead-letter topic has its key, payload, headers and the
// streamgate.* headers, the source moves on (the next message is
// delivered, the saved position passes both), and it is never delivered
// a 6th time.
func TestDeadLetter_AttemptsAreCountedAcrossANodeKill(t *testing.T) {
	envs := testenv.StartCluster(t, 2, testenv.Options{Topics: []string{"t", "dlq"}, Partitions: 1,
		Kafka: shortCommits(100 * time.Millisecond)})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := envs[0].Client.CreateSubscription(ctx, client.SubscriptionConfig{Name: "dl", Topics: []string{"t"},
		FromBeginning: true, MaxDeliveryAttempts: 5, DeadLetterTopic: "dlq"})
	require.NoError(t, err)
	envs[0].Produce(t,
		&kgo.Record{Topic: "t", Partition: 0, Key: []byte("k1"), Value: []byte("poison"),
			Headers: []kgo.RecordHeader{{Key: "trace", Value: []byte("abc")}}},
		&kgo.Record{Topic: "t", Partition: 0, Value: []byte("next")})
	open := &pb.Open{Subscription: "dl", Topics: []string{"t"}, MaxUnacked: 1}

	a := testenv.Subscribe(t, envs[0].Client, open)
	var id string
	for attempt := 1; attempt <= 3; attempt++ {
		m := waitMessage(t, a, fmt.Sprintf("delivery %d on node 1", attempt), func(m *pb.Message) bool {
			return m.GetDeliveryAttempt() == uint32(attempt)
		})
		require.Equal(t, "poison", string(m.GetPayload()))
		id = m.GetId()
		if attempt < 3 {
			nackWithReason(t, a, fmt.Sprintf("bad %d", attempt), id)
		}
	}
	// The third delivery is in flight when node 1 dies; its count is saved.
	require.True(t, waitUntil(10*time.Second, func() bool {
		p, ok := envs[0].Saved(t, "dl")["t"][0]
		return ok && p.Offset == 0 && p.Attempts[0] == 3
	}), "saved: %+v", envs[0].Saved(t, "dl"))
	envs[0].Kill()

	b := testenv.Subscribe(t, envs[1].Client, open)
	for attempt := 4; attempt <= 5; attempt++ {
		m := waitMessage(t, b, fmt.Sprintf("delivery %d on node 2", attempt), func(m *pb.Message) bool {
			return m.GetId() == id && m.GetDeliveryAttempt() == uint32(attempt)
		})
		nackWithReason(t, b, fmt.Sprintf("bad %d", attempt), m.GetId())
	}

	recs := testenv.ReadAll(t, envs[1].Consumer(t, "dlq"), 1, 15*time.Second)
	require.Len(t, recs, 1)
	dl := recs[0]
	assert.Equal(t, "k1", string(dl.Key))
	assert.Equal(t, "poison", string(dl.Value))
	headers := map[string]string{}
	for _, h := range dl.Headers {
		headers[h.Key] = string(h.Value)
	}
	assert.Equal(t, map[string]string{
		"trace":                          "abc",
		"streamgate.source.subscription": "dl",
		"streamgate.source.topic":        "t",
		"streamgate.source.shard":        "t/0",
		"streamgate.source.message_id":   id,
		"streamgate.delivery_attempts":   "5",
		"streamgate.error_reason":        "bad 5",
	}, headers)

	next := waitMessage(t, b, "the next message", func(m *pb.Message) bool { return string(m.GetPayload()) == "next" })
	b.Ack(next.GetId())
	require.True(t, waitUntil(10*time.Second, func() bool {
		p, ok := envs[1].Saved(t, "dl")["t"][0]
		return ok && p.Offset == 2
	}), "the saved position passes the dead letter and the next message: %+v", envs[1].Saved(t, "dl"))
	poisoned := 0
	for _, m := range b.Messages() {
		if m.GetId() == id {
			poisoned++
		}
	}
	assert.Equal(t, 2, poisoned, "node 2 delivered the poison message other than twice")
	assert.Equal(t, 1.0, metricValue(t, envs[1], "streamgate_subscribe_dead_lettered_messages_total"))
}

// Issue 11: a retry policy of 1 s..2 s, set through the Admin API: a
// message nacked without a delay comes back no sooner than 1 s, then 2 s,
// later, and its shard's next message after it, while the other shard
// keeps flowing.
func TestRetry_BackoffOnKafkaWhileAnotherShardFlows(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := env.Client.CreateSubscription(ctx, client.SubscriptionConfig{Name: "retry", Topics: []string{"t"},
		FromBeginning: true, MinBackoff: time.Second, MaxBackoff: 2 * time.Second})
	require.NoError(t, err)
	produceSpread(t, env, "t", 2, 2, 0) // one message on each shard
	s := testenv.Subscribe(t, env.Client, &pb.Open{Subscription: "retry", Topics: []string{"t"}})
	first := s.WaitCount(2, 10*time.Second)
	held, other := first[0], first[1]
	s.Ack(other.GetId())

	for round, backoff := range []time.Duration{time.Second, 2 * time.Second} {
		seen := s.Count()
		nacked := time.Now()
		s.Nack(held.GetId())
		require.Eventually(t, func() bool {
			return counter(t, env, "streamgate_subscribe_handed_back_messages_total") == float64(round+1)
		}, 10*time.Second, 5*time.Millisecond)
		produceSpread(t, env, "t", 2, 2, 100*(round+1)) // one more on each shard
		m := waitMessage(t, s, "the other shard's next message", func(m *pb.Message) bool {
			return m.GetShard() == other.GetShard() && seqOf(t, m) == 50*(round+1)
		})
		s.Ack(m.GetId())
		require.Less(t, time.Since(nacked), backoff, "the other shard waited for the backoff")
		for _, m := range s.Messages()[seen:] {
			require.NotEqual(t, held.GetShard(), m.GetShard(), "the held shard delivered during its backoff")
		}
		again := waitMessage(t, s, "the nacked message again", func(m *pb.Message) bool {
			return m.GetId() == held.GetId() && m.GetDeliveryAttempt() == uint32(round+2)
		})
		waited := time.Since(nacked)
		assert.GreaterOrEqual(t, waited, backoff, "redelivered before its backoff")
		assert.Less(t, waited, backoff+time.Second, "redelivered long after its backoff")
		after := waitMessage(t, s, "the held shard's next message", func(m *pb.Message) bool {
			return m.GetShard() == held.GetShard() && seqOf(t, m) == 50*(round+1)
		})
		msgs := s.Messages()
		assert.Less(t, indexOf(msgs, again.GetId(), again.GetDeliveryAttempt()), indexOf(msgs, after.GetId(), 1), "shard order")
		s.Ack(after.GetId())
	}
}

// indexOf is the position in msgs of id's delivery attempt.
func indexOf(msgs []*pb.Message, id string, attempt uint32) int {
	for i, m := range msgs {
		if m.GetId() == id && m.GetDeliveryAttempt() == attempt {
			return i
		}
	}
	return -1
}

// Issue 11: while the dead-letter topic cannot be written (deleted), the
// poison message stays held: not acked (the saved position stays before
// it), its shard's next message not delivered, the publish retried;
// once an update names a topic that exists, it lands there and the source
// moves on.
func TestDeadLetter_AFailingDeadLetterTopicHoldsTheMessageOnKafka(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t", "dlq-a", "dlq-b"}, Partitions: 1,
		Kafka: shortCommits(100 * time.Millisecond)})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := env.Client.CreateSubscription(ctx, client.SubscriptionConfig{Name: "dlf", Topics: []string{"t"},
		FromBeginning: true, MaxDeliveryAttempts: 5, DeadLetterTopic: "dlq-a"})
	require.NoError(t, err)
	env.DeleteTopic(t, "dlq-a")
	env.Produce(t, &kgo.Record{Topic: "t", Partition: 0, Value: []byte("poison")}, &kgo.Record{Topic: "t", Partition: 0, Value: []byte("next")})
	s := testenv.Subscribe(t, env.Client, &pb.Open{Subscription: "dlf", Topics: []string{"t"}, MaxUnacked: 1})
	var id string
	for attempt := 1; attempt <= 5; attempt++ {
		m := waitMessage(t, s, fmt.Sprintf("delivery %d", attempt), func(m *pb.Message) bool {
			return m.GetDeliveryAttempt() == uint32(attempt)
		})
		id = m.GetId()
		nackWithReason(t, s, "bad", id)
	}
	require.True(t, waitUntil(20*time.Second, func() bool {
		return metricValue(t, env, "streamgate_subscribe_dead_letter_failures_total") >= 3
	}), "publishes to the deleted topic retried")
	for _, m := range s.Messages() {
		require.Equal(t, id, m.GetId(), "the shard delivered past its held message")
	}
	p, ok := env.Saved(t, "dlf")["t"][0]
	require.True(t, ok)
	assert.EqualValues(t, 0, p.Offset, "the saved position passed the held message")

	_, err = env.Client.UpdateSubscription(ctx, client.SubscriptionConfig{Name: "dlf", DeadLetterTopic: "dlq-b"}, client.FieldDeadLetterTopic)
	require.NoError(t, err)
	recs := testenv.ReadAll(t, env.Consumer(t, "dlq-b"), 1, 20*time.Second)
	assert.Equal(t, "poison", string(recs[0].Value))
	next := waitMessage(t, s, "the next message", func(m *pb.Message) bool { return string(m.GetPayload()) == "next" })
	s.Ack(next.GetId())
	require.True(t, waitUntil(10*time.Second, func() bool {
		p, ok := env.Saved(t, "dlf")["t"][0]
		return ok && p.Offset == 2
	}), "saved: %+v", env.Saved(t, "dlf"))
	assert.Equal(t, 1.0, metricValue(t, env, "streamgate_subscribe_dead_lettered_messages_total"))
}
