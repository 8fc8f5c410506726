package brokertest

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker"
)

// Publisher: done is called exactly once per message, for messages of one
// shard in the order Publish was called; the id is the one subscribers
// see; equal keys land on the same shard, in order; the message arrives as
// it was published.
func testPublishResultsInOrderPerShard(t *testing.T, e *env) {
	topic := e.topic(4)
	b := e.backend(Options{})
	const keys, n = 8, 200
	start := time.Now()

	var mu sync.Mutex // guards calls, results and order
	calls := make([]int, n)
	results := make([]broker.PublishResult, n)
	var order []int // message indexes in the order done was called
	var wg sync.WaitGroup
	wg.Add(n)
	ctx := ctxFor(t, waitFor)
	msgs := make([]*broker.Message, n)
	for i := range n {
		msgs[i] = &broker.Message{
			Topic:   topic,
			Key:     fmt.Appendf(nil, "key-%d", i%keys),
			Payload: fmt.Appendf(nil, "m%d", i),
			// Keys may repeat; order is kept.
			Headers: []broker.Header{{Key: "h", Value: []byte("first")}, {Key: "seq", Value: []byte(strconv.Itoa(i))}, {Key: "h", Value: []byte("second")}},
		}
		b.Publish(ctx, msgs[i], func(r broker.PublishResult) {
			mu.Lock()
			calls[i]++
			first := calls[i] == 1
			if first {
				results[i] = r
				order = append(order, i)
			}
			mu.Unlock()
			if first {
				wg.Done()
			}
		})
	}
	waitGroup(t, &wg, "every publish result")

	seen := map[string]int{}
	mu.Lock()
	for i, r := range results {
		require.NoError(t, r.Err, "message %d", i)
		require.NotEmpty(t, r.ID, "message %d", i)
		j, dup := seen[r.ID]
		require.False(t, dup, "messages %d and %d got the same id %q", j, i, r.ID)
		seen[r.ID] = i
	}
	mu.Unlock()

	r := open(t, b, spec(e.subscription(), topic, broker.StartEarliest), shardsOf(t, b, topic))
	ds := r.exactly(n)
	shardOf := map[int]broker.ShardID{}
	keyShard := map[string]broker.ShardID{}
	for _, d := range ds {
		i, ok := seen[d.ID]
		require.True(t, ok, "delivery %q (%s) has an id that Publish returned", d.ID, d.Message.Payload)
		_, again := shardOf[i]
		require.False(t, again, "m%d delivered twice", i)
		shardOf[i] = d.Shard
		assert.Equal(t, topic, d.Shard.Topic)
		assert.Equal(t, topic, d.Message.Topic)
		assert.Equal(t, msgs[i].Key, d.Message.Key)
		assert.Equal(t, msgs[i].Payload, d.Message.Payload)
		assert.Equal(t, msgs[i].Headers, d.Message.Headers, "headers in order, repeated keys kept")
		assert.Zero(t, d.Attempts)
		assert.False(t, d.PublishTime.Before(start.Add(-time.Minute)) || d.PublishTime.After(time.Now().Add(time.Minute)),
			"publish time %s is about when it was published (%s)", d.PublishTime, start)
		k := string(d.Message.Key)
		if s, ok := keyShard[k]; ok {
			assert.Equal(t, s, d.Shard, "key %s stays on one shard", k)
		}
		keyShard[k] = d.Shard
	}
	// Per shard: delivered in publish order, and done called in publish
	// order.
	for s, sds := range byShard(ds) {
		prev := -1
		for _, d := range sds {
			i := seen[d.ID]
			assert.Greater(t, i, prev, "shard %v delivers in publish order", s)
			prev = i
		}
	}
	mu.Lock()
	last := map[broker.ShardID]int{}
	for _, i := range order {
		s := shardOf[i]
		if p, ok := last[s]; ok {
			assert.Greater(t, i, p, "done for shard %v called in publish order", s)
		}
		last[s] = i
	}
	for i, c := range calls {
		assert.Equal(t, 1, c, "done of message %d called once", i)
	}
	mu.Unlock()
}

// Publish may be called from many goroutines at once; each one's messages
// of one key keep their order, in done calls and in delivery.
func testPublishConcurrentOrderPerKey(t *testing.T, e *env) {
	topic := e.topic(3)
	b := e.backend(Options{})
	const goroutines, each = 4, 50
	var mu sync.Mutex // guards done
	done := map[string][]int{}
	var results sync.WaitGroup
	results.Add(goroutines * each)
	var pubs sync.WaitGroup
	failed := make(chan error, goroutines*each)
	ctx := ctxFor(t, waitFor)
	for g := range goroutines {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			key := fmt.Sprintf("g%d", g)
			for i := range each {
				var once sync.Once
				m := &broker.Message{Topic: topic, Key: []byte(key), Payload: fmt.Appendf(nil, "%s-%d", key, i)}
				b.Publish(ctx, m, func(r broker.PublishResult) {
					once.Do(func() {
						if r.Err != nil {
							failed <- r.Err
						}
						mu.Lock()
						done[key] = append(done[key], i)
						mu.Unlock()
						results.Done()
					})
				})
			}
		}()
	}
	waitGroup(t, &pubs, "the publishing goroutines")
	waitGroup(t, &results, "every publish result")
	close(failed)
	for err := range failed {
		require.NoError(t, err)
	}
	mu.Lock()
	for k, is := range done {
		for j := 1; j < len(is); j++ {
			require.Greater(t, is[j], is[j-1], "done for key %s in publish order: %v", k, is)
		}
	}
	mu.Unlock()

	r := open(t, b, spec(e.subscription(), topic, broker.StartEarliest), shardsOf(t, b, topic))
	next := map[string]int{}
	for _, d := range r.take(goroutines * each) {
		want := fmt.Sprintf("%s-%d", d.Message.Key, next[string(d.Message.Key)])
		require.Equal(t, want, string(d.Message.Payload), "key %s delivered in publish order", d.Message.Key)
		next[string(d.Message.Key)]++
	}
}

