package brokertest

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker"
)

// A save follows every SaveEvery acks; fewer acks wait, and a crash loses
// them (they come again). Unsaved counts the acks not saved yet.
func testSavesByCount(t *testing.T, e *env) {
	topic := e.topic(1)
	in := e.inspector()
	b1, b2 := e.backend(Options{SaveEvery: 5}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 10, nil))
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(10)
	assert.EqualValues(t, 10, backlog(t, in, name, topic)[shards[0]], "nothing saved yet")
	a.ack(ds[:5]...)
	eventually(t, "a save after 5 acks", func() bool { return backlog(t, in, name, topic)[shards[0]] == 5 })
	u, counts := a.b.(broker.Inspector)
	if counts {
		// The save is done with on the consumer's side too: the next acks
		// count towards the next save.
		eventually(t, "no acks left unsaved", func() bool { return len(u.Unsaved(name)) == 0 })
	}
	a.ack(ds[5:9]...)
	if counts {
		assert.Equal(t, map[broker.ShardID]int64{shards[0]: 4}, u.Unsaved(name), "4 acks not saved yet")
	}
	e.h.Crash(t, a.b)
	r := open(t, b2, spec(name, topic, broker.StartEarliest), shards)
	assert.Equal(t, names(5, 10), payloads(r.take(5)), "the 4 acks after the last save come again")
}

// Acked positions are saved at least every SaveInterval, however few acks.
func testSavesByInterval(t *testing.T, e *env) {
	topic := e.topic(2)
	in := e.inspector()
	b := e.backend(Options{SaveInterval: 200 * time.Millisecond})
	shards := shardsOf(t, b, topic)
	publish(t, b, messages(topic, 0, 10, keyMod(10)))
	name := e.subscription()
	a := open(t, b, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(10)
	want := map[broker.ShardID]int64{}
	for s, sds := range byShard(ds) {
		a.ack(sds[0])
		want[s] = int64(len(sds) - 1)
	}
	eventually(t, "a timed save of one ack per shard", func() bool {
		got := backlog(t, in, name, topic)
		for s, n := range want {
			if got[s] != n {
				return false
			}
		}
		return true
	})
	if u, ok := b.(broker.Inspector); ok {
		eventually(t, "no acks left unsaved", func() bool { return len(u.Unsaved(name)) == 0 })
	}
}

// Confirm saves the position of the shards it is given before it returns.
func testSavesConfirm(t *testing.T, e *env) {
	topic := e.topic(1)
	b1, b2 := e.backend(Options{}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 6, nil))
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(6)
	a.ack(ds[0], ds[1], ds[3])
	a.confirm(shards...)
	if in, ok := b2.(broker.Inspector); ok {
		assert.EqualValues(t, 3, backlog(t, in, name, topic)[shards[0]], "saved when Confirm returned")
		if u, ok := a.b.(broker.Inspector); ok {
			assert.Empty(t, u.Unsaved(name))
		}
	}
	e.h.Crash(t, a.b)
	r := open(t, b2, spec(name, topic, broker.StartEarliest), shards)
	assert.Equal(t, []string{"m2", "m4", "m5"}, payloads(r.take(3)))
}

// While Standing reports false, the consumer saves nothing: not by count,
// time, nor in Close. Once it reports true again, saves resume.
func testSavesNotStanding(t *testing.T, e *env) {
	topic := e.topic(1)
	b1, b2 := e.backend(Options{SaveEvery: 1, SaveInterval: 100 * time.Millisecond}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 6, nil))
	name := e.subscription()
	var standing atomic.Bool
	sp := spec(name, topic, broker.StartEarliest)
	sp.Standing = standing.Load
	a := open(t, b1, sp, shards)
	ds := a.take(6)
	a.ack(ds[:3]...)
	if in, ok := b2.(broker.Inspector); ok {
		// The saves ask Standing; wait for one of them to be refused.
		require.Empty(t, payloads(a.quiet()))
		assert.EqualValues(t, 6, backlog(t, in, name, topic)[shards[0]], "nothing saved while not standing")
	}
	ctx := ctxFor(t, 3*time.Second)
	_ = a.c.Close(ctx) // may fail: it cannot save
	r := open(t, b2, spec(name, topic, broker.StartEarliest), shards)
	got := r.take(6)
	assert.Equal(t, names(0, 6), payloads(got), "nothing was saved")

	// Standing again: saves resume.
	sp2 := spec(e.subscription(), topic, broker.StartEarliest)
	var back atomic.Bool
	sp2.Standing = back.Load
	c := open(t, b1, sp2, shards)
	cds := c.take(6)
	c.ack(cds[:2]...)
	back.Store(true)
	c.ack(cds[2])
	c.close()
	r2 := open(t, b2, spec(sp2.Name, topic, broker.StartEarliest), shards)
	assert.Equal(t, names(3, 6), payloads(r2.take(3)), "acks made before standing returned are saved too")
}

// After a crash, everything after the last save comes again: acks and
// deliveries since are lost, those saved are kept.
func testResumeAfterCrash(t *testing.T, e *env) {
	topic := e.topic(1)
	b1, b2 := e.backend(Options{}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 10, nil))
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(10)
	a.delivered(ds...)
	a.ack(ds[:3]...)
	a.confirm(shards...)
	a.ack(ds[3:7]...)
	a.delivered(ds[8])
	e.h.Crash(t, a.b)

	r := open(t, b2, spec(name, topic, broker.StartEarliest), shards)
	got := r.exactly(7)
	assert.Equal(t, names(3, 10), payloads(got))
	for _, d := range got {
		assert.EqualValues(t, 1, d.Attempts, "%s: the delivery saved before the crash", d.Message.Payload)
	}

	// A crash before any save: the next reader starts where Prepare put
	// the subscription.
	other := e.subscription()
	c := open(t, b2, spec(other, topic, broker.StartEarliest), shards)
	c.ack(c.take(10)...)
	e.h.Crash(t, b2)
	r2 := open(t, e.backend(Options{}), spec(other, topic, broker.StartEarliest), shards)
	assert.Equal(t, names(0, 10), payloads(r2.take(10)))
}
