package brokertest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker"
)

func fetchFaulter(t *testing.T, h Harness) FetchFaulter {
	f, ok := h.(FetchFaulter)
	if !ok {
		t.Skip("the harness cannot fail fetches (FetchFaulter)")
	}
	t.Cleanup(func() { f.FetchFault(t, false) })
	return f
}

func saveFaulter(t *testing.T, h Harness) SaveFaulter {
	f, ok := h.(SaveFaulter)
	if !ok {
		t.Skip("the harness cannot fail saves (SaveFaulter)")
	}
	t.Cleanup(func() { f.SaveFault(t, false) })
	return f
}

// While fetching fails, Poll reports ErrUnavailable; once it works again,
// the consumer fetches on by itself: every message arrives, once.
func testFaultFetch(t *testing.T, e *env) {
	ff := fetchFaulter(t, e.h)
	topic := e.topic(1)
	b := e.backend(Options{})
	shards := shardsOf(t, b, topic)
	publish(t, b, messages(topic, 0, 10, nil))
	ff.FetchFault(t, true)
	r := open(t, b, spec(e.subscription(), topic, broker.StartEarliest), shards)

	var got []broker.Delivery
	deadline := time.Now().Add(waitFor)
	for {
		require.True(t, time.Now().Before(deadline), "Poll reported no error while fetches failed")
		ds, err := r.c.Poll(context.Background(), 100)
		got = append(got, ds...)
		if err != nil {
			require.ErrorIs(t, err, broker.ErrUnavailable)
			t.Logf("while fetches fail: %v", err)
			break
		}
	}
	ff.FetchFault(t, false)
	deadline = time.Now().Add(waitFor)
	for {
		require.True(t, time.Now().Before(deadline), "not recovered: %d of 10 delivered", len(got))
		ds, err := r.c.Poll(context.Background(), 100)
		if err != nil {
			require.ErrorIs(t, err, broker.ErrUnavailable)
		}
		got = append(got, ds...)
		if err == nil && len(got) >= 10 {
			break
		}
	}
	assert.Equal(t, names(0, 10), payloads(got), "every message once, in order")
	publish(t, b, messages(topic, 10, 2, nil))
	assert.Equal(t, names(10, 12), payloads(r.take(2)))
}

// Release keeps trying while saves fail, and reports failure when its ctx
// ends; once saves work, it succeeds and the next reader starts there.
func testFaultSaveRelease(t *testing.T, e *env) {
	sf := saveFaulter(t, e.h)
	topic := e.topic(1)
	b1, b2 := e.backend(Options{}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 10, nil))
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(10)
	a.ack(ds[:5]...)
	a.c.Assign(nil)

	sf.SaveFault(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	require.Error(t, a.c.Release(ctx, shards), "Release cannot succeed while saves fail")
	sf.SaveFault(t, false)
	a.release(shards...)

	r := open(t, b2, spec(name, topic, broker.StartEarliest), shards)
	assert.Equal(t, names(5, 10), payloads(r.take(5)))
}

// Save failures surface as ErrUnavailable from Release, Confirm and Close.
func testFaultSaveSentinel(t *testing.T, e *env) {
	sf := saveFaulter(t, e.h)
	topic := e.topic(2)
	b := e.backend(Options{})
	shards := shardsOf(t, b, topic)
	publish(t, b, messages(topic, 0, 10, keyMod(10)))
	a := open(t, b, spec(e.subscription(), topic, broker.StartEarliest), shards)
	a.ack(a.take(10)...)
	a.c.Assign(shards[1:])

	sf.SaveFault(t, true)
	short := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	err := a.c.Release(short(), shards[:1])
	require.Error(t, err)
	assert.ErrorIs(t, err, broker.ErrUnavailable, "Release: %v", err)
	_, err = a.c.Confirm(short(), shards[1:])
	require.Error(t, err)
	assert.ErrorIs(t, err, broker.ErrUnavailable, "Confirm: %v", err)
	err = a.c.Close(short())
	require.Error(t, err)
	assert.ErrorIs(t, err, broker.ErrUnavailable, "Close: %v", err)
}

// Timed saves that fail are tried again: once saves work, the acks are
// saved without anything else happening.
func testFaultSaveTimed(t *testing.T, e *env) {
	sf := saveFaulter(t, e.h)
	topic := e.topic(1)
	in := e.inspector()
	b1, b2 := e.backend(Options{SaveInterval: 100 * time.Millisecond}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 6, nil))
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(6)

	sf.SaveFault(t, true)
	a.ack(ds[:3]...)
	require.Empty(t, payloads(a.quiet())) // timed saves run, and fail
	assert.EqualValues(t, 6, backlog(t, in, name, topic)[shards[0]], "nothing saved while saves fail")
	sf.SaveFault(t, false)
	eventually(t, "the acks saved after saves work again", func() bool { return backlog(t, in, name, topic)[shards[0]] == 3 })

	e.h.Crash(t, a.b)
	r := open(t, b2, spec(name, topic, broker.StartEarliest), shards)
	assert.Equal(t, names(3, 6), payloads(r.take(3)))
}