// ctx bounds only the hand-off to the backend: a message handed off is
// published even when its ctx ends right after Publish returns, and so are
// the messages published beside it with a ctx that lives on.
func testPublishCanceledAfterHandOff(t *testing.T, e *env) {
	topic := e.topic(2)
	b := e.backend(Options{})
	const n = 50
	res := make([]broker.PublishResult, n)
	var wg sync.WaitGroup
	wg.Add(n)
	live := ctxFor(t, waitFor)
	for i, m := range messages(topic, 0, n, keyMod(5)) {
		ctx, cancel := context.WithCancel(live)
		var once sync.Once
		b.Publish(ctx, m, func(r broker.PublishResult) {
			once.Do(func() { res[i] = r; wg.Done() })
		})
		if i%2 == 0 {
			cancel()
		} else {
			defer cancel()
		}
	}
	waitGroup(t, &wg, "every publish result")
	var failed [2][]string // by whether the ctx was canceled
	for i, r := range res {
		if r.Err != nil {
			failed[(i+1)%2] = append(failed[(i+1)%2], fmt.Sprintf("m%d: %v", i, r.Err))
		}
	}
	assert.Empty(t, failed[0], "messages whose ctx lives on")
	require.Empty(t, failed[1], "messages whose ctx was canceled after Publish returned")
	r := open(t, b, spec(e.subscription(), topic, broker.StartEarliest), shardsOf(t, b, topic))
	assert.ElementsMatch(t, names(0, n), payloads(r.take(n)))
}

// A topic that does not exist fails publishing and listing with
// ErrTopicNotFound.
func testPublishUnknownTopic(t *testing.T, e *env) {
	known := e.topic(1)
	missing := e.prefix + ".missing"
	b := e.backend(Options{})
	r := publishOne(t, b, &broker.Message{Topic: missing, Payload: []byte("x")})
	require.ErrorIs(t, r.Err, broker.ErrTopicNotFound)
	assert.Empty(t, r.ID)

	_, err := b.Shards(ctxFor(t, waitFor), []string{missing})
	require.ErrorIs(t, err, broker.ErrTopicNotFound)
	_, err = b.Shards(ctxFor(t, waitFor), []string{known, missing})
	require.ErrorIs(t, err, broker.ErrTopicNotFound)
	// The topic was not created by asking.
	_, err = b.Shards(ctxFor(t, waitFor), []string{missing})
	require.ErrorIs(t, err, broker.ErrTopicNotFound)
}

// A message over the backend's size limit fails with ErrInvalidMessage; one
// at the limit is accepted.
func testPublishOversized(t *testing.T, e *env) {
	topic := e.topic(1)
	b := e.backend(Options{MaxMessageBytes: 64 << 10})
	lim, ok := b.(MessageLimiter)
	if !ok {
		t.Skip("the backend has no message size limit (MessageLimiter)")
	}
	limit := lim.MaxMessageBytes()
	at := &broker.Message{Topic: topic, Key: []byte("k"), Payload: make([]byte, limit-len(topic)-1)}
	require.Equal(t, limit, at.Size())
	r := publishOne(t, b, at)
	require.NoError(t, r.Err, "a message of exactly MaxMessageBytes is accepted")

	over := &broker.Message{Topic: topic, Payload: make([]byte, 2*limit+4096)}
	r = publishOne(t, b, over)
	require.ErrorIs(t, r.Err, broker.ErrInvalidMessage)
	assert.Empty(t, r.ID)

	// The publisher still works.
	require.NoError(t, publishOne(t, b, &broker.Message{Topic: topic, Payload: []byte("small")}).Err)
}

func testPing(t *testing.T, e *env) {
	b := e.backend(Options{})
	require.NoError(t, b.Ping(ctxFor(t, waitFor)))
}

// Shards lists every shard of each topic named.
func testShards(t *testing.T, e *env) {
	a, c := e.topic(3), e.topic(1)
	b := e.backend(Options{})
	got := shardsOf(t, b, a, c)
	require.Len(t, got, 4)
	idx := map[string]map[int32]bool{}
	for _, s := range got {
		if idx[s.Topic] == nil {
			idx[s.Topic] = map[int32]bool{}
		}
		assert.False(t, idx[s.Topic][s.Index], "shard %v listed once", s)
		idx[s.Topic][s.Index] = true
	}
	assert.Len(t, idx[a], 3)
	assert.Len(t, idx[c], 1)
	assert.Len(t, shardsOf(t, b, a), 3)
}
