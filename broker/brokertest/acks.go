package brokertest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker"
)

// Close saves the acked position: the next reader, on another node, gets
// what was not acked.
func testAcksInOrder(t *testing.T, e *env) {
	topic := e.topic(1)
	b1, b2 := e.backend(Options{}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 10, nil))
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(10)
	a.ack(ds[:4]...)
	a.close()
	r := open(t, b2, spec(name, topic, broker.StartEarliest), shards)
	got := r.take(6)
	assert.Equal(t, names(4, 10), payloads(got))
	assert.Equal(t, ids(ds[4:]), ids(got), "ids are stable across redeliveries")
}

// Acks out of order are kept: the next reader gets only the un-acked
// messages, in order per shard.
func testAcksOutOfOrder(t *testing.T, e *env) {
	topic := e.topic(2)
	b1, b2 := e.backend(Options{}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 30, keyMod(7)))
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(30)
	var want []string
	for _, sds := range byShard(ds) {
		for i, d := range sds {
			// Acked: every other message and a run; never the first.
			if i%2 == 1 || (i >= 6 && i < 10) {
				a.ack(d)
				continue
			}
			want = append(want, string(d.Message.Payload))
		}
	}
	a.close()
	r := open(t, b2, spec(name, topic, broker.StartEarliest), shards)
	got := r.take(len(want))
	assert.ElementsMatch(t, want, payloads(got))
	before := map[string]int{}
	for _, sds := range byShard(ds) {
		for i, d := range sds {
			before[string(d.Message.Payload)] = i
		}
	}
	for s, sds := range byShard(got) {
		for i := 1; i < len(sds); i++ {
			assert.Greater(t, before[string(sds[i].Message.Payload)], before[string(sds[i-1].Message.Payload)], "shard %v in order", s)
		}
	}
}

// Unknown or repeated ids are ignored by Ack and Delivered.
func testAcksUnknownIgnored(t *testing.T, e *env) {
	topic, elsewhere := e.topic(1), e.topic(1)
	b1, b2 := e.backend(Options{}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 5, nil))
	foreign := publish(t, b1, messages(elsewhere, 0, 1, nil))[0]
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(5)
	a.c.Ack("", "not an id", "AAAA", foreign)
	a.c.Delivered("", "not an id", foreign)
	a.c.Ack()
	a.c.Delivered()
	a.ack(ds[0])
	a.ack(ds[0], ds[0])
	a.ack(ds[1])
	a.close()
	r := open(t, b2, spec(name, topic, broker.StartEarliest), shards)
	got := r.take(3)
	assert.Equal(t, names(2, 5), payloads(got))
	for _, d := range got {
		assert.Zero(t, d.Attempts, "%s was never reported delivered", d.Message.Payload)
	}
}

// Delivery counts reported with Delivered travel with the saved position
// to the next reader.
func testAttemptsTravel(t *testing.T, e *env) {
	topic := e.topic(1)
	b1, b2 := e.backend(Options{}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 5, nil))
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(5)
	for _, d := range ds {
		require.Zero(t, d.Attempts, "never delivered before")
	}
	a.delivered(ds...)
	a.delivered(ds[1], ds[3]) // delivered again after a nack
	a.ack(ds[0], ds[2])
	a.close()
	r := open(t, b2, spec(name, topic, broker.StartEarliest), shards)
	got := map[string]uint32{}
	for _, d := range r.take(3) {
		got[string(d.Message.Payload)] = d.Attempts
	}
	assert.Equal(t, map[string]uint32{"m1": 2, "m3": 2, "m4": 1}, got)
}

// Deliveries reported and not acked are saved by the timed saves too, so
// that a crash after a save keeps them: a poison message that is never
// acked must not count from zero after a restart.
func testAttemptsTimedSave(t *testing.T, e *env) {
	topic := e.topic(2)
	in := e.inspector()
	b1, b2 := e.backend(Options{SaveInterval: 100 * time.Millisecond}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 20, keyMod(20)))
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(20)
	parts := byShard(ds)
	require.Len(t, parts, 2, "20 keys spread over both shards")
	var poison, other []broker.Delivery
	for _, sds := range parts {
		if poison == nil {
			poison = sds[:1] // shard A: its first message, delivered and never acked
		} else {
			other = sds // shard B: acked, to see a timed save happen
		}
	}
	require.GreaterOrEqual(t, len(other), 2)
	a.delivered(poison...)
	a.delivered(poison...)
	// Two timed saves of the other shard after the deliveries: the timed
	// saves ran, so they would have saved the counts too.
	for i, d := range other[:2] {
		a.ack(d)
		want := int64(len(other) - i - 1)
		eventually(t, "a timed save of the other shard", func() bool {
			return backlog(t, in, name, topic)[d.Shard] == want
		})
	}
	e.h.Crash(t, a.b)
	r := open(t, b2, spec(name, topic, broker.StartEarliest), shards)
	found := false
	for _, d := range r.take(20 - 2) {
		if d.ID == poison[0].ID {
			found = true
			assert.EqualValues(t, 2, d.Attempts, "the delivery count of %s was saved by a timed save", d.Message.Payload)
		}
	}
	assert.True(t, found, "the un-acked message came again")
}

