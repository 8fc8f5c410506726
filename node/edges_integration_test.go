package node_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/broker/kafka"
	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/testenv"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// Issue 7.1: a subscription exists from the moment its first subscriber
// is answered: everything published after `opened` is delivered, for a
// latest and an unspecified start alike.
func TestSubscribe_ANewSubscriptionDeliversEverythingPublishedRightAfterOpened(t *testing.T) {
	const shards = 8
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: shards})
	produceSpread(t, env, "t", shards, 80, 0) // history the subscriptions must not see
	for round := range 10 {
		start := pb.StartPosition_START_POSITION_LATEST
		if round%2 == 1 {
			start = pb.StartPosition_START_POSITION_UNSPECIFIED
		}
		name := fmt.Sprintf("fresh-%d", round)
		s := testenv.Subscribe(t, env.Client, &pb.Open{Subscription: name, Topics: []string{"t"}, StartPosition: start})
		produceSpread(t, env, "t", shards, shards, 1000*(round+1))
		msgs := s.WaitCount(shards, 10*time.Second)
		got := map[string]bool{}
		for _, m := range msgs {
			got[m.GetShard()] = true
			assert.GreaterOrEqual(t, seqOf(t, m), 1000/shards, "round %d: a message from before opened", round)
		}
		assert.Len(t, got, shards, "round %d: one message per shard", round)
		s.Close()
	}
}

// Issue 7.1, across nodes: two nodes open one new subscription at the same
// moment and agree on its start; everything published after both answered
// is delivered once.
func TestCluster_ANewSubscriptionOpenedOnTwoNodesAtOnceHasOneStart(t *testing.T) {
	const shards = 6
	envs := testenv.StartCluster(t, 2, testenv.Options{Topics: []string{"t"}, Partitions: shards})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // publishing all along, straight to the broker
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			envs[0].Produce(t, &kgo.Record{Topic: "t", Partition: int32(i % shards), Value: fmt.Appendf(nil, "%d:%d", i%shards, -1)})
		}
	}()
	var subs [2]*testenv.Subscriber
	var opened sync.WaitGroup
	for i := range envs {
		opened.Add(1)
		go func() {
			defer opened.Done()
			subs[i] = testenv.Subscribe(t, envs[i].Client, &pb.Open{Subscription: "both", Topics: []string{"t"}})
		}()
	}
	opened.Wait()
	close(stop)
	wg.Wait()
	// Ack as they come: what was published during the opens must not fill
	// the subscribers' windows.
	stopAcks := make(chan struct{})
	defer func() { close(stopAcks); wg.Wait() }()
	for _, s := range subs {
		ackLoop(t, s, stopAcks, &wg)
	}
	produceSpread(t, envs[0], "t", shards, 60, 0)
	seen := map[string]int{}
	require.True(t, waitUntil(20*time.Second, func() bool {
		for _, s := range subs {
			for _, m := range s.Messages() {
				if seqOf(t, m) >= 0 {
					seen[m.GetId()]++
				}
			}
		}
		n := len(seen)
		clear(seen)
		return n == 60
	}), "every message published after both opens arrives")
	for _, s := range subs {
		for _, m := range s.Messages() {
			seen[m.GetId()]++
		}
	}
	for id, n := range seen {
		assert.Equal(t, 1, n, "message %s delivered %d times", id, n)
	}
}

