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

	"github.com/streamgate/streamgate/broker/kafka"
	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/testenv"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// describe asks c for the subscription and returns its shards by name.
func describe(c *client.Client, name string) (*client.SubscriptionInfo, map[string]client.ShardInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := c.DescribeSubscription(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	byName := map[string]client.ShardInfo{}
	for _, s := range info.Shards {
		byName[s.Shard] = s
	}
	return info, byName, nil
}

// ackSeqs acks the messages of msgs whose sequence within their shard is
// in seqs, and returns how many it acked per shard.
func ackSeqs(t *testing.T, sub *testenv.Subscriber, msgs []*pb.Message, seqs ...int) map[string]int {
	t.Helper()
	want := map[int]bool{}
	for _, s := range seqs {
		want[s] = true
	}
	var ids []string
	per := map[string]int{}
	for _, m := range msgs {
		if want[seqOf(t, m)] {
			ids = append(ids, m.GetId())
			per[m.GetShard()]++
		}
	}
	sub.Ack(ids...)
	return per
}

// Issue 8: a subscriber reads and acks part of a topic (some acks out of
// order) and leaves; with nobody subscribed, every member describes the
// subscription from its saved positions: per shard the backlog left after
// the saved position, no owners, nothing unsaved.
func TestAdmin_DescribeWithNobodySubscribedReportsTheBacklogFromSavedPositions(t *testing.T) {
	const shards, perShard = 4, 10
	envs := testenv.StartCluster(t, 2, testenv.Options{Topics: []string{"t"}, Partitions: shards})
	sub := testenv.Subscribe(t, envs[0].Client, earliest("s", "t"))
	produceSpread(t, envs[0], "t", shards, shards*perShard, 0)
	msgs := sub.WaitCount(shards*perShard, 10*time.Second)
	ackSeqs(t, sub, msgs, 0, 1, 2, 3, 4, 5, 8) // 6 in order, 1 above a gap
	require.NoError(t, sub.CloseSend())        // leave politely once the acks are sent
	sub.WaitEnd(10 * time.Second)

	for i, env := range envs {
		var info *client.SubscriptionInfo
		var byName map[string]client.ShardInfo
		var err error
		require.Eventually(t, func() bool {
			info, byName, err = describe(env.Client, "s")
			if err != nil || len(info.Subscribers) > 0 || len(byName) != shards {
				return false
			}
			for _, s := range byName {
				if s.Backlog != perShard-7 || s.ClaimedBy != "" {
					return false
				}
			}
			return true
		}, 15*time.Second, 50*time.Millisecond, "asking node-%d: %+v %v", i+1, info, err)
		assert.Equal(t, []string{"t"}, info.Topics, "topics from the saved positions")
		for i := range shards {
			s, ok := byName[fmt.Sprintf("t/%d", i)]
			require.True(t, ok, "shard t/%d", i)
			assert.True(t, s.Saved)
			assert.Empty(t, s.SubscriberID)
			assert.Empty(t, s.Node)
			assert.Zero(t, s.InFlight)
			assert.Zero(t, s.AckedUnsaved)
		}
	}
}

// Issue 8: while subscribed, acks not saved yet (a long save interval) are
// reported apart from the saved backlog, summed from the member that holds
// them when another member answers; the save at the subscriber's leaving
// moves them out of the backlog.
func TestAdmin_DescribeSeparatesAckedUnsavedFromTheSavedBacklogWhileSubscribed(t *testing.T) {
	const shards, perShard = 2, 10
	envs := testenv.StartCluster(t, 2, testenv.Options{Topics: []string{"t"}, Partitions: shards,
		Kafka: func(c *kafka.Config) { c.CommitInterval, c.CommitEvery = time.Hour, 1_000_000 }})
	sub := testenv.Subscribe(t, envs[0].Client, earliest("s", "t"))
	produceSpread(t, envs[0], "t", shards, shards*perShard, 0)
	msgs := sub.WaitCount(shards*perShard, 10*time.Second)
	acked := ackSeqs(t, sub, msgs, 0, 1, 2, 5)
	require.Equal(t, map[string]int{"t/0": 4, "t/1": 4}, acked)

	for i, env := range envs { // the reading member, and one that asks it
		var byName map[string]client.ShardInfo
		var info *client.SubscriptionInfo
		require.Eventually(t, func() bool {
			var err error
			info, byName, err = describe(env.Client, "s")
			// In flight and acked unsaved are read a moment apart: wait
			// for both.
			return err == nil && byName["t/0"].AckedUnsaved == 4 && byName["t/1"].AckedUnsaved == 4 &&
				byName["t/0"].InFlight == perShard-4 && byName["t/1"].InFlight == perShard-4
		}, 10*time.Second, 20*time.Millisecond, "acked unsaved as node-%d sees it: %+v", i+1, byName)
		require.Len(t, info.Subscribers, 1)
		for _, name := range []string{"t/0", "t/1"} {
			s := byName[name]
			assert.Equal(t, sub.Opened.GetSubscriberId(), s.SubscriberID)
			assert.Equal(t, "node-1", s.ClaimedBy)
			assert.True(t, s.Saved)
			assert.EqualValues(t, perShard, s.Backlog, "nothing saved yet: the saved backlog is whole")
			assert.Equal(t, perShard-4, s.InFlight, "node-%d: %+v", i+1, byName)
		}
	}

	require.NoError(t, sub.CloseSend()) // the last subscriber leaves: its node saves
	sub.WaitEnd(10 * time.Second)
	require.Eventually(t, func() bool {
		info, byName, err := describe(envs[1].Client, "s")
		return err == nil && len(info.Subscribers) == 0 &&
			byName["t/0"].Backlog == perShard-4 && byName["t/1"].Backlog == perShard-4 &&
			byName["t/0"].AckedUnsaved == 0 && byName["t/1"].AckedUnsaved == 0
	}, 10*time.Second, 20*time.Millisecond, "the acks moved from unsaved to the saved position")
}

// Issue 8: a subscription with neither subscribers nor saved positions is
// NOT_FOUND, with a message that says so.
func TestAdmin_DescribeUnknownSubscriptionIsNotFoundWithAReadableMessage(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 2})
	_, _, err := describe(env.Client, "nobody")
	require.Equal(t, codes.NotFound, status.Code(err), "%v", err)
	assert.Equal(t, `subscription "nobody" has no subscribers and no saved positions`, status.Convert(err).Message())
}