// Only the shards assigned are fetched.
func testAssignOnlyAssigned(t *testing.T, e *env) {
	topic := e.topic(2)
	b := e.backend(Options{})
	shards := shardsOf(t, b, topic)
	publish(t, b, messages(topic, 0, 40, keyMod(40)))
	r := open(t, b, spec(e.subscription(), topic, broker.StartEarliest), shards[:1])
	first := r.drain()
	for _, d := range first {
		require.Equal(t, shards[0], d.Shard, "only the assigned shard is read")
	}
	r.c.Assign(shards)
	rest := r.take(40 - len(first))
	for _, d := range rest {
		require.Equal(t, shards[1], d.Shard, "the first shard's messages came once")
	}
	assert.ElementsMatch(t, names(0, 40), payloads(append(first, rest...)))
}

// A shard that leaves (Assign without it) is no longer fetched, still takes
// acks for what is in flight, and Release saves them.
func testAssignLeavingTakesAcks(t *testing.T, e *env) {
	topic := e.topic(1)
	b1, b2 := e.backend(Options{}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 10, nil))
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(10)
	a.delivered(ds...)
	a.c.Assign(nil)
	publish(t, b1, messages(topic, 10, 5, nil))
	require.Empty(t, payloads(a.quiet()), "a shard that left is not fetched")
	a.ack(ds[:7]...) // in flight when it left
	a.release(shards...)

	r := open(t, b2, spec(name, topic, broker.StartEarliest), shards)
	got := r.take(8)
	assert.Equal(t, append(names(7, 10), names(10, 15)...), payloads(got))
	for _, d := range got[:3] {
		assert.EqualValues(t, 1, d.Attempts, "%s: Release saved its delivery", d.Message.Payload)
	}
}

// A shard assigned again before its Release resumes after the last acked
// message: the un-acked ones come again, the acked ones do not.
func testAssignAgainBeforeRelease(t *testing.T, e *env) {
	topic := e.topic(1)
	b := e.backend(Options{})
	shards := shardsOf(t, b, topic)
	publish(t, b, messages(topic, 0, 10, nil))
	r := open(t, b, spec(e.subscription(), topic, broker.StartEarliest), shards)
	ds := r.take(10)
	r.ack(pick(t, ds, 0, 1, 2, 3, 6)...)
	r.c.Assign(nil)
	r.c.Assign(shards)
	got := r.take(5)
	assert.Equal(t, []string{"m4", "m5", "m7", "m8", "m9"}, payloads(got))
	assert.Equal(t, ids(pick(t, ds, 4, 5, 7, 8, 9)), ids(got), "the same ids")
}

// Abandon forgets a shard without saving it: its acks since the last save
// are not saved, not even by Close, and it is no longer fetched.
func testAbandon(t *testing.T, e *env) {
	topic := e.topic(1)
	b1, b2 := e.backend(Options{}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 10, nil))
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(10)
	a.ack(ds[:3]...)
	a.confirm(shards...)
	a.ack(ds[3:6]...)
	a.c.Abandon(shards)
	a.ack(ds[6:]...) // ignored
	publish(t, b1, messages(topic, 10, 2, nil))
	require.Empty(t, payloads(a.quiet()), "an abandoned shard is not fetched")
	lost, err := a.c.Confirm(ctxFor(t, waitFor), shards)
	require.NoError(t, err)
	assert.Empty(t, lost, "an abandoned shard is not held")
	a.close()
	r := open(t, b2, spec(name, topic, broker.StartEarliest), shards)
	assert.Equal(t, names(3, 12), payloads(r.take(9)))
}
