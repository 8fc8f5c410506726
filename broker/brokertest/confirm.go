package brokertest

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker"
)

// ackSaverSubtests check broker.AckSaver (ack confirmations); RunAckSaver
// runs them.
var ackSaverSubtests = []subtest{
	{name: "AckSaver/SavedMeansTheSavedPositionCoversTheAck", run: testAckSaverSaved},
	{name: "AckSaver/OnlyAcksThatTookGetReceipts", run: testAckSaverReceipts},
	{name: "AckSaver/ConcurrentCallsAreAllAnswered", run: testAckSaverConcurrent},
	{name: "AckSaver/LostShardVoidsTheAck", run: testAckSaverLost},
	{name: "AckSaver/NotStandingIsUnavailable", run: testAckSaverNotStanding},
	{name: "AckSaver/SaveFailureIsUnavailableAndSavesNothing", alone: true, run: testAckSaverSaveFault},
}

// RunAckSaver runs the conformance subtests of broker.AckSaver against h;
// it skips them when the backend does not confirm acks (broker.AckSaving).
// They are a suite of their own (not in Run) because AckSaver is optional.
func RunAckSaver(t *testing.T, h Harness) {
	if s, ok := h.Backend(t, Options{}).(broker.AckSaving); !ok || !s.SavesAcks() {
		t.Skip("the backend does not confirm acks (broker.AckSaving)")
	}
	run := "ack" + strconv.FormatInt(time.Now().UnixNano()%(36*36*36), 36) + fmt.Sprint(runs.Add(1))
	t.Run("group", func(t *testing.T) {
		for _, st := range ackSaverSubtests {
			if st.alone {
				continue
			}
			t.Run(st.name, func(t *testing.T) {
				t.Parallel()
				st.run(t, newEnv(t, h, run, st.name))
			})
		}
	})
	for _, st := range ackSaverSubtests {
		if st.alone {
			t.Run(st.name, func(t *testing.T) { st.run(t, newEnv(t, h, run, st.name)) })
		}
	}
}

// saver is the reader's consumer as an AckSaver.
func (r *reader) saver() broker.AckSaver {
	r.t.Helper()
	s, ok := r.c.(broker.AckSaver)
	require.True(r.t, ok, "the backend says it saves acks (AckSaving), but its consumer is no AckSaver")
	return s
}

// ackForSave acks ds and requires a receipt for each.
func (r *reader) ackForSave(ds ...broker.Delivery) []broker.AckReceipt {
	r.t.Helper()
	rs := r.saver().AckForSave(ids(ds)...)
	require.Len(r.t, rs, len(ds), "a receipt for every delivered, un-acked message")
	for i, rc := range rs {
		require.Equal(r.t, ds[i].ID, rc.ID)
		require.Equal(r.t, ds[i].Shard, rc.Shard)
	}
	return rs
}

