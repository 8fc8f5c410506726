package node_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/broker/kafka"
	"github.com/streamgate/streamgate/internal/testenv"
	"github.com/streamgate/streamgate/node"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
	"github.com/streamgate/streamgate/ring"
)

func earliest(sub string, topics ...string) *pb.Open {
	return &pb.Open{Subscription: sub, Topics: topics, StartPosition: pb.StartPosition_START_POSITION_EARLIEST}
}

// produceSpread writes n records to topic, record i to shard i%shards, with
// the value "<shard>:<seq within the shard>".
func produceSpread(t *testing.T, env *testenv.Env, topic string, shards, n, from int) {
	t.Helper()
	recs := make([]*kgo.Record, 0, n)
	for i := from; i < from+n; i++ {
		p := int32(i % shards)
		recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Value: fmt.Appendf(nil, "%d:%d", p, i/shards)})
	}
	for len(recs) > 0 {
		k := min(len(recs), 5000)
		env.Produce(t, recs[:k]...)
		recs = recs[k:]
	}
}

// seqOf parses the sequence number out of produceSpread's value.
func seqOf(t *testing.T, m *pb.Message) int {
	t.Helper()
	_, after, ok := strings.Cut(string(m.GetPayload()), ":")
	require.True(t, ok, "payload %q", m.GetPayload())
	var n int
	_, err := fmt.Sscan(after, &n)
	require.NoError(t, err)
	return n
}

// assertShardOrder checks that each shard's messages arrive in order, and
// returns the messages by shard.
func assertShardOrder(t *testing.T, msgs []*pb.Message) map[string][]int {
	t.Helper()
	by := map[string][]int{}
	for _, m := range msgs {
		s := seqOf(t, m)
		if prev := by[m.GetShard()]; len(prev) > 0 {
			require.Greater(t, s, prev[len(prev)-1], "shard %s out of order", m.GetShard())
		}
		by[m.GetShard()] = append(by[m.GetShard()], s)
	}
	return by
}

// ackAll acks what s receives until it has n messages, then returns them.
func ackAll(t *testing.T, s *testenv.Subscriber, n int, timeout time.Duration) []*pb.Message {
	t.Helper()
	acked := 0
	s.WaitFor(timeout, fmt.Sprintf("%d messages acked", n), func() bool {
		msgs := s.Messages()
		if len(msgs) > acked {
			ids := make([]string, 0, len(msgs)-acked)
			for _, m := range msgs[acked:] {
				ids = append(ids, m.GetId())
			}
			s.Ack(ids...)
			acked = len(msgs)
		}
		return acked >= n
	})
	return s.Messages()
}

func shortCommits(interval time.Duration) func(*kafka.Config) {
	return func(c *kafka.Config) { c.CommitInterval = interval }
}

// waitUntil polls cond every 10ms until it holds (true) or timeout (false).
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

func statusOf(err error) *status.Status { return status.Convert(err) }

func metricValue(t *testing.T, env *testenv.Env, name string) float64 {
	t.Helper()
	mfs, err := env.Registry.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			var v float64
			for _, m := range mf.GetMetric() {
				v += metricOf(m)
			}
			return v
		}
	}
	return 0
}

func metricOf(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	}
	return 0
}

// Subscribe 1, 3 (DEVELOPERS.md): ids and acks, commits to the end.
func TestSubscribe_OneSubscriberAcks50000On8ShardsExactlyOnceInShardOrderAndCommitsToTheEnd(t *testing.T) {
	const n, shards = 50000, 8
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: shards, Kafka: shortCommits(time.Second)})
	produceSpread(t, env, "t", shards, n, 0)
	sub := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	msgs := ackAll(t, sub, n, 2*time.Minute)
	env.Committed(t, "s") // connect the checking client before the clock starts
	require.Eventually(t, func() bool { return metricValue(t, env, "streamgate_subscribe_acked_messages_total") == n },
		30*time.Second, 5*time.Millisecond)
	lastAck := time.Now() // the node has applied the last ack
	want := map[string]map[int32]int64{"t": {}}
	for p := range int32(shards) {
		want["t"][p] = n / shards
	}
	// One commit interval (1s), and a margin for the commit's round trip
	// and this check's polling.
	require.True(t, waitUntil(1200*time.Millisecond, func() bool { return maps.EqualFunc(env.Committed(t, "s"), want, maps.Equal) }),
		"committed positions at the end of each shard within one commit interval")
	t.Logf("committed to the end %s after the last ack", time.Since(lastAck).Round(time.Millisecond))

	require.Len(t, msgs, n, "every message exactly once")
	ids := map[string]bool{}
	for _, m := range msgs {
		require.False(t, ids[m.GetId()], "message %s delivered twice", m.GetId())
		ids[m.GetId()] = true
		require.EqualValues(t, 1, m.GetDeliveryAttempt())
		require.NotNil(t, m.GetPublishTime())
	}
	by := assertShardOrder(t, msgs)
	require.Len(t, by, shards)
	for shard, seqs := range by {
		require.Len(t, seqs, n/shards, "shard %s", shard)
	}
}

