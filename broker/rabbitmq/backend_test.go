package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker"
)

func TestPublish_KeysKeepTheirShardAndOrder(t *testing.T) {
	b := backend(t, nil)
	topic := newTopic(t, b, 3)
	shards, err := b.Shards(context.Background(), []string{topic})
	require.NoError(t, err)
	require.Len(t, shards, 3)

	var msgs []*broker.Message
	for i := range 300 {
		m := msg(topic, fmt.Sprintf("k%d", i%7), i)
		m.Headers = []broker.Header{{Key: "h", Value: []byte("1")}, {Key: "h", Value: []byte("2")}}
		msgs = append(msgs, m)
	}
	res := publish(t, b, msgs...)
	for _, r := range res {
		require.NoError(t, r.Err)
	}
	c := consume(t, b, "order", broker.StartEarliest, shards...)
	ds := poll(t, c, 300, 20*time.Second)
	published := map[string]bool{}
	for _, r := range res {
		published[r.ID] = true
	}
	last := map[string]int{}
	where := map[string]int32{}
	for _, d := range ds {
		assert.True(t, published[d.ID], "a delivery id is one Publish returned")
		k := string(d.Message.Key)
		i, _ := strconv.Atoi(string(d.Message.Payload))
		if p, ok := last[k]; ok {
			assert.Greater(t, i, p, "key %s out of order", k)
		}
		last[k] = i
		if s, ok := where[k]; ok {
			assert.Equal(t, s, d.Shard.Index, "key %s on two shards", k)
		}
		where[k] = d.Shard.Index
		assert.Equal(t, []broker.Header{{Key: "h", Value: []byte("1")}, {Key: "h", Value: []byte("2")}}, d.Message.Headers)
	}

	_, err = b.Shards(context.Background(), []string{"no-such-topic"})
	require.ErrorIs(t, err, broker.ErrTopicNotFound)
	r := publish(t, b, msg("no-such-topic", "", 1))
	require.ErrorIs(t, r[0].Err, broker.ErrTopicNotFound)
}

func TestPublish_ResultsComeInPublishOrderPerShard(t *testing.T) {
	b := backend(t, nil)
	topic := newTopic(t, b, 1)
	got := make(chan int, 1000)
	for i := range 1000 {
		b.Publish(context.Background(), msg(topic, "", i), func(r broker.PublishResult) {
			if r.Err == nil {
				got <- i
			} else {
				got <- -1
			}
		})
	}
	for want := range 1000 {
		select {
		case i := <-got:
			require.Equal(t, want, i)
		case <-time.After(20 * time.Second):
			t.Fatal("results stopped")
		}
	}
}

func TestConsume_AckedMessagesAreNotDeliveredAfterResume(t *testing.T) {
	b := backend(t, nil)
	topic := newTopic(t, b, 2)
	shards := []broker.ShardID{shard(topic, 0), shard(topic, 1)}
	c := consume(t, b, "resume", broker.StartLatest, shards...)
	var msgs []*broker.Message
	for i := range 20 {
		msgs = append(msgs, msg(topic, "", i))
	}
	publish(t, b, msgs...)
	ds := poll(t, c, 20, 20*time.Second)
	c.Delivered(ids(ds)...)
	c.Ack(ids(ds[:10])...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.Close(ctx))

	// A new consumer (a restart) gets exactly the 10 un-acked ones, counted
	// as delivered once before.
	c2 := consume(t, b, "resume", broker.StartLatest, shards...)
	again := poll(t, c2, 10, 20*time.Second)
	assert.ElementsMatch(t, ids(ds[10:]), ids(again))
	for _, d := range again {
		assert.Equal(t, uint32(1), d.Attempts)
	}
	quiet(t, c2, 1500*time.Millisecond)
}

func TestConsume_OutOfOrderAcksAreKept(t *testing.T) {
	b := backend(t, nil)
	topic := newTopic(t, b, 1)
	shards := []broker.ShardID{shard(topic, 0)}
	c := consume(t, b, "ooo", broker.StartEarliest, shards...)
	var msgs []*broker.Message
	for i := range 10 {
		msgs = append(msgs, msg(topic, "", i))
	}
	publish(t, b, msgs...)
	ds := poll(t, c, 10, 20*time.Second)
	var odd []string
	for i, d := range ds {
		if i%2 == 1 {
			odd = append(odd, d.ID)
		}
	}
	c.Ack(odd...)
	saveNow(t, c)
	c.Assign(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.Release(ctx, shards))

	c2 := consume(t, b, "ooo", broker.StartEarliest, shards...)
	again := poll(t, c2, 5, 20*time.Second)
	for _, d := range again {
		i, _ := strconv.Atoi(string(d.Message.Payload))
		assert.Equal(t, 0, i%2, "acked message %d delivered again", i)
	}
	quiet(t, c2, 1500*time.Millisecond)
}