// Once SaveAcks says saved, the saved position covers the ack: the
// backlog counts it out at that moment, and after a crash the next
// reader does not get it.
func testAckSaverSaved(t *testing.T, e *env) {
	topic := e.topic(1)
	in := e.inspector()
	b1, b2 := e.backend(Options{}), e.backend(Options{})
	shards := shardsOf(t, b1, topic)
	publish(t, b1, messages(topic, 0, 6, nil))
	name := e.subscription()
	a := open(t, b1, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(6)
	rs := a.ackForSave(ds[0], ds[1], ds[3])
	a.ack(ds[4]) // a plain ack, not confirmed
	for i, err := range a.saver().SaveAcks(ctxFor(t, waitFor), rs) {
		require.NoError(t, err, "receipt %d", i)
	}
	assert.LessOrEqual(t, backlog(t, in, name, topic)[shards[0]], int64(3), "saved when SaveAcks returned")

	e.h.Crash(t, a.b)
	r := open(t, b2, spec(name, topic, broker.StartEarliest), shards)
	got := payloads(r.drain())
	for _, d := range pick(t, ds, 0, 1, 3) {
		assert.NotContains(t, got, string(d.Message.Payload), "a saved ack is not delivered again")
	}
	assert.Contains(t, got, "m2")
	assert.Contains(t, got, "m5")
}

// Unknown ids, ids acked already and ids of a shard not held get no
// receipt; SaveAcks of no receipts returns at once.
func testAckSaverReceipts(t *testing.T, e *env) {
	topic := e.topic(1)
	b := e.backend(Options{})
	shards := shardsOf(t, b, topic)
	publish(t, b, messages(topic, 0, 3, nil))
	a := open(t, b, spec(e.subscription(), topic, broker.StartEarliest), shards)
	ds := a.take(3)
	a.ack(ds[0])
	s := a.saver()
	assert.Empty(t, s.AckForSave("not-an-id", ds[0].ID), "unknown and acked ids")
	rs := s.AckForSave(ds[1].ID, ds[1].ID)
	assert.Len(t, rs, 1, "a repeated id takes once")
	assert.Empty(t, s.SaveAcks(ctxFor(t, waitFor), nil))
}

// Many SaveAcks at once, each of its own acks: every one is answered
// saved, and the saved position covers them all.
func testAckSaverConcurrent(t *testing.T, e *env) {
	topic := e.topic(2)
	in := e.inspector()
	b := e.backend(Options{})
	shards := shardsOf(t, b, topic)
	publish(t, b, messages(topic, 0, 40, keyMod(40)))
	name := e.subscription()
	a := open(t, b, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(40)
	s := a.saver()
	var wg sync.WaitGroup
	var saved atomic.Int64
	for _, d := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rs := s.AckForSave(d.ID)
			if len(rs) != 1 {
				return
			}
			if errs := s.SaveAcks(context.Background(), rs); errs[0] == nil {
				saved.Add(1)
			} else {
				t.Errorf("%s: %v", d.Message.Payload, errs[0])
			}
		}()
	}
	waitGroup(t, &wg, "every SaveAcks to return")
	assert.EqualValues(t, 40, saved.Load())
	for _, sh := range shards {
		assert.Zero(t, backlog(t, in, name, topic)[sh], "%v: all saved", sh)
	}
}

// A reader whose shard another reader took (its save fenced) reports its
// acks void, and the saved position stays the new reader's.
func testAckSaverLost(t *testing.T, e *env) {
	s := newStale(t, e, Options{})
	rs := s.a.ackForSave(s.ds[20:25]...)
	for i, err := range s.a.saver().SaveAcks(ctxFor(t, waitFor), rs) {
		require.ErrorIs(t, err, broker.ErrAckVoid, "receipt %d", i)
	}
	s.a.close()
	s.check()
}

// While the node's standing is in doubt nothing is saved: SaveAcks says
// unavailable.
func testAckSaverNotStanding(t *testing.T, e *env) {
	topic := e.topic(1)
	b := e.backend(Options{})
	shards := shardsOf(t, b, topic)
	publish(t, b, messages(topic, 0, 2, nil))
	var standing atomic.Bool
	standing.Store(true)
	sp := spec(e.subscription(), topic, broker.StartEarliest)
	sp.Standing = standing.Load
	a := open(t, b, sp, shards)
	ds := a.take(2)
	standing.Store(false)
	rs := a.ackForSave(ds...)
	for i, err := range a.saver().SaveAcks(ctxFor(t, waitFor), rs) {
		require.ErrorIs(t, err, broker.ErrUnavailable, "receipt %d", i)
	}
}

// A save that fails makes SaveAcks say unavailable, and nothing is saved
// at that moment.
func testAckSaverSaveFault(t *testing.T, e *env) {
	sf := saveFaulter(t, e.h)
	topic := e.topic(1)
	in := e.inspector()
	b := e.backend(Options{})
	shards := shardsOf(t, b, topic)
	publish(t, b, messages(topic, 0, 4, nil))
	name := e.subscription()
	a := open(t, b, spec(name, topic, broker.StartEarliest), shards)
	ds := a.take(4)
	sf.SaveFault(t, true)
	rs := a.ackForSave(ds[:2]...)
	start := time.Now()
	for i, err := range a.saver().SaveAcks(ctxFor(t, waitFor), rs) {
		require.ErrorIs(t, err, broker.ErrUnavailable, "receipt %d", i)
	}
	t.Logf("unavailable after %s", time.Since(start))
	assert.EqualValues(t, 4, backlog(t, in, name, topic)[shards[0]], "nothing saved")
	sf.SaveFault(t, false)
	// A later call, after saves work again, is answered saved.
	more := a.ackForSave(ds[2])
	require.NoError(t, a.saver().SaveAcks(ctxFor(t, waitFor), more)[0])
	assert.LessOrEqual(t, backlog(t, in, name, topic)[shards[0]], int64(1))
}