// Subscribe 2: at most max_unacked un-acked messages.
func TestSubscribe_NeverAckingSubscriberHoldsExactlyMaxUnackedThenKMoreAfterKAcks(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 4, Node: func(c *node.Config) { c.MaxUnacked = 100 }})
	produceSpread(t, env, "t", 4, 1000, 0)
	sub := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	require.EqualValues(t, 100, sub.Opened.GetMaxUnacked())
	msgs := sub.WaitCount(100, 10*time.Second)
	require.Never(t, func() bool { return sub.Count() > 100 }, 500*time.Millisecond, 20*time.Millisecond,
		"a subscriber at its limit gets nothing more")
	ids := make([]string, 0, 30)
	for _, m := range msgs[:30] {
		ids = append(ids, m.GetId())
	}
	sub.Ack(ids...)
	sub.WaitCount(130, 10*time.Second)
	require.Never(t, func() bool { return sub.Count() > 130 }, 500*time.Millisecond, 20*time.Millisecond,
		"after acking k it receives exactly k more")

	// A client may ask for less than the server's limit.
	small := testenv.Subscribe(t, env.Client, &pb.Open{Subscription: "other", Topics: []string{"t"}, StartPosition: pb.StartPosition_START_POSITION_EARLIEST, MaxUnacked: 7})
	require.EqualValues(t, 7, small.Opened.GetMaxUnacked())
	small.WaitCount(7, 10*time.Second)
	require.Never(t, func() bool { return small.Count() > 7 }, 300*time.Millisecond, 20*time.Millisecond)
}

// Subscribe 3: commit every N acks, or every interval.
func TestSubscribe_CommitCadence_TheNthAckCommitsAndTheIntervalCommitsFewAcks(t *testing.T) {
	t.Run("1000th ack with a long interval", func(t *testing.T) {
		// The buffer limit stays out of the way: a shard at it that acks
		// drain to half saves at once so that it can resume (another rule,
		// tested below).
		env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 1, Kafka: func(c *kafka.Config) {
			c.CommitInterval = time.Hour
			c.MaxBufferedPerShard = 2000
		}})
		produceSpread(t, env, "t", 1, 1500, 0)
		sub := testenv.Subscribe(t, env.Client, earliest("s", "t"))
		msgs := sub.WaitCount(1000, 10*time.Second)
		// The start position is saved at once, so the cursor is durable.
		require.Eventually(t, func() bool { return env.Committed(t, "s")["t"][0] == 0 && len(env.Committed(t, "s")["t"]) == 1 }, 5*time.Second, 20*time.Millisecond)
		for _, m := range msgs[:999] {
			sub.Ack(m.GetId())
		}
		require.Never(t, func() bool { return env.Committed(t, "s")["t"][0] != 0 }, 500*time.Millisecond, 50*time.Millisecond,
			"999 acks do not commit with a long interval")
		sub.Ack(msgs[999].GetId())
		require.Eventually(t, func() bool { return env.Committed(t, "s")["t"][0] == 1000 }, 5*time.Second, 20*time.Millisecond,
			"the 1000th ack commits")
	})
	t.Run("few acks and the interval", func(t *testing.T) {
		env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 1, Kafka: shortCommits(500 * time.Millisecond)})
		produceSpread(t, env, "t", 1, 20, 0)
		sub := testenv.Subscribe(t, env.Client, earliest("s", "t"))
		msgs := sub.WaitCount(20, 10*time.Second)
		for _, m := range msgs[:10] {
			sub.Ack(m.GetId())
		}
		require.Eventually(t, func() bool { return env.Committed(t, "s")["t"][0] == 10 }, 3*time.Second, 20*time.Millisecond,
			"ten acks are committed by the interval")
	})
}

