package node_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/node"
)

// Dead letters and the retry policy (issue 11) on the fake backend, the
// subscription's settings stored in the fake store before it is opened.

// dlNode starts a node on the fake backend with topics and stores sc (its
// topics "t", read from the earliest message, unless sc says otherwise).
func dlNode(t *testing.T, topics map[string]int, sc broker.SubscriptionConfig, cfg func(*node.Config)) *storeNode {
	t.Helper()
	n := startStoreNode(t, topics, cfg)
	if sc.Name == "" {
		sc.Name = "s"
	}
	if sc.Topics == nil {
		sc.Topics = []string{"t"}
	}
	sc.Start = broker.StartEarliest
	_, err := n.store.CreateSubscription(context.Background(), sc)
	require.NoError(t, err)
	return n
}

// publishFake publishes msg through the fake's Publisher and waits for it.
func publishFake(t *testing.T, fb *fakeBackend, msg broker.Message) string {
	t.Helper()
	res := make(chan broker.PublishResult, 1)
	fb.Publish(context.Background(), &msg, func(r broker.PublishResult) { res <- r })
	r := <-res
	require.NoError(t, r.Err)
	return r.ID
}

// topicMessages lists what topic holds, shard after shard.
func (b *fakeBackend) topicMessages(topic string) []broker.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []broker.Message
	for _, sh := range b.topics[topic] {
		for _, e := range sh {
			out = append(out, e.msg)
		}
	}
	return out
}

