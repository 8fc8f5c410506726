package brokertest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker"
)

// seekSubtests check broker.Seeker; RunSeek runs them.
var seekSubtests = []subtest{
	{name: "Seek/EarliestRereadsEverythingHeldAndDropsSavedAcks", run: testSeekEarliest},
	{name: "Seek/LatestSkipsEverythingHeld", run: testSeekLatest},
	{name: "Seek/TimeStartsAtTheFirstMessageAtOrAfterIt", run: testSeekTime},
	{name: "Seek/TimeAfterTheLastMessageStartsAtTheEnd", run: testSeekTimeAfterEnd},
	{name: "Seek/AShardWithoutAPositionGetsOne", run: testSeekUnprepared},
	{name: "Seek/FencesTheReaderThatHoldsTheShard", run: testSeekFencesReader},
	{name: "Seek/StaleConfirmReportsTheShardLost", run: testSeekFencesConfirm},
}

// RunSeek runs the conformance subtests of broker.Seeker against h; it
// skips them all when the harness's backend implements no Seeker. They
// are a suite of their own (not in Run) because Seeker is optional.
func RunSeek(t *testing.T, h Harness) {
	if _, ok := h.Backend(t, Options{}).(broker.Seeker); !ok {
		t.Skip("the backend implements no broker.Seeker")
	}
	for _, st := range seekSubtests {
		t.Run(st.name, func(t *testing.T) {
			t.Parallel()
			st.run(t, newEnv(t, h, "seek", st.name))
		})
	}
}

func seek(t *testing.T, b Backend, name string, shards []broker.ShardID, to broker.SeekTo) {
	t.Helper()
	require.NoError(t, b.(broker.Seeker).Seek(ctxFor(t, waitFor), name, shards, to))
}

// After a seek to the earliest, everything held comes again, acked or
// not, as new: the acks above the position and the delivery counts saved
// before are gone.
func testSeekEarliest(t *testing.T, e *env) {
	topic := e.topic(2)
	b1, b2 := e.backend(Options{}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 10, keyMod(10)))
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(10)
	a.delivered(ds...)
	a.ack(pick(t, ds, 0, 1, 2, 4, 6, 7, 9)...) // some acks above an un-acked one per shard
	a.close()

	seek(t, b2, name, shards, broker.SeekTo{Kind: broker.SeekEarliest})
	r := open(t, b2, spec(name, topic, broker.StartLatest), shards)
	got := r.exactly(10)
	assert.ElementsMatch(t, names(0, 10), payloads(got))
	for s, sds := range byShard(got) {
		assert.Equal(t, payloads(byShard(ds)[s]), payloads(sds), "shard %v in order from its first message", s)
	}
	for _, d := range got {
		assert.Zero(t, d.Attempts, "%s: delivery counts are not kept across a seek", d.Message.Payload)
	}
}

// After a seek to the latest, only messages published after it come.
func testSeekLatest(t *testing.T, e *env) {
	topic := e.topic(2)
	b1, b2 := e.backend(Options{}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 10, keyMod(10)))
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	a.take(10)
	a.close() // nothing acked

	seek(t, b2, name, shards, broker.SeekTo{Kind: broker.SeekLatest})
	r := open(t, b2, spec(name, topic, broker.StartEarliest), shards)
	assert.Empty(t, payloads(r.quiet()), "nothing published before the seek")
	publish(t, b1, messages(topic, 10, 4, keyMod(10)))
	assert.ElementsMatch(t, names(10, 14), payloads(r.exactly(4)))
}

// A seek by time starts each shard at its first message published at or
// after the time: the time of a message itself includes it.
func testSeekTime(t *testing.T, e *env) {
	topic := e.topic(1)
	b1, b2 := e.backend(Options{}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 5, nil))
	// The next messages are stamped at a later millisecond than these.
	last := time.Now().UnixMilli()
	eventually(t, "the clock to pass a millisecond", func() bool { return time.Now().UnixMilli() > last+1 })
	publish(t, b1, messages(topic, 5, 5, nil))
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(10)
	a.ack(ds...)
	a.close()

	at := ds[5].PublishTime
	want := 5
	for want > 0 && !ds[want-1].PublishTime.Before(at) {
		want-- // stamped in the same millisecond: at or after the time too
	}
	seek(t, b2, name, shards, broker.SeekTo{Kind: broker.SeekTime, Time: at})
	r := open(t, b2, spec(name, topic, broker.StartLatest), shards)
	assert.Equal(t, names(want, 10), payloads(r.exactly(10-want)))
}

// A seek to a time after every message starts at the end: only new
// messages come.
func testSeekTimeAfterEnd(t *testing.T, e *env) {
	topic := e.topic(1)
	b1, b2 := e.backend(Options{}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 5, nil))
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	a.take(5)
	a.close()

	seek(t, b2, name, shards, broker.SeekTo{Kind: broker.SeekTime, Time: time.Now().Add(time.Hour)})
	r := open(t, b2, spec(name, topic, broker.StartEarliest), shards)
	assert.Empty(t, payloads(r.quiet()), "no message is at or after the time")
	publish(t, b1, messages(topic, 5, 2, nil))
	assert.Equal(t, names(5, 7), payloads(r.exactly(2)))
}

// A seek of a shard that has no saved position gives it one: Prepare then
// keeps it rather than the spec's start.
func testSeekUnprepared(t *testing.T, e *env) {
	topic := e.topic(1)
	b := e.backend(Options{})
	shards := shardsOf(t, b, topic)
	publish(t, b, messages(topic, 0, 5, nil))
	name := e.subscription()
	seek(t, b, name, shards, broker.SeekTo{Kind: broker.SeekLatest})
	r := open(t, b, spec(name, topic, broker.StartEarliest), shards)
	assert.Empty(t, payloads(r.quiet()), "the seek's position, not the spec's start")
	publish(t, b, messages(topic, 5, 1, nil))
	assert.Equal(t, names(5, 6), payloads(r.exactly(1)))
}

// A reader that still holds the shard when it is sought is fenced: its
// next save reports ShardLost and moves nothing, so the seek's position
// stands.
func testSeekFencesReader(t *testing.T, e *env) {
	topic := e.topic(1)
	b1, b2 := e.backend(Options{SaveInterval: 100 * time.Millisecond}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 10, nil))
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(10)

	seek(t, b2, name, shards, broker.SeekTo{Kind: broker.SeekEarliest})
	a.ack(ds...)
	evs, err := a.event()
	require.NoError(t, err, "the stale reader's save reports the shard lost")
	require.Len(t, evs, 1)
	assert.Equal(t, broker.ShardLost, evs[0].Kind)
	assert.Equal(t, shards[0], evs[0].Shard)
	a.close()

	r := open(t, e.backend(Options{}), spec(name, topic, broker.StartLatest), shards)
	assert.Equal(t, names(0, 10), payloads(r.exactly(10)), "the stale reader's acks did not move the position")
}

// Confirm on a reader that held the shard during a seek reports it lost.
func testSeekFencesConfirm(t *testing.T, e *env) {
	topic := e.topic(1)
	b1, b2 := e.backend(Options{}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 6, nil))
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(6)
	a.ack(ds[:3]...)

	seek(t, b2, name, shards, broker.SeekTo{Kind: broker.SeekLatest})
	a.ack(ds[3:]...)
	lost, err := a.c.Confirm(ctxFor(t, waitFor), shards)
	require.NoError(t, err)
	assert.Equal(t, shards, lost)
	a.close()

	r := open(t, b2, spec(name, topic, broker.StartEarliest), shards)
	assert.Empty(t, payloads(r.quiet()), "the seek to the latest stands")
}