// Subscribe 3: only up to the first un-acked message; out-of-order acks
// survive a restart.
func TestSubscribe_GapHoldsTheCommitAndAfterRestartOnlyTheUnackedMessageIsRedelivered(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 1, Kafka: shortCommits(200 * time.Millisecond)})
	produceSpread(t, env, "t", 1, 100, 0)
	sub := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	msgs := sub.WaitCount(100, 10*time.Second)
	var gap *pb.Message
	for i, m := range msgs {
		if i == 50 {
			gap = m
			continue
		}
		sub.Ack(m.GetId())
	}
	require.Eventually(t, func() bool { return env.Committed(t, "s")["t"][0] == 50 }, 5*time.Second, 20*time.Millisecond,
		"the commit stops at the un-acked message")
	require.Never(t, func() bool { return env.Committed(t, "s")["t"][0] != 50 }, 500*time.Millisecond, 50*time.Millisecond)

	env.Stop() // the node restarts: a new node on the same broker
	env2 := testenv.Start(t, testenv.Options{Cluster: env.Cluster, Kafka: shortCommits(200 * time.Millisecond)})
	produceSpread(t, env2, "t", 1, 1, 100) // and one new message
	sub2 := testenv.Subscribe(t, env2.Client, earliest("s", "t"))
	got := sub2.WaitCount(2, 10*time.Second)
	require.Never(t, func() bool { return sub2.Count() > 2 }, 500*time.Millisecond, 20*time.Millisecond,
		"only the un-acked message and the new one arrive")
	assert.Equal(t, gap.GetId(), got[0].GetId(), "the un-acked message comes first, with the same id")
	assert.Equal(t, gap.GetPayload(), got[0].GetPayload())
	assert.Equal(t, "0:100", string(got[1].GetPayload()))
	sub2.Ack(got[0].GetId(), got[1].GetId())
	require.Eventually(t, func() bool { return env2.Committed(t, "s")["t"][0] == 101 }, 5*time.Second, 20*time.Millisecond)
}

// shardsOf maps shard -> the subscribers that received any of its messages.
func shardsOf(t *testing.T, subs map[string]*testenv.Subscriber, after map[string]int) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for name, s := range subs {
		for _, m := range s.Messages()[after[name]:] {
			if !slices.Contains(out[m.GetShard()], name) {
				out[m.GetShard()] = append(out[m.GetShard()], name)
			}
		}
	}
	return out
}

