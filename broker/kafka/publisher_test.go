package kafka

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/broker/cursor"
)

// publishShards publishes msgs one after another and returns the shard
// index each landed on.
func publishShards(t *testing.T, b *Broker, msgs []*broker.Message) []int32 {
	t.Helper()
	var out []int32
	for _, m := range msgs {
		res := make(chan broker.PublishResult, 1)
		b.Publish(context.Background(), m, func(r broker.PublishResult) { res <- r })
		r := <-res
		require.NoError(t, r.Err)
		pos, err := decodeID(r.ID)
		require.NoError(t, err)
		out = append(out, pos.partition)
	}
	return out
}

// TestPublish_UnkeyedMessagesGoRoundTheShardsAndKeyedOnesStayOnTheirs: a
// trickle of unkeyed messages (one at a time, as the CLI sends at low
// rates) reaches every shard evenly; a key always lands on one shard, the
// one Kafka's Java client picks (murmur2).
func TestPublish_UnkeyedMessagesGoRoundTheShardsAndKeyedOnesStayOnTheirs(t *testing.T) {
	h := newHarness(t, 8, "spread")
	b := h.backend(nil)
	var unkeyed, keyed []*broker.Message
	for i := range 16 {
		unkeyed = append(unkeyed, &broker.Message{Topic: "spread", Payload: fmt.Appendf(nil, "u%d", i)})
		keyed = append(keyed, &broker.Message{Topic: "spread", Key: []byte("user-1"), Payload: fmt.Appendf(nil, "k%d", i)})
	}
	counts := map[int32]int{}
	for _, p := range publishShards(t, b, unkeyed) {
		counts[p]++
	}
	require.Len(t, counts, 8, "every shard gets unkeyed messages")
	for p, n := range counts {
		require.Equal(t, 2, n, "shard %d", p)
	}
	for _, p := range publishShards(t, b, keyed) {
		require.EqualValues(t, 4, p, "user-1 lands on shard 4 of 8, as with the Java client")
	}
}

// TestKeyShard_MatchesFranzGosKafkaHasher: the backend-neutral key rule
// (cursor.KeyShard, which the RabbitMQ backend uses) puts every key where
// this backend's partitioner (franz-go's Java-compatible hasher) does.
func TestKeyShard_MatchesFranzGosKafkaHasher(t *testing.T) {
	p := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	r := rand.New(rand.NewPCG(7, 7))
	for i := range 2000 {
		key := make([]byte, i%40)
		for j := range key {
			key[j] = byte(r.UintN(256))
		}
		for _, n := range []int{1, 3, 8, 100} {
			require.Equal(t, p.Partition(&kgo.Record{Key: key}, n), cursor.KeyShard(key, n), "key %x of %d", key, n)
		}
	}
}

// TestPublish_ProducerLingerHoldsABatchOpen: with a linger the producer
// waits that long for more records before it sends a batch, so two
// messages published one after the other go in one batch, and the first
// result comes no sooner than the linger (a coarse lower bound).
func TestPublish_ProducerLingerHoldsABatchOpen(t *testing.T) {
	const linger = 300 * time.Millisecond
	h := newHarness(t, 1, "linger")
	b := h.backend(func(c *Config) { c.ProducerLinger = linger })
	publishShards(t, b, []*broker.Message{{Topic: "linger", Payload: []byte("warm")}}) // metadata loaded
	start := time.Now()
	res := make(chan broker.PublishResult, 2)
	for _, p := range []string{"a", "b"} {
		b.Publish(context.Background(), &broker.Message{Topic: "linger", Payload: []byte(p)}, func(r broker.PublishResult) { res <- r })
	}
	for range 2 {
		require.NoError(t, (<-res).Err)
	}
	require.GreaterOrEqual(t, time.Since(start), linger-50*time.Millisecond, "the batch waited for the linger")
}
