package brokertest

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker"
)

// Consume fetches nothing until Assign gives it shards.
func testStartNothingUntilAssign(t *testing.T, e *env) {
	topic := e.topic(2)
	b := e.backend(Options{})
	shards := shardsOf(t, b, topic)
	publish(t, b, messages(topic, 0, 6, keyMod(6)))
	r := open(t, b, spec(e.subscription(), topic, broker.StartEarliest), nil)
	require.Empty(t, payloads(r.quiet()), "nothing is fetched before Assign")
	r.c.Assign(shards)
	assert.ElementsMatch(t, names(0, 6), payloads(r.take(6)))
}

// StartEarliest: every message the backend holds, in order per shard.
func testStartEarliest(t *testing.T, e *env) {
	topic := e.topic(1)
	b := e.backend(Options{})
	publish(t, b, messages(topic, 0, 5, nil))
	r := open(t, b, spec(e.subscription(), topic, broker.StartEarliest), shardsOf(t, b, topic))
	publish(t, b, messages(topic, 5, 3, nil))
	assert.Equal(t, names(0, 8), payloads(r.take(8)))
}

// StartLatest: Prepare fixes the start, so that a consumer opened later,
// even on another node, gets every message published after Prepare
// returned, and none from before.
func testStartLatest(t *testing.T, e *env) {
	topic := e.topic(3)
	b1, b2 := e.backend(Options{}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 9, keyMod(9)))
	sp := spec(e.subscription(), topic, broker.StartLatest)
	require.NoError(t, b1.Prepare(ctxFor(t, waitFor), sp, shards))
	publish(t, b1, messages(topic, 100, 9, keyMod(9)))
	r := open(t, b2, sp, shards)
	publish(t, b1, messages(topic, 200, 3, keyMod(9)))
	want := append(names(100, 109), names(200, 203)...)
	assert.ElementsMatch(t, want, payloads(r.take(12)))
}

// A subscription with a saved position resumes there whatever its spec's
// start says.
func testStartSavedWins(t *testing.T, e *env) {
	topic := e.topic(1)
	b1, b2 := e.backend(Options{}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 6, nil))

	// Started at the earliest; a later reader asking for the latest still
	// gets what the first left.
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	a.ack(pick(t, a.take(6), 0, 1)...)
	a.close()
	r := open(t, b2, spec(name, topic, broker.StartLatest), shards)
	assert.Equal(t, names(2, 6), payloads(r.take(4)))

	// Started at the latest; a later reader asking for the earliest gets
	// only what came after the start.
	other := e.subscription()
	require.NoError(t, b1.Prepare(ctxFor(t, waitFor), spec(other, topic, broker.StartLatest), shards))
	publish(t, b1, messages(topic, 6, 2, nil))
	r2 := open(t, b2, spec(other, topic, broker.StartEarliest), shards)
	assert.Equal(t, names(6, 8), payloads(r2.take(2)))
}

// Preparing an existing subscription again, on any node, moves no start.
func testStartPrepareAgain(t *testing.T, e *env) {
	topic := e.topic(2)
	b1, b2 := e.backend(Options{}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	sp := spec(e.subscription(), topic, broker.StartLatest)
	require.NoError(t, b1.Prepare(ctxFor(t, waitFor), sp, shards))
	publish(t, b1, messages(topic, 0, 4, keyMod(4)))
	require.NoError(t, b1.Prepare(ctxFor(t, waitFor), sp, shards))
	require.NoError(t, b2.Prepare(ctxFor(t, waitFor), sp, shards))
	publish(t, b1, messages(topic, 4, 4, keyMod(4)))
	r := open(t, b2, sp, shards)
	assert.ElementsMatch(t, names(0, 8), payloads(r.take(8)))
}

// Prepares that run at once on several nodes agree on one position per
// shard: every message published after they returned is delivered, none
// from before.
func testStartConcurrentPrepares(t *testing.T, e *env) {
	topic := e.topic(4)
	bs := []Backend{e.backend(Options{}), e.backend(Options{}), e.backend(Options{})}
	shards := shardsOf(t, bs[0], topic)
	publish(t, bs[0], messages(topic, 0, 8, keyMod(8)))
	sp := spec(e.subscription(), topic, broker.StartLatest)
	errs := make([]error, len(bs))
	var wg sync.WaitGroup
	for i, b := range bs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = b.Prepare(ctxFor(t, waitFor), sp, shards)
		}()
	}
	waitGroup(t, &wg, "the prepares")
	for _, err := range errs {
		require.NoError(t, err)
	}
	publish(t, bs[1], messages(topic, 100, 8, keyMod(8)))
	r := open(t, bs[2], sp, shards)
	assert.ElementsMatch(t, names(100, 108), payloads(r.take(8)))
}