// Subscribe 4 and 5: fair shares, order per shard, and a join that moves
// only the ring's shards while in-flight messages stay with their holder.
func TestSubscribe_TwoThenThreeSubscribersFairShardOrderAndInFlightStaysWithHolder(t *testing.T) {
	const shards = 8
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: shards})
	subs := map[string]*testenv.Subscriber{
		"a": testenv.Subscribe(t, env.Client, earliest("s", "t")),
		"b": testenv.Subscribe(t, env.Client, earliest("s", "t")),
	}
	idOf := map[string]string{"a": subs["a"].Opened.GetSubscriberId(), "b": subs["b"].Opened.GetSubscriberId()}
	total := func() int {
		n := 0
		for _, s := range subs {
			n += s.Count()
		}
		return n
	}
	ackEverything := func() {
		for _, s := range subs {
			ids := []string{}
			for _, m := range s.Messages() {
				ids = append(ids, m.GetId())
			}
			if len(ids) > 0 {
				s.Ack(ids...)
			}
		}
	}

	produceSpread(t, env, "t", shards, 800, 0)
	require.Eventually(t, func() bool { return total() == 800 }, 20*time.Second, 10*time.Millisecond)
	for _, s := range subs {
		assertShardOrder(t, s.Messages())
	}
	owners := shardsOf(t, subs, nil)
	require.Len(t, owners, shards)
	count := map[string]int{}
	for shard, who := range owners {
		require.Len(t, who, 1, "shard %s went to %v", shard, who)
		count[who[0]]++
	}
	assert.Equal(t, map[string]int{"a": 4, "b": 4}, count, "fair: floor or ceil of 8/2")
	ackEverything()

	// a and b now hold 80 un-acked messages when c joins.
	produceSpread(t, env, "t", shards, 80, 800)
	require.Eventually(t, func() bool { return total() == 880 }, 20*time.Second, 10*time.Millisecond)
	before := map[string]int{"a": subs["a"].Count(), "b": subs["b"].Count(), "c": 0}
	subs["c"] = testenv.Subscribe(t, env.Client, earliest("s", "t"))
	idOf["c"] = subs["c"].Opened.GetSubscriberId()

	names := make([]string, shards)
	for p := range shards {
		names[p] = fmt.Sprintf("t/%d", p)
	}
	nameOf := map[string]string{}
	for k, v := range idOf {
		nameOf[v] = k
	}
	expect := map[string]string{}
	for shard, id := range ring.Assign(slices.Collect(maps.Values(idOf)), names) {
		expect[shard] = nameOf[id]
	}
	count = map[string]int{}
	for _, who := range expect {
		count[who]++
	}
	assert.ElementsMatch(t, []int{3, 3, 2}, slices.Collect(maps.Values(count)), "fair: floor or ceil of 8/3")
	moved := map[string]bool{}
	for shard, who := range expect {
		if who != owners[shard][0] {
			moved[shard] = true
		}
	}
	require.NotEmpty(t, moved)
	for shard := range moved {
		// Mostly to the newcomer; the ring may also shift a shard between
		// old subscribers to keep the shares fair.
		t.Logf("shard %s moves %s -> %s", shard, owners[shard][0], expect[shard])
	}
	newOf := func(shard string) []string {
		return shardsOf(t, subs, before)[shard]
	}

	produceSpread(t, env, "t", shards, 80, 880)
	// Unmoved shards deliver at once; moved ones wait for their holder.
	require.Eventually(t, func() bool {
		for shard, who := range expect {
			if !moved[shard] && !slices.Equal(newOf(shard), []string{who}) {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond)
	require.Never(t, func() bool {
		for shard := range moved {
			if len(newOf(shard)) > 0 {
				return true
			}
		}
		return false
	}, 500*time.Millisecond, 20*time.Millisecond,
		"the new owner receives nothing of a moved shard while the old holder has its messages in flight")
	ackEverything()
	require.Eventually(t, func() bool { return total() == 960 }, 20*time.Second, 10*time.Millisecond)
	for shard, who := range shardsOf(t, subs, before) {
		// Everything published after the join went to the ring's owner
		// (the held messages stayed with the old one, which had them
		// before the join).
		assert.Equal(t, []string{expect[shard]}, who, "shard %s after the join", shard)
	}
	for _, m := range subs["c"].Messages() {
		assert.Equal(t, "c", expect[m.GetShard()])
		assert.GreaterOrEqual(t, seqOf(t, m), 110, "c got only messages published after the join")
	}
	for _, s := range subs {
		assertShardOrder(t, s.Messages())
	}
}

// Subscribe 6: a stalled subscriber is cut off; its messages go to the
// shard's new owner before anything newer.
func TestSubscribe_StalledSubscriberGetsDeadlineExceededAndItsMessagesGoToTheOtherFirst(t *testing.T) {
	const shards = 4
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: shards,
		Node: func(c *node.Config) { c.AckTimeout = time.Second }})
	produceSpread(t, env, "t", shards, 40, 0)
	stalled := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	stalled.WaitCount(40, 10*time.Second)
	healthy := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	produceSpread(t, env, "t", shards, 40, 40)

	st := stalled.WaitEnd(10 * time.Second)
	assert.Equal(t, codes.DeadlineExceeded, st.Code(), st.Message())
	notices := stalled.Notices()
	require.NotEmpty(t, notices)
	last := notices[len(notices)-1]
	assert.True(t, last.GetTerminal())
	assert.EqualValues(t, codes.DeadlineExceeded, last.GetStatus().GetCode())

	msgs := ackAll(t, healthy, 80, 20*time.Second)
	by := assertShardOrder(t, msgs) // old ones before newer ones, per shard
	for shard, seqs := range by {
		assert.Len(t, seqs, 20, "shard %s", shard)
	}
	redelivered := 0
	for _, m := range msgs {
		if seqOf(t, m) < 10 {
			assert.EqualValues(t, 2, m.GetDeliveryAttempt())
			redelivered++
		}
	}
	assert.Equal(t, 40, redelivered)
}

