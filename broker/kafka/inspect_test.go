package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker"
)

func inspect(t *testing.T, b *Broker, subscription string, topics ...string) map[broker.ShardID]broker.ShardProgress {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ps, err := b.Inspect(ctx, subscription, topics)
	require.NoError(t, err)
	out := map[broker.ShardID]broker.ShardProgress{}
	for i, p := range ps {
		if i > 0 {
			require.Negative(t, compareShards(ps[i-1].Shard, p.Shard), "sorted by topic and index")
		}
		out[p.Shard] = p
	}
	return out
}

// Issue 8: a subscription nobody saved a position of is unknown to the
// backend (kfake answers GROUP_ID_NOT_FOUND where Kafka answers -1 per
// partition); named topics are still reported, unsaved, from the log start.
func TestInspect_UnknownSubscriptionHasNoShardsAndNamedTopicsCountFromTheLogStart(t *testing.T) {
	h := newHarness(t, 2, "t")
	b := h.backend(nil)
	h.produce("t", 0, 3)

	assert.Empty(t, inspect(t, b, "nobody"))
	got := inspect(t, b, "nobody", "t")
	assert.Equal(t, map[broker.ShardID]broker.ShardProgress{
		shard("t", 0): {Shard: shard("t", 0), Saved: false, Backlog: 3},
		shard("t", 1): {Shard: shard("t", 1), Saved: false, Backlog: 0},
	}, got)

	_, err := b.Inspect(context.Background(), "nobody", []string{"missing"})
	require.ErrorIs(t, err, broker.ErrTopicNotFound)
	assert.Empty(t, b.Unsaved("nobody"))
}

// Issue 8: the backlog counts from the saved position, less the acks out of
// order saved with it; acks not saved yet are reported apart (Unsaved) and
// leave the backlog at the save. Closing the consumer changes nothing.
func TestInspect_BacklogFromTheSavedPositionAndAcksNotSavedYetApart(t *testing.T) {
	h := newHarness(t, 2, "t")
	b := h.backend(nil) // CommitInterval: an hour; saves on demand
	h.produce("t", 0, 10)
	h.produce("t", 1, 4)
	c := h.consume(b, "s", broker.StartEarliest, shard("t", 0), shard("t", 1))
	ds := poll(t, c, 14, 10*time.Second)
	var p0 []broker.Delivery
	for _, d := range ds {
		if d.Shard.Index == 0 {
			p0 = append(p0, d)
		}
	}
	require.Len(t, p0, 10)

	// Offsets 0-2 in order, 5 and 6 out of order.
	c.Ack(p0[0].ID, p0[1].ID, p0[2].ID, p0[5].ID, p0[6].ID)
	assert.Equal(t, map[broker.ShardID]int64{shard("t", 0): 5}, b.Unsaved("s"))
	got := inspect(t, b, "s")
	assert.Equal(t, broker.ShardProgress{Shard: shard("t", 0), Saved: true, Backlog: 10}, got[shard("t", 0)], "nothing saved yet")
	assert.Equal(t, broker.ShardProgress{Shard: shard("t", 1), Saved: true, Backlog: 4}, got[shard("t", 1)])

	saveNow(t, c)
	assert.Empty(t, b.Unsaved("s"))
	got = inspect(t, b, "s")
	assert.Equal(t, int64(5), got[shard("t", 0)].Backlog, "10 - 3 below the saved position - 2 acked above it")
	assert.Equal(t, int64(4), got[shard("t", 1)].Backlog)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.Close(ctx))
	assert.Equal(t, got, inspect(t, b, "s"), "no subscriber: the same saved progress")
	assert.Equal(t, got, inspect(t, h.backend(nil), "s"), "another node's backend sees the same")
}

// Issue 8: a shard without a saved position (a subscription that started
// at the latest on one shard of two) counts from the first message
// published after the subscription was created.
func TestInspect_ShardWithoutSavedPositionCountsFromTheSubscriptionsStart(t *testing.T) {
	h := newHarness(t, 2, "t")
	b := h.backend(nil)
	h.produce("t", 1, 3) // before the subscription: not its backlog
	before := time.Now().UnixMilli()
	waitFor(t, time.Second, "the next millisecond", func() bool { return time.Now().UnixMilli() > before })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	spec := broker.SubscriptionSpec{Name: "s", Topics: []string{"t"}, Start: broker.StartLatest}
	require.NoError(t, b.Prepare(ctx, spec, []broker.ShardID{shard("t", 0)}))
	created := time.Now().UnixMilli()
	waitFor(t, time.Second, "the next millisecond", func() bool { return time.Now().UnixMilli() > created })
	h.produce("t", 1, 2)
	h.produce("t", 0, 1)

	got := inspect(t, b, "s")
	assert.Equal(t, broker.ShardProgress{Shard: shard("t", 0), Saved: true, Backlog: 1}, got[shard("t", 0)])
	assert.Equal(t, broker.ShardProgress{Shard: shard("t", 1), Saved: false, Backlog: 2}, got[shard("t", 1)])
}
