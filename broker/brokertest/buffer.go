package brokertest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker"
)

const bufferLimit = 10

// A consumer holds, per shard, at most its limit of messages fetched and
// not saved: a subscriber that never acks gets no more than the limit,
// however much the node asks for at once.
func testBufferLimit(t *testing.T, e *env) {
	topic := e.topic(1)
	b := e.backend(Options{MaxBufferedPerShard: bufferLimit})
	shards := shardsOf(t, b, topic)
	publish(t, b, messages(topic, 0, 6*bufferLimit, nil))
	r := open(t, b, spec(e.subscription(), topic, broker.StartEarliest), shards)
	got := r.drain()
	require.NotEmpty(t, got)
	assert.LessOrEqual(t, len(got), bufferLimit, "fetched and not saved: %d, over the limit of %d", len(got), bufferLimit)
}

// A shard stopped at the limit is fetched again as acks are saved:
// acking everything that arrives, every message comes, once.
func testBufferResumes(t *testing.T, e *env) {
	topic := e.topic(1)
	b := e.backend(Options{MaxBufferedPerShard: bufferLimit, SaveEvery: bufferLimit / 2, SaveInterval: 200 * time.Millisecond})
	shards := shardsOf(t, b, topic)
	const n = 6 * bufferLimit
	publish(t, b, messages(topic, 0, n, nil))
	r := open(t, b, spec(e.subscription(), topic, broker.StartEarliest), shards)
	var got []broker.Delivery
	deadline := time.Now().Add(waitFor)
	for len(got) < n {
		require.True(t, time.Now().Before(deadline), "got %d of %d", len(got), n)
		ds := r.poll(100)
		r.ack(ds...)
		got = append(got, ds...)
	}
	assert.Equal(t, names(0, n), payloads(got))
	assert.Empty(t, payloads(r.quiet()))
}