// Subscribe 7: a shard with too much undelivered + uncommitted is paused.
func TestSubscribe_ShardOverTheLimitIsPausedAtTheBrokerAndResumesAfterAcks(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 2,
		Kafka: func(c *kafka.Config) { c.MaxBufferedPerShard = 100; c.CommitInterval = 200 * time.Millisecond }})
	fetched := func(p int32) *kfake.FaultHandle {
		return env.Cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: "t", Partitions: []int32{p}, Observe: true, Count: -1})
	}
	busy, quiet := fetched(0), fetched(1)
	// Shard 0 gets 1000 messages in small batches, so that fetches stop
	// soon after the limit.
	for i := 0; i < 1000; i += 50 {
		recs := make([]*kgo.Record, 50)
		for j := range recs {
			recs[j] = &kgo.Record{Topic: "t", Partition: 0, Value: fmt.Appendf(nil, "0:%d", i+j)}
		}
		env.Produce(t, recs...)
	}
	sub := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	sub.WaitCount(100, 10*time.Second)
	require.Never(t, func() bool { return sub.Count() > 100 }, 500*time.Millisecond, 20*time.Millisecond,
		"the shard holds at most its limit: 100 delivered, none acked")
	// Shard 0 stops being fetched while shard 1 still is.
	var held int
	require.Eventually(t, func() bool {
		h0, h1 := busy.Hits(), quiet.Hits()
		fetchedOther := waitUntil(3*time.Second, func() bool { return quiet.Hits() >= h1+2 })
		held = sub.Count()
		return fetchedOther && busy.Hits() == h0
	}, 15*time.Second, 10*time.Millisecond, "shard 0 paused at the broker while shard 1 is fetched")
	assert.Less(t, held, 1000, "the node stops taking shard 0 before it has it all")

	ackAll(t, sub, 1000, 30*time.Second)
	assert.Greater(t, busy.Hits(), 0)
	assertShardOrder(t, sub.Messages())
}

// Subscribe 8: no subscribers, no consumer, no buffers.
func TestSubscribe_LastSubscriberLeavingStopsFetchingAndANewOneStartsFromTheCommit(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 2, Kafka: shortCommits(time.Hour)})
	fetches := env.Cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Observe: true, Count: -1})
	produceSpread(t, env, "t", 2, 100, 0)
	sub := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	msgs := sub.WaitCount(100, 10*time.Second)
	for _, m := range msgs[:60] {
		sub.Ack(m.GetId())
	}
	require.Eventually(t, func() bool { return metricValue(t, env, "streamgate_subscribe_acked_messages_total") == 60 }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, sub.CloseSend())
	sub.WaitEnd(5 * time.Second)

	require.Eventually(t, func() bool { return metricValue(t, env, "streamgate_subscribe_backend_consumers") == 0 }, 5*time.Second, 10*time.Millisecond)
	assert.Zero(t, metricValue(t, env, "streamgate_subscribe_buffered_messages"), "no buffered messages without subscribers")
	h := fetches.Hits()
	require.Never(t, func() bool { return fetches.Hits() != h }, 1500*time.Millisecond, 50*time.Millisecond,
		"no fetch requests without subscribers")
	// The leaving subscriber's acks were saved on close.
	committed := env.Committed(t, "s")["t"]
	assert.EqualValues(t, 60, committed[0]+committed[1])

	produceSpread(t, env, "t", 2, 10, 100)
	again := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	got := ackAll(t, again, 50, 10*time.Second)
	require.Never(t, func() bool { return again.Count() > 50 }, 300*time.Millisecond, 20*time.Millisecond)
	acked := map[string]bool{}
	for _, m := range msgs[:60] {
		acked[m.GetId()] = true
	}
	for _, m := range got {
		assert.False(t, acked[m.GetId()], "an acked message came back")
	}
	assertShardOrder(t, got)
}

