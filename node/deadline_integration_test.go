package node_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/testenv"
	"github.com/streamgate/streamgate/node"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

func extend(t *testing.T, s *testenv.Subscriber, secs uint32, ids ...string) {
	t.Helper()
	require.NoError(t, s.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_ModifyAckDeadline{
		ModifyAckDeadline: &pb.ModifyAckDeadline{MessageIds: ids, AckDeadlineSeconds: secs}}}))
}

// Issue 11: a subscriber extends the ack deadline of a message it holds
// past the ack timeout; it is not cut off, and the message is not
// delivered again. The opened reply says the deadline.
func TestSubscribe_ModifyAckDeadlineHoldsAMessagePastTheAckTimeout(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 1,
		Node: func(c *node.Config) { c.AckTimeout = time.Second }})
	s := testenv.Subscribe(t, env.Client, &pb.Open{Subscription: "slow", Topics: []string{"t"}})
	publish(t, env.Client, []client.Message{{RequestID: "a", Topic: "t", Payload: []byte("a")}}, 1)
	m := s.WaitCount(1, 10*time.Second)[0]
	extend(t, s, 3, m.GetId())
	// Three times past the 1 s ack timeout, the stream is still open.
	require.Never(t, func() bool { ended, _ := s.Ended(); return ended }, 2500*time.Millisecond, 50*time.Millisecond,
		"the subscriber was cut off although it extended its deadline")
	s.Ack(m.GetId())
	publish(t, env.Client, []client.Message{{RequestID: "b", Topic: "t", Payload: []byte("b")}}, 1)
	msgs := s.WaitCount(2, 10*time.Second)
	assert.Equal(t, []byte("b"), msgs[1].GetPayload(), "the stream goes on")
	for _, m := range msgs {
		assert.EqualValues(t, 1, m.GetDeliveryAttempt(), "nothing delivered again")
	}
	s.Ack(msgs[1].GetId())
	// Without an extension the same ack timeout ends the stream.
	publish(t, env.Client, []client.Message{{RequestID: "c", Topic: "t", Payload: []byte("c")}}, 1)
	s.WaitCount(3, 10*time.Second)
	st := s.WaitEnd(10 * time.Second)
	require.Equal(t, codes.DeadlineExceeded, st.Code(), st.Message())
	assert.Contains(t, st.Message(), "ack deadline")
}

// A deadline of 0 hands the messages back at once, as a nack; one over
// the maximum ends the stream with INVALID_ARGUMENT; unknown ids are
// ignored.
func TestSubscribe_ModifyAckDeadlineZeroNacksAndOverTheMaximumIsRefused(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 1})
	s := testenv.Subscribe(t, env.Client, &pb.Open{Subscription: "zero", Topics: []string{"t"}})
	publish(t, env.Client, []client.Message{{RequestID: "a", Topic: "t", Payload: []byte("a")}}, 1)
	m := s.WaitCount(1, 10*time.Second)[0]
	extend(t, s, 30, "not-an-id")
	extend(t, s, 0, m.GetId())
	again := s.WaitCount(2, 10*time.Second)[1]
	assert.Equal(t, m.GetId(), again.GetId())
	assert.EqualValues(t, 2, again.GetDeliveryAttempt())

	extend(t, s, 601, again.GetId())
	st := s.WaitEnd(10 * time.Second)
	require.Equal(t, codes.InvalidArgument, st.Code())
	assert.Contains(t, st.Message(), "over the maximum of 600")
}

// Receive manages leases: a handler that runs for three times the ack
// deadline is not cut off and its message is handled once; the others
// flow meanwhile.
func TestReceive_ExtendsTheDeadlineOfASlowHandler(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 2,
		Node: func(c *node.Config) { c.AckTimeout = time.Second }})
	var msgs []client.Message
	for i := range 20 {
		msgs = append(msgs, client.Message{RequestID: fmt.Sprint(i), Topic: "t", Key: []byte{byte(i)}, Payload: []byte{byte(i)}})
	}
	publish(t, env.Client, msgs, 20)
	sub := env.Client.Subscription("lease", "t")
	sub.ReceiveSettings.FromBeginning = true
	var opened atomic.Int64
	sub.ReceiveSettings.OnOpen = func(o client.Opened) {
		assert.Equal(t, time.Second, o.AckDeadline)
		opened.Add(1)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var (
		mu       sync.Mutex
		handled  = map[byte]int{}
		attempts = map[byte]uint32{}
		slow     atomic.Bool
	)
	err := make(chan error, 1)
	go func() {
		err <- sub.Receive(ctx, func(hctx context.Context, d *client.Delivery) {
			if slow.CompareAndSwap(false, true) {
				// The slow handler's work: three ack deadlines.
				select {
				case <-time.After(3 * time.Second):
				case <-hctx.Done():
					return
				}
			}
			mu.Lock()
			handled[d.Payload[0]]++
			attempts[d.Payload[0]] = max(attempts[d.Payload[0]], d.DeliveryAttempt)
			n := len(handled)
			mu.Unlock()
			d.Ack()
			if n == 20 {
				cancel()
			}
		})
	}()
	require.NoError(t, <-err)
	require.Len(t, handled, 20)
	for p, n := range handled {
		assert.Equal(t, 1, n, "message %d handled once", p)
		assert.EqualValues(t, 1, attempts[p], "message %d delivered once", p)
	}
	assert.EqualValues(t, 1, opened.Load(), "no reconnect: the stream was never cut off")
}