// header returns the value of the first header key.
func header(hs []broker.Header, key string) (string, bool) {
	for _, h := range hs {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// poison is the message every dead-letter test fails.
var poison = broker.Message{Topic: "t", Key: []byte("k1"), Payload: []byte("poison"),
	Headers: []broker.Header{{Key: "trace", Value: []byte("abc")}}}

// checkDeadLetter checks that dl is poison, dead-lettered from subscription
// s on shard t/0 as id after attempts deliveries, for reason.
func checkDeadLetter(t *testing.T, dl broker.Message, id string, attempts int, reason string) {
	t.Helper()
	assert.Equal(t, "k1", string(dl.Key))
	assert.Equal(t, "poison", string(dl.Payload))
	want := map[string]string{
		"trace":                          "abc",
		"streamgate.source.subscription": "s",
		"streamgate.source.topic":        "t",
		"streamgate.source.shard":        "t/0",
		"streamgate.source.message_id":   id,
		"streamgate.delivery_attempts":   fmt.Sprint(attempts),
		"streamgate.error_reason":        reason,
	}
	for k, v := range want {
		got, ok := header(dl.Headers, k)
		assert.True(t, ok, "header %s missing", k)
		assert.Equal(t, v, got, "header %s", k)
	}
	assert.Len(t, dl.Headers, len(want), "headers: %v", dl.Headers)
}

// deliveriesOf counts the deliveries of id the node reported.
func deliveriesOf(fb *fakeBackend, id string) int {
	n := 0
	for _, d := range fb.Delivered() {
		if d == id {
			n++
		}
	}
	return n
}

// nackEach nacks the poison message on each of its deliveries from..to
// (by their attempt counts) with the reason "bad <attempt>".
func nackEach(t *testing.T, s *fakeSub, id string, from, to int) {
	t.Helper()
	for a := from; a <= to; a++ {
		fakeWait(t, fmt.Sprintf("delivery %d", a), func() bool {
			return slices.ContainsFunc(s.messages(), func(m client.Received) bool { return m.ID == id && int(m.DeliveryAttempt) == a })
		})
		require.NoError(t, s.NackWithDelay(0, fmt.Sprintf("bad %d", a), id))
	}
}

// Issue 11: a poison message nacked on each of its 5 deliveries reaches the
// dead-letter topic with its key, payload and headers and the
// streamgate.* headers; it is acked, delivered no more, the saved position
// passes it, and the shard's next messages flow.
func TestDeadLetter_APoisonMessageReachesTheDeadLetterTopicAfterNAttempts(t *testing.T) {
	n := dlNode(t, map[string]int{"t": 1, "dlq": 1}, broker.SubscriptionConfig{MaxDeliveryAttempts: 5, DeadLetterTopic: "dlq"}, nil)
	id := publishFake(t, n.fb, poison)
	n.fb.Append("t", 0, "next-1", "next-2")
	s := n.subscribe(1) // one at a time: the poison message until it is gone
	nackEach(t, s, id, 1, 5)

	fakeWait(t, "the dead letter", func() bool { return len(n.fb.topicMessages("dlq")) == 1 })
	checkDeadLetter(t, n.fb.topicMessages("dlq")[0], id, 5, "bad 5")
	fakeWait(t, "the poison message acked", func() bool { return slices.Contains(n.fb.Acked(), id) })
	assert.Equal(t, 1.0, n.metric("streamgate_subscribe_dead_lettered_messages_total"))

	for i, want := range []string{"next-1", "next-2"} { // one at a time
		m := s.waitCount(6 + i)[5+i]
		assert.Equal(t, want, string(m.Payload))
		require.NoError(t, s.Ack(m.ID))
	}
	n.barrier(s)
	assert.Equal(t, 5, deliveriesOf(n.fb, id), "the dead letter was delivered again")
	n.fb.SaveAll()
	pos, ok := n.fb.Saved("s", "t", 0)
	require.True(t, ok)
	assert.EqualValues(t, 3, pos.Next, "the saved position passes the dead letter and the next messages: %+v acked %v", pos, n.fb.Acked())
	assert.Len(t, n.fb.topicMessages("dlq"), 1)
}

// Issue 11: a delivery that times out counts as an attempt (the first
// one here), and a message that times out on its last attempt is
// dead-lettered with the reason "ack deadline exceeded". A message handed
// back because its stream closed is not dead-lettered.
func TestDeadLetter_TimeoutsCountAndAClosedStreamDoesNot(t *testing.T) {
	n := dlNode(t, map[string]int{"t": 1, "dlq": 1},
		broker.SubscriptionConfig{MaxDeliveryAttempts: 5, DeadLetterTopic: "dlq", AckDeadline: 300 * time.Millisecond},
		func(c *node.Config) { c.AckTimeout = 300 * time.Millisecond })
	id := publishFake(t, n.fb, poison)
	n.fb.Append("t", 0, "next")

	s := n.subscribe(1)
	require.EqualValues(t, 1, s.waitCount(1)[0].DeliveryAttempt)
	assert.Equal(t, codes.DeadlineExceeded, s.waitEnd().Code(), "the first delivery times out")

	s = n.subscribe(1)
	nackEach(t, s, id, 2, 4)
	fakeWait(t, "delivery 5", func() bool { return s.count() == 4 })
	require.EqualValues(t, 5, s.messages()[3].DeliveryAttempt)
	// Closed, not failed: handed back, delivered again.
	s.abort()
	<-s.done
	s = n.subscribe(1)
	m := s.waitCount(1)[0]
	require.Equal(t, id, m.ID)
	require.EqualValues(t, 6, m.DeliveryAttempt)
	assert.Empty(t, n.fb.topicMessages("dlq"), "dead-lettered when its stream closed")

	// The sixth delivery times out: dead-lettered.
	assert.Equal(t, codes.DeadlineExceeded, s.waitEnd().Code())
	fakeWait(t, "the dead letter", func() bool { return len(n.fb.topicMessages("dlq")) == 1 })
	checkDeadLetter(t, n.fb.topicMessages("dlq")[0], id, 6, "ack deadline exceeded")
	s = n.subscribe(1)
	assert.Equal(t, "next", string(s.ackUntil(1)[0].Payload))
	assert.Equal(t, 6, deliveriesOf(n.fb, id))
}

// Issue 11: while the dead-letter topic cannot be written, the message
// stays held: not acked, its shard's next message not delivered, the
// publish retried (counted); once the topic exists it lands there and the
// shard moves on. A nack with a delay is dead-lettered as well.
func TestDeadLetter_AFailingDeadLetterTopicHoldsTheMessageAndRetries(t *testing.T) {
	n := dlNode(t, map[string]int{"t": 1}, broker.SubscriptionConfig{MaxDeliveryAttempts: 5, DeadLetterTopic: "dlq"}, nil)
	id := publishFake(t, n.fb, poison)
	n.fb.Append("t", 0, "next")
	s := n.subscribe(0)
	fakeWait(t, "both messages", func() bool { return s.count() == 2 })
	require.NoError(t, s.Ack(s.messages()[1].ID)) // the shard's next message, out of order
	nackEach(t, s, id, 1, 4)
	fakeWait(t, "delivery 5", func() bool { return s.count() == 6 })
	require.NoError(t, s.NackWithDelay(time.Second, "bad 5", id))

	fakeWait(t, "publishes retried", func() bool { return n.metric("streamgate_subscribe_dead_letter_failures_total") >= 3 })
	n.fb.Append("t", 0, "later")
	n.barrier(s)
	assert.Equal(t, 6, s.count(), "the shard delivered past a message held for the dead-letter topic")
	assert.NotContains(t, n.fb.Acked(), id, "acked before its dead letter was confirmed")
	n.fb.SaveAll()
	pos, _ := n.fb.Saved("s", "t", 0)
	assert.EqualValues(t, 0, pos.Next, "the saved position passed a held message")

	n.fb.AddShards("dlq", 1) // the topic is created
	fakeWait(t, "the dead letter", func() bool { return len(n.fb.topicMessages("dlq")) == 1 })
	checkDeadLetter(t, n.fb.topicMessages("dlq")[0], id, 5, "bad 5")
	fakeWait(t, "the poison message acked", func() bool { return slices.Contains(n.fb.Acked(), id) })
	msgs := s.waitCount(7)
	assert.Equal(t, "later", string(msgs[6].Payload))
	require.NoError(t, s.Ack(msgs[6].ID))
	n.barrier(s)
	n.fb.SaveAll()
	pos, _ = n.fb.Saved("s", "t", 0)
	assert.EqualValues(t, 3, pos.Next)
}

// Issue 11: with a retry policy of 300 ms..600 ms, a message nacked
// without a delay comes back no sooner than 300 ms after its first
// delivery and 600 ms after its second, while the other shard flows; the
// rest of its shard waits behind it.
func TestRetry_BackoffDelaysRedeliveryWhileOtherShardsFlow(t *testing.T) {
	const lo, hi = 300 * time.Millisecond, 600 * time.Millisecond
	n := dlNode(t, map[string]int{"t": 2}, broker.SubscriptionConfig{RetryMin: lo, RetryMax: hi}, nil)
	n.fb.Append("t", 0, "a0")
	n.fb.Append("t", 1, "b0")
	s := n.subscribe(0)
	first := s.waitCount(2)
	byPayload := map[string]client.Received{}
	for _, m := range first {
		byPayload[string(m.Payload)] = m
	}
	a0 := byPayload["a0"]
	require.NoError(t, s.Ack(byPayload["b0"].ID))
	acked := map[string]bool{byPayload["b0"].ID: true}

	for attempt, backoff := range []time.Duration{lo, hi, hi} {
		nacked := time.Now()
		require.NoError(t, s.Nack(a0.ID))
		n.barrier(s) // the nack is applied
		b := fmt.Sprintf("b%d", attempt+1)
		n.fb.Append("t", 0, fmt.Sprintf("a%d", attempt+1))
		n.fb.Append("t", 1, b)
		var got []client.Received
		fakeWait(t, "the other shard's message", func() bool {
			got = s.messages()[len(first):]
			return slices.ContainsFunc(got, func(m client.Received) bool { return string(m.Payload) == b })
		})
		require.Less(t, time.Since(nacked), backoff, "the other shard waited for the backoff")
		for _, m := range got {
			require.NotEqual(t, "t/0", m.Shard, "shard t/0 delivered during the backoff")
		}
		var back client.Received
		fakeWait(t, "the nacked message again", func() bool {
			for _, m := range s.messages()[len(first):] {
				if m.ID == a0.ID {
					back = m
					return true
				}
			}
			return false
		})
		waited := time.Since(nacked)
		assert.GreaterOrEqual(t, waited, backoff, "attempt %d came back early", attempt+2)
		assert.Less(t, waited, backoff+time.Second, "attempt %d came back late", attempt+2)
		assert.EqualValues(t, attempt+2, back.DeliveryAttempt)
		// What came of t/0 since: the nacked message first, in shard order.
		var onA []string
		for _, m := range s.messages()[len(first):] {
			if m.Shard == "t/0" {
				onA = append(onA, string(m.Payload))
			}
		}
		require.Equal(t, "a0", onA[0])
		first = s.messages()
		var others []string
		for _, m := range first {
			if m.ID != a0.ID && !acked[m.ID] {
				acked[m.ID] = true
				others = append(others, m.ID)
			}
		}
		require.NoError(t, s.Ack(others...))
	}
}

// Issue 11: while a shard holds a message for a dead-letter topic that
// fails, with as many of its messages queued as the subscriber may take,
// the other shard's new messages are still fetched and delivered.
func TestDeadLetter_OtherShardsFlowWhileADeadLetterIsHeld(t *testing.T) {
	n := dlNode(t, map[string]int{"t": 2}, broker.SubscriptionConfig{MaxDeliveryAttempts: 5, DeadLetterTopic: "dlq"}, nil)
	unkeyed := poison
	unkeyed.Key = nil // the first unkeyed message goes to shard t/0
	id := publishFake(t, n.fb, unkeyed)
	n.fb.Append("t", 0, "x1", "x2", "x3")
	s := n.subscribe(1)
	nackEach(t, s, id, 1, 5)
	fakeWait(t, "a failed dead-letter publish", func() bool { return n.metric("streamgate_subscribe_dead_letter_failures_total") >= 1 })
	n.fb.Append("t", 1, "y")
	fakeWait(t, "the other shard's message", func() bool {
		return slices.ContainsFunc(s.messages(), func(m client.Received) bool { return string(m.Payload) == "y" })
	})
	for _, m := range s.messages() {
		assert.NotContains(t, []string{"x1", "x2", "x3"}, string(m.Payload), "the held shard delivered past its dead letter")
	}
}

// Issue 11: a message held past its ack deadline waits out the retry
// policy's backoff too (1 s here, 5 times the ack deadline) before it
// goes to the subscription's other subscriber.
func TestRetry_ATimedOutMessageWaitsOutItsBackoff(t *testing.T) {
	n := dlNode(t, map[string]int{"t": 1},
		broker.SubscriptionConfig{AckDeadline: 200 * time.Millisecond, RetryMin: time.Second, RetryMax: time.Second},
		func(c *node.Config) { c.AckTimeout = 200 * time.Millisecond })
	n.fb.Append("t", 0, "slow")
	a, b := n.subscribe(0), n.subscribe(0)
	var slow, other *fakeSub
	fakeWait(t, "the message", func() bool {
		switch {
		case a.count() > 0:
			slow, other = a, b
		case b.count() > 0:
			slow, other = b, a
		}
		return slow != nil
	})
	first := slow.messages()[0]
	require.Equal(t, codes.DeadlineExceeded, slow.waitEnd().Code())
	ended := time.Now()
	again := other.waitCount(1)[0]
	waited := time.Since(ended)
	assert.Equal(t, first.ID, again.ID)
	assert.EqualValues(t, 2, again.DeliveryAttempt)
	// The backoff starts when the node ended the stream, a moment before
	// the test saw it end.
	assert.GreaterOrEqual(t, waited, 900*time.Millisecond, "redelivered before its backoff")
	assert.Less(t, waited, 2*time.Second, "redelivered long after its backoff")
}

// A dead-letter publish that takes long to be handed off (a backend whose
// buffers are full) does not stop the subscription: while it waits, the
// other shard's messages are acked and new ones delivered.
func TestDeadLetter_ASlowPublishDoesNotStallTheSubscription(t *testing.T) {
	n := dlNode(t, map[string]int{"t": 2, "dlq": 1}, broker.SubscriptionConfig{MaxDeliveryAttempts: 1, DeadLetterTopic: "dlq"}, nil)
	gate := make(chan struct{})
	n.fb.mu.Lock()
	n.fb.publishGate = gate
	n.fb.mu.Unlock()
	t.Cleanup(func() { close(gate) }) // before the node stops
	n.fb.Append("t", 0, "p")
	n.fb.Append("t", 1, "y1")
	s := n.subscribe(10)
	byPayload := func(p string) (client.Received, bool) {
		for _, m := range s.messages() {
			if string(m.Payload) == p {
				return m, true
			}
		}
		return client.Received{}, false
	}
	fakeWait(t, "p and y1", func() bool {
		_, p := byPayload("p")
		_, y := byPayload("y1")
		return p && y
	})
	p, _ := byPayload("p")
	require.NoError(t, s.NackWithDelay(0, "bad", p.ID))
	fakeWait(t, "the dead-letter publish to wait", func() bool {
		n.fb.mu.Lock()
		defer n.fb.mu.Unlock()
		return n.fb.publishing == 1
	})
	y1, _ := byPayload("y1")
	require.NoError(t, s.Ack(y1.ID))
	n.fb.Append("t", 1, "y2")
	fakeWait(t, "y2, while the publish waits", func() bool {
		_, ok := byPayload("y2")
		return ok
	})
	n.fb.mu.Lock()
	assert.Equal(t, 1, n.fb.publishing, "the publish still waits")
	n.fb.mu.Unlock()
}

// Dead letters turned off by an update while a message is held for a
// dead-letter topic that fails: the message is handed back to its shard
// and delivered again (a 6th time), then the shard's next message; it is
// not held for good.
func TestDeadLetter_TurnedOffWhileHeldTheMessageIsDeliveredAgain(t *testing.T) {
	n := dlNode(t, map[string]int{"t": 1}, broker.SubscriptionConfig{MaxDeliveryAttempts: 5, DeadLetterTopic: "dlq"}, nil)
	id := publishFake(t, n.fb, poison)
	n.fb.Append("t", 0, "next")
	s := n.subscribe(1)
	nackEach(t, s, id, 1, 5)
	fakeWait(t, "a failed dead-letter publish", func() bool { return n.metric("streamgate_subscribe_dead_letter_failures_total") >= 1 })

	ctx := context.Background()
	cfg, err := n.store.GetSubscription(ctx, "s")
	require.NoError(t, err)
	cfg.MaxDeliveryAttempts, cfg.DeadLetterTopic = 0, ""
	_, err = n.store.UpdateSubscription(ctx, cfg)
	require.NoError(t, err)

	fakeWait(t, "delivery 6", func() bool {
		return slices.ContainsFunc(s.messages(), func(m client.Received) bool { return m.ID == id && m.DeliveryAttempt == 6 })
	})
	require.NoError(t, s.Ack(id))
	fakeWait(t, "the shard's next message", func() bool {
		return slices.ContainsFunc(s.messages(), func(m client.Received) bool { return string(m.Payload) == "next" })
	})
	assert.Empty(t, n.fb.topicMessages("dlq"))
}