// Subscribe 9: poll failures reach every subscriber; nothing is lost.
func TestSubscribe_FetchFailuresGiveEverySubscriberUnavailableThenOKAndLoseNothing(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 4,
		Node: func(c *node.Config) { c.NoticeInterval = 200 * time.Millisecond }})
	a := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	b := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	produceSpread(t, env, "t", 4, 40, 0)
	require.Eventually(t, func() bool { return a.Count()+b.Count() == 40 }, 10*time.Second, 10*time.Millisecond)

	fault := env.Cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Err: kerr.UnknownServerError, Count: -1})
	produceSpread(t, env, "t", 4, 40, 40)
	for _, s := range []*testenv.Subscriber{a, b} {
		s.WaitFor(10*time.Second, "an UNAVAILABLE notice", func() bool {
			return slices.ContainsFunc(s.Notices(), func(n *pb.Notice) bool {
				return n.GetStatus().GetCode() == int32(codes.Unavailable) && !n.GetTerminal()
			})
		})
	}
	fault.Remove()
	for _, s := range []*testenv.Subscriber{a, b} {
		s.WaitFor(15*time.Second, "an OK notice", func() bool {
			return slices.ContainsFunc(s.Notices(), func(n *pb.Notice) bool { return n.GetStatus().GetCode() == int32(codes.OK) })
		})
	}
	require.Eventually(t, func() bool { return a.Count()+b.Count() == 80 }, 15*time.Second, 10*time.Millisecond,
		"every message arrives after the fault clears")
	all := append(a.Messages(), b.Messages()...)
	seen := map[string]bool{}
	for _, m := range all {
		require.False(t, seen[m.GetId()], "duplicate %s", m.GetId())
		seen[m.GetId()] = true
	}
	for _, s := range []*testenv.Subscriber{a, b} {
		assertShardOrder(t, s.Messages())
		ended, _ := s.Ended()
		assert.False(t, ended)
	}
}

// Subscribe 9: commit failures are retried and hidden.
func TestSubscribe_CommitFailuresAreHiddenAndTheCommitLandsAfterTheFaultClears(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 2, Kafka: shortCommits(200 * time.Millisecond)})
	produceSpread(t, env, "t", 2, 20, 0)
	sub := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	sub.WaitCount(20, 10*time.Second)
	require.Eventually(t, func() bool { return len(env.Committed(t, "s")["t"]) == 2 }, 5*time.Second, 20*time.Millisecond)

	fault := env.Cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.TxnOffsetCommit}, Err: kerr.CoordinatorNotAvailable, Count: -1})
	ackAll(t, sub, 20, 5*time.Second)
	require.NoError(t, fault.Wait(context.Background(), 2), "commits are attempted and fail")
	assert.Equal(t, map[int32]int64{0: 0, 1: 0}, env.Committed(t, "s")["t"])
	fault.Remove()
	require.Eventually(t, func() bool {
		c := env.Committed(t, "s")["t"]
		return c[0] == 10 && c[1] == 10
	}, 10*time.Second, 20*time.Millisecond, "the commit lands after the fault clears")
	assert.Empty(t, sub.Notices(), "subscribers see nothing of commit failures")
	ended, _ := sub.Ended()
	assert.False(t, ended)
}