// Issue 7.5: delivery_attempt counts deliveries cluster-wide: a message
// nacked on one node and redelivered on another (after the first is
// killed) carries on counting.
func TestCluster_DeliveryAttemptCountsDeliveriesAcrossAKilledNode(t *testing.T) {
	envs := testenv.StartCluster(t, 2, testenv.Options{Topics: []string{"t"}, Partitions: 1,
		Kafka: shortCommits(100 * time.Millisecond)})
	a := testenv.Subscribe(t, envs[0].Client, earliest("att", "t"))
	produceSpread(t, envs[0], "t", 1, 3, 0)
	msgs := a.WaitCount(3, 10*time.Second)
	for _, m := range msgs {
		require.EqualValues(t, 1, m.GetDeliveryAttempt())
	}
	a.Nack(msgs[0].GetId())
	again := a.WaitCount(4, 10*time.Second)[3]
	require.Equal(t, msgs[0].GetId(), again.GetId())
	require.EqualValues(t, 2, again.GetDeliveryAttempt())
	a.Ack(msgs[2].GetId())
	require.True(t, waitUntil(5*time.Second, func() bool {
		return metricValue(t, envs[0], "streamgate_subscribe_acked_messages_total") == 1
	}))
	// The save (every 100ms) holds the ack and the delivery counts.
	require.True(t, waitUntil(5*time.Second, func() bool {
		p := envs[0].Saved(t, "att")["t"][0]
		return p.Offset == 0 && slices.Equal(p.Acked, []int64{2}) && p.Attempts[0] == 2 && p.Attempts[1] == 1
	}), "saved: %+v", envs[0].Saved(t, "att"))
	envs[0].Kill()

	b := testenv.Subscribe(t, envs[1].Client, earliest("att", "t"))
	got := b.WaitCount(2, 15*time.Second)
	attempts := map[string]uint32{}
	for _, m := range got {
		attempts[m.GetId()] = m.GetDeliveryAttempt()
	}
	assert.Equal(t, map[string]uint32{msgs[0].GetId(): 3, msgs[1].GetId(): 2}, attempts,
		"the third delivery of the nacked message, the second of the in-flight one")
}

// Issue 7.6: a topic deleted and created again under a running
// subscription: subscribers are told, and the new topic's messages flow
// without a reconnect.
func TestSubscribe_TopicDeletedAndCreatedAgainRecoversWithANotice(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 2,
		Kafka: func(c *kafka.Config) { c.TopicCheckInterval = 200 * time.Millisecond }})
	s := testenv.Subscribe(t, env.Client, earliest("re", "t"))
	produceSpread(t, env, "t", 2, 10, 0)
	ackAll(t, s, 10, 10*time.Second)

	env.DeleteTopic(t, "t")
	s.WaitFor(10*time.Second, "an UNAVAILABLE notice", func() bool {
		return slices.ContainsFunc(s.Notices(), func(n *pb.Notice) bool { return n.GetStatus().GetCode() == int32(codes.Unavailable) })
	})
	env.CreateTopic(t, "t", 2)
	env.ResetProducer()
	produceSpread(t, env, "t", 2, 6, 100)
	msgs := s.WaitCount(16, 20*time.Second)
	for _, m := range msgs[10:] {
		assert.GreaterOrEqual(t, seqOf(t, m), 50, "only the new topic's messages")
	}
	assert.True(t, slices.ContainsFunc(s.Notices(), func(n *pb.Notice) bool {
		return n.GetStatus().GetCode() == int32(codes.Aborted) && strings.Contains(n.GetStatus().GetMessage(), "created again")
	}), "subscribers are told the shards were reset: %v", s.Notices())
	ended, _ := s.Ended()
	assert.False(t, ended)
}