func TestConsume_HandoffBetweenBackends(t *testing.T) {
	b1, b2 := backend(t, nil), backend(t, nil)
	topic := newTopic(t, b1, 1)
	shards := []broker.ShardID{shard(topic, 0)}
	c1 := consume(t, b1, "handoff", broker.StartEarliest, shards...)
	var msgs []*broker.Message
	for i := range 10 {
		msgs = append(msgs, msg(topic, "", i))
	}
	publish(t, b1, msgs...)
	ds := poll(t, c1, 10, 20*time.Second)
	c1.Ack(ids(ds[:4])...)
	c1.Assign(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c1.Release(ctx, shards))

	c2 := consume(t, b2, "handoff", broker.StartEarliest, shards...)
	got := poll(t, c2, 6, 20*time.Second)
	assert.Equal(t, ids(ds[4:]), ids(got), "the second backend sees the same ids, from the first un-acked")
}

// A reader frozen while another took its shard cannot move the saved
// position backwards: its saves are fenced and it reports ShardLost.
func TestFence_StaleWriterCannotMovePositionBackwards(t *testing.T) {
	b1, b2 := backend(t, nil), backend(t, nil)
	topic := newTopic(t, b1, 1)
	shards := []broker.ShardID{shard(topic, 0)}
	old := consume(t, b1, "fence", broker.StartEarliest, shards...)
	var msgs []*broker.Message
	for i := range 10 {
		msgs = append(msgs, msg(topic, "", i))
	}
	publish(t, b1, msgs...)
	ds := poll(t, old, 10, 20*time.Second)
	old.Ack(ds[0].ID)
	saveNow(t, old)

	// Another node takes the shard (the old one was cut off) and acks more.
	nu := consume(t, b2, "fence", broker.StartEarliest, shards...)
	got := poll(t, nu, 9, 20*time.Second)
	nu.Ack(ids(got[:8])...)
	saveNow(t, nu)

	// The stale reader acks one more and saves: fenced.
	old.Ack(ds[1].ID)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, lost, err := old.save(ctx, saveReq{})
	require.NoError(t, err)
	require.Len(t, lost, 1)
	ev := old.TakeEvents()
	require.Len(t, ev, 1)
	assert.Equal(t, broker.ShardLost, ev[0].Kind)

	st, err := b1.store.read(ctx, []posKey{{"fence", topic, 0}})
	require.NoError(t, err)
	assert.Equal(t, int64(9), st[posKey{"fence", topic, 0}].pos.next, "the new reader's position stands")
}

func TestOutage_PollReportsUnavailableThenRecoversWithNothingLost(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: this test stops and restarts the rabbitmq-server (about 15 s); CI runs it")
	}
	b := backend(t, nil)
	topic := newTopic(t, b, 2)
	shards := []broker.ShardID{shard(topic, 0), shard(topic, 1)}
	c := consume(t, b, "outage", broker.StartEarliest, shards...)
	var msgs []*broker.Message
	for i := range 10 {
		msgs = append(msgs, msg(topic, "", i))
	}
	publish(t, b, msgs...)
	ds := poll(t, c, 10, 20*time.Second)
	c.Ack(ids(ds)...)
	saveNow(t, c)

	srv := requireServer(t)
	srv.Kill()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := c.Poll(context.Background(), 10)
		if errors.Is(err, broker.ErrUnavailable) {
			break
		}
		require.True(t, time.Now().Before(deadline), "Poll never reported the outage")
	}
	require.NoError(t, srv.StartAgain())

	// Publishing works again (the first tries may fail while connections
	// come back); every message published after that is delivered once.
	var sent []string
	deadline = time.Now().Add(60 * time.Second)
	for i := 0; len(sent) < 10; i++ {
		require.True(t, time.Now().Before(deadline), "publishing did not recover")
		r := publish(t, b, msg(topic, "", 100+i))[0]
		if r.Err == nil {
			sent = append(sent, r.ID)
		} else {
			time.Sleep(200 * time.Millisecond)
		}
	}
	got := poll(t, c, 10, 60*time.Second)
	assert.ElementsMatch(t, sent, ids(got))
	require.Eventually(t, func() bool {
		_, err := c.Poll(context.Background(), 10)
		return err == nil
	}, 30*time.Second, 10*time.Millisecond, "Poll keeps reporting the outage")
	quiet(t, c, time.Second)
}