// Subscribe: bad input gets API.md's status and disturbs nobody else.
func TestSubscribe_BadInputGetsItsStatusAndOtherSubscribersAreUntouched(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t", "u"}, Partitions: 2})
	bystander := testenv.Subscribe(t, env.Client, earliest("s", "t"))

	open := func(o *pb.Open) *pb.SubscribeRequest {
		return &pb.SubscribeRequest{Request: &pb.SubscribeRequest_Open{Open: o}}
	}
	ack := &pb.SubscribeRequest{Request: &pb.SubscribeRequest_Ack{Ack: &pb.Ack{MessageIds: []string{"x"}}}}
	for _, tc := range []struct {
		name string
		reqs []*pb.SubscribeRequest
		code codes.Code
		says string
	}{
		{"no open", []*pb.SubscribeRequest{ack}, codes.InvalidArgument, "first request"},
		{"stream ends before open", nil, codes.InvalidArgument, "before open"},
		{"empty subscription", []*pb.SubscribeRequest{open(&pb.Open{Topics: []string{"t"}})}, codes.InvalidArgument, "subscription is empty"},
		{"no topics", []*pb.SubscribeRequest{open(&pb.Open{Subscription: "s2"})}, codes.InvalidArgument, "no topics"},
		{"empty topic name", []*pb.SubscribeRequest{open(&pb.Open{Subscription: "s2", Topics: []string{"t", ""}})}, codes.InvalidArgument, "topic name is empty"},
		{"unknown start position", []*pb.SubscribeRequest{open(&pb.Open{Subscription: "s2", Topics: []string{"t"}, StartPosition: 9})}, codes.InvalidArgument, "start_position"},
		{"unknown topic", []*pb.SubscribeRequest{open(&pb.Open{Subscription: "s2", Topics: []string{"nope"}})}, codes.NotFound, "nope"},
		{"topic set differs", []*pb.SubscribeRequest{open(&pb.Open{Subscription: "s", Topics: []string{"t", "u"}})}, codes.FailedPrecondition, "same topics"},
		{"two opens", []*pb.SubscribeRequest{open(earliest("s", "t")), open(earliest("s", "t"))}, codes.InvalidArgument, "open sent twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stream, err := pb.NewSubscriberClient(env.Client.Conn()).Subscribe(ctx)
			require.NoError(t, err)
			for _, r := range tc.reqs {
				require.NoError(t, stream.Send(r))
			}
			if tc.reqs == nil {
				require.NoError(t, stream.CloseSend())
			}
			for {
				_, err = stream.Recv()
				if err != nil {
					break
				}
			}
			st := statusOf(err)
			assert.Equal(t, tc.code, st.Code(), st.Message())
			assert.Contains(t, st.Message(), tc.says)
		})
	}

	// Acks for unknown and malformed ids are ignored and counted.
	before := metricValue(t, env, "streamgate_subscribe_unknown_acks_total")
	bystander.Ack("not-an-id", "AQEAZGVtbw", "")
	bystander.Nack("AQEAZGVtbw")
	require.Eventually(t, func() bool { return metricValue(t, env, "streamgate_subscribe_unknown_acks_total") == before+4 }, 5*time.Second, 10*time.Millisecond)

	produceSpread(t, env, "t", 2, 10, 0)
	ackAll(t, bystander, 10, 10*time.Second)
	ended, _ := bystander.Ended()
	assert.False(t, ended, "the bystander's stream is untouched")
	assert.Empty(t, bystander.Notices())
}

// Large messages go out in batches that gRPC clients accept (4 MiB).
func TestSubscribe_LargeMessagesArriveInBatchesUnderTheClientsSizeLimit(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 1})
	recs := make([]*kgo.Record, 10)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: "t", Value: append(fmt.Appendf(nil, "0:%d:", i), make([]byte, 600<<10)...)}
	}
	env.Produce(t, recs...)
	sub := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	msgs := ackAll(t, sub, 10, 20*time.Second)
	require.Len(t, msgs, 10)
	ended, st := sub.Ended()
	require.False(t, ended, "%v", st)
}

// A client that stops reading cannot keep its stream (nor the node) busy:
// the ack timeout ends it even though the terminal notice cannot be sent.
func TestSubscribe_ClientThatStopsReadingIsCutOffAfterTheAckTimeout(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 1,
		Node: func(c *node.Config) { c.AckTimeout = time.Second }})
	recs := make([]*kgo.Record, 300)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: "t", Value: append(fmt.Appendf(nil, "0:%d:", i), make([]byte, 32<<10)...)}
	}
	env.Produce(t, recs...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := pb.NewSubscriberClient(env.Client.Conn()).Subscribe(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Open{Open: earliest("s", "t")}}))
	require.Eventually(t, func() bool { return metricValue(t, env, "streamgate_subscribe_subscribers") == 1 }, 5*time.Second, 10*time.Millisecond)
	// The client never calls Recv.
	require.Eventually(t, func() bool { return metricValue(t, env, "streamgate_subscribe_ack_timeouts_total") == 1 }, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return metricValue(t, env, "streamgate_subscribe_subscribers") == 0 }, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return metricValue(t, env, "streamgate_subscribe_backend_consumers") == 0 }, 10*time.Second, 20*time.Millisecond,
		"the handler returned and the subscription closed")
}