// Issue 7.4: claims are exclusive even while two nodes' views differ. With
// node-1 and node-2 cut off from each other (both still reach node-3, so
// each learns the other's state only through node-3's anti-entropy), each
// opens a subscriber while node-3's holds the one shard; when node-3's
// leaves, node-1 thinks its subscriber owns the shard and node-2 thinks
// its own does. Only one of them may read it at any time: no message is
// delivered twice, and no two nodes ever claim the shard at once.
func TestCluster_ClaimsAreExclusiveWhileTwoNodesViewsDiffer(t *testing.T) {
	envs := testenv.StartCluster(t, 3, testenv.Options{Topics: []string{"t"}, Partitions: 1})
	c := testenv.Subscribe(t, envs[2].Client, earliest("x", "t"))
	require.True(t, waitUntil(10*time.Second, func() bool {
		return slices.Equal(claimsOf(envs[0], "x")["t/0"], []string{"node-3"})
	}))
	envs[0].Cut(envs[1])
	a := testenv.Subscribe(t, envs[0].Client, earliest("x", "t"))
	b := testenv.Subscribe(t, envs[1].Client, earliest("x", "t"))
	views := func() (claims [3][]string) {
		for i, e := range envs {
			claims[i] = claimsOf(e, "x")["t/0"]
		}
		return claims
	}
	// Each of node-1 and node-2 sees its own subscriber beside node-3's,
	// not the other's, until node-3 relays them.
	var overlap []string
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // watch every node's own claims
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			var holders []string
			for _, e := range envs {
				self := e.Gossip.View()
				if slices.Contains(self.Nodes[self.Self].Subscriptions["x"].Claims, "t/0") {
					holders = append(holders, self.Self)
				}
			}
			if len(holders) > 1 {
				mu.Lock()
				overlap = holders
				mu.Unlock()
			}
		}
	}()
	c.Close() // node-3 lets go
	produceSpread(t, envs[0], "t", 1, 200, 0)
	stopAck := make(chan struct{})
	var acks sync.WaitGroup
	ackLoop(t, a, stopAck, &acks)
	ackLoop(t, b, stopAck, &acks)
	require.True(t, waitUntil(30*time.Second, func() bool { return a.Count()+b.Count() >= 200 }),
		"every message arrives: %d + %d (claims %v)", a.Count(), b.Count(), views())
	close(stopAck)
	acks.Wait()
	close(stop)
	wg.Wait()
	seen := map[string]int{}
	for _, m := range append(a.Messages(), b.Messages()...) {
		seen[m.GetId()]++
	}
	for id, n := range seen {
		assert.Equal(t, 1, n, "message %s delivered by two readers", id)
	}
	mu.Lock()
	assert.Empty(t, overlap, "two nodes claimed the shard at once")
	mu.Unlock()
}

// The first subscribers of a new subscription often open together (a
// deployment's replicas starting): every one is answered, none fails
// because another's start positions were being saved at the same time
// (concurrent saves of one subscription fenced each other).
func TestSubscribe_ManyFirstSubscribersOfANewSubscriptionAllOpen(t *testing.T) {
	const shards, subscribers = 8, 200
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: shards})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		subs []*client.Subscriber
		errs []error
	)
	for range subscribers {
		wg.Go(func() {
			s, err := env.Client.Subscribe(ctx, client.SubscribeOptions{Subscription: "crowd", Topics: []string{"t"}})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			subs = append(subs, s)
		})
	}
	wg.Wait()
	for _, s := range subs {
		defer s.Close()
	}
	if len(errs) > 0 {
		t.Fatalf("%d of %d first subscribers failed, the first with: %v", len(errs), subscribers, errs[0])
	}
	require.Len(t, subs, subscribers)
	// And the subscription works: what is published now reaches them.
	produceSpread(t, env, "t", shards, shards, 0)
	var got atomic.Int64
	for _, s := range subs {
		wg.Go(func() {
			for {
				msgs, _, err := s.RecvContext(ctx)
				if err != nil {
					return
				}
				if len(msgs) > 0 && got.Add(int64(len(msgs))) >= shards {
					cancel()
				}
			}
		})
	}
	wg.Wait()
	require.EqualValues(t, shards, got.Load(), "each message delivered once")
}

// A fetch reads at most FetchMaxPartitionBytes of a shard, but a message
// larger than that still comes whole: nothing is stuck behind it.
func TestSubscribe_AMessageLargerThanAShardsFetchStillArrives(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"big"}, Partitions: 1,
		Kafka: func(c *kafka.Config) { c.FetchMaxPartitionBytes = 1024 }})
	payloads := [][]byte{make([]byte, 200<<10), []byte("small"), make([]byte, 300<<10)}
	var msgs []client.Message
	for i, p := range payloads {
		p[0] = byte(i)
		msgs = append(msgs, client.Message{Topic: "big", Payload: p})
	}
	require.NoError(t, env.Client.Publish(t.Context(), slices.Values(msgs), 1, func(r client.Result) {
		require.Equal(t, codes.OK, r.Code, r.Error)
	}))
	s := testenv.Subscribe(t, env.Client, &pb.Open{Subscription: "big", Topics: []string{"big"}, StartPosition: pb.StartPosition_START_POSITION_EARLIEST})
	got := s.WaitCount(3, 20*time.Second)
	require.Len(t, got, 3)
	for i, m := range got {
		require.Equal(t, payloads[i], m.GetPayload(), "message %d in order and whole", i)
	}
}