// Issue 11: a nack with a 2 s delay is delivered again no sooner than 2 s
// later, and the rest of its shard waits behind it, while another shard
// keeps flowing. A delay over the maximum, or a reason too long, ends the
// stream with INVALID_ARGUMENT.
func TestSubscribe_ANackWithADelayIsRedeliveredAfterItWhileOtherShardsFlow(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 2})
	s := testenv.Subscribe(t, env.Client, &pb.Open{Subscription: "delay", Topics: []string{"t"}})
	produceSpread(t, env, "t", 2, 2, 0) // one message on each shard
	first := s.WaitCount(2, 10*time.Second)
	held, other := first[0], first[1]
	s.Ack(other.GetId())
	nacked := time.Now()
	require.NoError(t, s.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Nack{
		Nack: &pb.Nack{MessageIds: []string{held.GetId()}, DelaySeconds: 2, Reason: "downstream busy"}}}))
	// The node took the nack (before it, the held shard's next message
	// could still go to this stream, which holds the shard).
	require.Eventually(t, func() bool { return counter(t, env, "streamgate_subscribe_handed_back_messages_total") == 1 }, 10*time.Second, 10*time.Millisecond)
	// Meanwhile both shards get new messages: the other shard's arrive,
	// the held shard's wait behind the nacked one.
	produceSpread(t, env, "t", 2, 2, 100)
	s.WaitFor(10*time.Second, "the other shard's next message", func() bool {
		for _, m := range s.Messages()[2:] {
			if m.GetShard() == other.GetShard() {
				return true
			}
		}
		return false
	})
	for _, m := range s.Messages()[2:] {
		require.NotEqual(t, held.GetShard(), m.GetShard(), "the held shard delivered during the delay")
	}
	s.WaitFor(10*time.Second, "the nacked message again", func() bool {
		for _, m := range s.Messages()[2:] {
			if m.GetId() == held.GetId() {
				return true
			}
		}
		return false
	})
	waited := time.Since(nacked)
	assert.GreaterOrEqual(t, waited, 2*time.Second, "redelivered before its delay")
	assert.Less(t, waited, 2*time.Second+900*time.Millisecond, "redelivered long after its delay")
	msgs := s.WaitCount(4, 10*time.Second)
	var onHeld []*pb.Message
	for _, m := range msgs[2:] {
		if m.GetShard() == held.GetShard() {
			onHeld = append(onHeld, m)
		}
	}
	require.Len(t, onHeld, 2)
	assert.Equal(t, held.GetId(), onHeld[0].GetId(), "the nacked message first, in shard order")
	assert.EqualValues(t, 2, onHeld[0].GetDeliveryAttempt())

	for _, nack := range []*pb.Nack{
		{MessageIds: []string{"x"}, DelaySeconds: 601},
		{MessageIds: []string{"x"}, Reason: strings.Repeat("r", 1025)},
	} {
		s := testenv.Subscribe(t, env.Client, &pb.Open{Subscription: "delay-bad", Topics: []string{"t"}})
		require.NoError(t, s.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Nack{Nack: nack}}))
		st := s.WaitEnd(10 * time.Second)
		require.Equal(t, codes.InvalidArgument, st.Code())
		assert.Contains(t, st.Message(), "nack: ")
	}
}

// Receive's Delivery.NackWithDelay: the message comes back after the
// delay, with its attempt count raised.
func TestReceive_NackWithDelay(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 1})
	publish(t, env.Client, []client.Message{{RequestID: "a", Topic: "t", Payload: []byte("a")}}, 1)
	sub := env.Client.Subscription("rdelay", "t")
	sub.ReceiveSettings.FromBeginning = true
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var first time.Time
	var again time.Duration
	require.NoError(t, sub.Receive(ctx, func(_ context.Context, d *client.Delivery) {
		if d.DeliveryAttempt == 1 {
			first = time.Now()
			d.NackWithDelay(time.Second, "later")
			return
		}
		again = time.Since(first)
		d.Ack()
		cancel()
	}))
	assert.GreaterOrEqual(t, again, time.Second)
}

// counter reads a counter of the node's registry (0 when absent).
func counter(t *testing.T, env *testenv.Env, name string) float64 {
	t.Helper()
	mfs, err := env.Registry.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}