// Nack hands messages back at once: they come again before anything later
// in their shard, once each even when an id is repeated.
func TestSubscribe_NackRedeliversBeforeLaterMessagesOnceEvenWithRepeatedIDs(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 1, Node: func(c *node.Config) { c.MaxUnacked = 5 }})
	produceSpread(t, env, "t", 1, 10, 0)
	sub := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	first := sub.WaitCount(5, 10*time.Second)
	sub.Nack(first[2].GetId(), first[3].GetId(), first[2].GetId())
	sub.Ack(first[0].GetId(), first[1].GetId(), first[4].GetId())
	msgs := sub.WaitCount(10, 10*time.Second)
	again := msgs[5:]
	require.Equal(t, first[2].GetId(), again[0].GetId(), "handed back first, in order")
	require.Equal(t, first[3].GetId(), again[1].GetId())
	assert.EqualValues(t, 2, again[0].GetDeliveryAttempt())
	assert.Equal(t, []int{5, 6, 7}, []int{seqOf(t, again[2]), seqOf(t, again[3]), seqOf(t, again[4])})
	require.Never(t, func() bool { return sub.Count() > 10 }, 300*time.Millisecond, 20*time.Millisecond,
		"a repeated id in a nack is handed back once")
}

// Shards added to a topic are read without a new subscriber.
func TestSubscribe_ShardsAddedToATopicAreReadByRunningSubscribers(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 2,
		Node: func(c *node.Config) { c.ShardRefreshInterval = 200 * time.Millisecond }})
	sub := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.Brokers...))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = kadm.NewClient(cl).CreatePartitions(ctx, 2, "t")
	require.NoError(t, err)
	produceSpread(t, env, "t", 4, 8, 0) // two messages on each of the four shards
	msgs := ackAll(t, sub, 8, 15*time.Second)
	shards := map[string]bool{}
	for _, m := range msgs {
		shards[m.GetShard()] = true
	}
	assert.Len(t, shards, 4)
}

// A subscription whose saved position fell off the log (retention) goes on
// from the log's start, without errors.
func TestSubscribe_PositionBelowTheLogStartResumesAtTheStart(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 1, Kafka: shortCommits(100 * time.Millisecond)})
	produceSpread(t, env, "t", 1, 10, 0)
	sub := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	ackAll(t, sub, 10, 10*time.Second)
	require.Eventually(t, func() bool { return env.Committed(t, "s")["t"][0] == 10 }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, sub.CloseSend())
	sub.WaitEnd(5 * time.Second)

	produceSpread(t, env, "t", 1, 20, 10)
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.Brokers...))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	del := kadm.Offsets{}
	del.AddOffset("t", 0, 25, -1)
	resp, err := kadm.NewClient(cl).DeleteRecords(ctx, del)
	require.NoError(t, err)
	require.NoError(t, resp.Error())

	again := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	msgs := ackAll(t, again, 5, 10*time.Second)
	assert.Equal(t, 25, seqOf(t, msgs[0]), "resumes at the log start")
	assert.Empty(t, again.Notices())
}

// A broker that cannot be reached at all (franz-go's polls just come back
// empty): subscribers get UNAVAILABLE notices, and delivery resumes with
// nothing lost when it comes back.
func TestSubscribe_UnreachableBrokerGivesUnavailableNoticesThenDeliveryResumes(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 2, Proxied: true,
		Node: func(c *node.Config) { c.NoticeInterval = 200 * time.Millisecond }})
	sub := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	produceSpread(t, env, "t", 2, 20, 0)
	ackAll(t, sub, 20, 10*time.Second)

	env.Proxy.Stop()
	sub.WaitFor(15*time.Second, "an UNAVAILABLE notice", func() bool {
		return slices.ContainsFunc(sub.Notices(), func(n *pb.Notice) bool {
			return n.GetStatus().GetCode() == int32(codes.Unavailable) && !n.GetTerminal()
		})
	})
	env.Proxy.Start(t)
	sub.WaitFor(15*time.Second, "an OK notice", func() bool {
		return slices.ContainsFunc(sub.Notices(), func(n *pb.Notice) bool { return n.GetStatus().GetCode() == int32(codes.OK) })
	})
	produceSpread(t, env, "t", 2, 20, 20)
	msgs := ackAll(t, sub, 40, 15*time.Second)
	assertShardOrder(t, msgs)
	ended, _ := sub.Ended()
	assert.False(t, ended)
}
