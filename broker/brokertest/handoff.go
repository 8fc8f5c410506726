package brokertest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker"
)

// Release hands a shard to another node's reader: it reads from where the
// first released (every ack made before Release included, deliveries
// counted), with the same ids, while the first keeps its other shards.
func testHandoffRelease(t *testing.T, e *env) {
	topic := e.topic(2)
	b1, b2 := e.backend(Options{}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 20, keyMod(20)))
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(20)
	a.delivered(ds...)
	parts := byShard(ds)
	moving, staying := parts[shards[0]], parts[shards[1]]
	require.GreaterOrEqual(t, len(moving), 4, "20 keys spread over both shards")
	a.ack(moving[1], moving[3])             // out of order
	a.ack(staying...)                       // the other shard's acks do not matter here
	a.c.Assign([]broker.ShardID{shards[1]}) // shards[0] leaves
	a.ack(moving[0])                        // in flight when it left
	a.release(shards[0])

	r := open(t, b2, spec(name, topic, broker.StartEarliest), shards[:1])
	want := append([]broker.Delivery{moving[2]}, moving[4:]...)
	got := r.exactly(len(want))
	assert.Equal(t, ids(want), ids(got), "the new reader starts where the first released, with the same ids")
	for _, d := range got {
		assert.EqualValues(t, 1, d.Attempts, "%s: the delivery counted at the first reader", d.Message.Payload)
	}

	// Each reads its own shard from now on.
	publish(t, b1, messages(topic, 100, 20, keyMod(20)))
	var fromA, fromB []broker.Delivery
	deadline := time.Now().Add(waitFor)
	for len(fromA)+len(fromB) < 20 {
		require.True(t, time.Now().Before(deadline), "got %d of 20", len(fromA)+len(fromB))
		fromA = append(fromA, a.poll(20)...)
		fromB = append(fromB, r.poll(20)...)
	}
	for _, d := range fromA {
		assert.Equal(t, shards[1], d.Shard)
	}
	for _, d := range fromB {
		assert.Equal(t, shards[0], d.Shard)
	}
	assert.ElementsMatch(t, names(100, 120), payloads(append(fromA, fromB...)))
}

// A reader that released a shard and is assigned it again reads it from
// the position its new reader left, not from its own memory.
func testHandoffBack(t *testing.T, e *env) {
	topic := e.topic(1)
	b1, b2 := e.backend(Options{}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 10, nil))
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(10)
	a.ack(ds[:3]...)
	a.c.Assign(nil)
	a.release(shards...)

	b := open(t, b2, spec(name, topic, broker.StartEarliest), shards)
	bds := b.take(7)
	b.ack(bds[:3]...) // m3..m5
	b.c.Assign(nil)
	b.release(shards...)
	// Releasing again what it no longer holds saves nothing: a's memory
	// still has m3..m5 un-acked.
	a.release(shards...)

	a.c.Assign(shards)
	got := a.take(4)
	assert.Equal(t, names(6, 10), payloads(got))
	assert.Equal(t, ids(ds[6:]), ids(got))
}

// stale sets up a reader that lost its shard without knowing: a read 30
// messages and saved 10 acks; then b, on another node, took the shard over,
// read from there, acked up to m24 and saved. The saved position is then
// m25.
type stale struct {
	t      *testing.T
	e      *env
	a, b   *reader
	ds     []broker.Delivery // as a got them
	name   string
	topic  string
	shards []broker.ShardID
}

func newStale(t *testing.T, e *env, o Options) *stale {
	t.Helper()
	topic := e.topic(1)
	ba, bb := e.backend(o), e.backend(Options{})
	shards := shardsOf(t, ba, topic)
	publish(t, ba, messages(topic, 0, 30, nil))
	name := e.subscription()
	a := open(t, ba, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(30)
	a.ack(ds[:10]...)
	a.confirm(shards...)

	b := open(t, bb, spec(name, topic, broker.StartEarliest), shards)
	bds := b.take(20)
	require.Equal(t, ds[10].ID, bds[0].ID, "the new reader starts at the saved position")
	b.ack(bds[:15]...)
	b.confirm(shards...)
	return &stale{t: t, e: e, a: a, b: b, ds: ds, name: name, topic: topic, shards: shards}
}

// check reads the subscription on a third node: the saved position must
// still be b's.
func (s *stale) check() {
	s.t.Helper()
	s.b.c.Assign(nil)
	r := open(s.t, s.e.backend(Options{}), spec(s.name, s.topic, broker.StartEarliest), s.shards)
	assert.Equal(s.t, names(25, 30), payloads(r.exactly(5)), "the stale reader did not move the saved position backwards")
}

// Confirm on a stale reader reports the shard lost (forgotten, without an
// event) and saves nothing.
func testFencingConfirm(t *testing.T, e *env) {
	s := newStale(t, e, Options{})
	s.a.ack(s.ds[10:15]...)
	lost, err := s.a.c.Confirm(ctxFor(t, waitFor), s.shards)
	require.NoError(t, err)
	assert.Equal(t, s.shards, lost)
	assert.Empty(t, s.a.c.TakeEvents(), "Confirm reports lost shards without an event")
	s.a.ack(s.ds[15:]...) // ignored: forgotten
	assert.Empty(t, payloads(s.a.quiet()), "a lost shard is not fetched")
	s.a.close()
	s.check()
}

// A stale reader's save is fenced: it reports ShardLost (once, through
// Events and TakeEvents), forgets the shard, and the saved position does
// not move backwards.
func testFencingTimedSave(t *testing.T, e *env) {
	s := newStale(t, e, Options{SaveInterval: 100 * time.Millisecond})
	s.a.ack(s.ds[10:15]...)
	evs, err := s.a.event()
	require.NoError(t, err, "a fenced save reports the shard lost")
	require.Len(t, evs, 1)
	assert.Equal(t, s.shards[0], evs[0].Shard)
	assert.Equal(t, broker.ShardLost, evs[0].Kind)
	assert.Empty(t, s.a.c.TakeEvents(), "taken once")
	s.a.ack(s.ds[15:]...) // ignored: forgotten
	assert.Empty(t, payloads(s.a.quiet()), "a lost shard is not fetched")
	s.a.close()
	s.check()
}

// Release on a stale reader succeeds (a fenced shard counts as released)
// and moves nothing.
func testFencingRelease(t *testing.T, e *env) {
	s := newStale(t, e, Options{})
	s.a.c.Assign(nil)
	s.a.ack(s.ds[10:15]...)
	s.a.release(s.shards...)
	s.check()
}

// Close on a stale reader moves nothing.
func testFencingClose(t *testing.T, e *env) {
	s := newStale(t, e, Options{})
	s.a.ack(s.ds[10:20]...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.a.c.Close(ctx); err != nil {
		t.Logf("close of the stale reader: %v", err)
	}
	s.check()
}
