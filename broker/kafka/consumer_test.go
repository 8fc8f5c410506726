package kafka

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/streamgate/streamgate/broker"
)

// Issue 7.1: two nodes preparing one new subscription at the same moment,
// while messages are published, agree on one start per shard, and every
// message published after either Prepare returned lies at or after it.
func TestPrepare_NodesPreparingAtOnceAgreeOnOneStartBeforeEverythingPublishedAfter(t *testing.T) {
	h := newHarness(t, 4, "t")
	b1, b2 := h.backend(nil), h.backend(nil)
	shards := []broker.ShardID{shard("t", 0), shard("t", 1), shard("t", 2), shard("t", 3)}

	stop := make(chan struct{})
	type produced struct {
		started time.Time
		p       int32
		offset  int64
	}
	var mu sync.Mutex
	var recs []produced
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := int32(i % 4)
			started := time.Now()
			r := &kgo.Record{Topic: "t", Partition: p, Value: []byte("x")}
			if err := h.prod.ProduceSync(context.Background(), r).FirstErr(); err != nil {
				continue
			}
			mu.Lock()
			recs = append(recs, produced{started, p, r.Offset})
			mu.Unlock()
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	for round := range 20 {
		name := fmt.Sprintf("s%d", round)
		spec := broker.SubscriptionSpec{Name: name, Topics: []string{"t"}, Start: broker.StartLatest}
		var done [2]time.Time
		var errs [2]error
		var pw sync.WaitGroup
		for i, b := range []*Broker{b1, b2} {
			pw.Add(1)
			go func() {
				defer pw.Done()
				errs[i] = b.Prepare(context.Background(), spec, shards)
				done[i] = time.Now()
			}()
		}
		pw.Wait()
		require.NoError(t, errs[0])
		require.NoError(t, errs[1])
		first := done[0]
		if done[1].Before(first) {
			first = done[1]
		}
		got := h.saved(name, "t", 0, 1, 2, 3)
		require.Len(t, got, 4, "every shard has a saved start")
		mu.Lock()
		for _, r := range recs {
			if r.started.After(first) {
				assert.GreaterOrEqual(t, r.offset, got[r.p].at, "round %d: a record published after Prepare returned lies before the start", round)
			}
		}
		mu.Unlock()
		// Preparing again changes nothing.
		require.NoError(t, b2.Prepare(context.Background(), spec, shards))
		again := h.saved(name, "t", 0, 1, 2, 3)
		for p := range int32(4) {
			require.Equal(t, got[p].at, again[p].at)
		}
	}
}

// Issue 7.2: a Release racing a save in flight saves every ack applied
// before it was called.
func TestConsumer_ReleaseRacingASaveInFlightSavesEveryAckAppliedBeforeIt(t *testing.T) {
	h := newHarness(t, 1, "t")
	b := h.backend(nil)
	c := h.consume(b, "s", broker.StartEarliest, shard("t", 0))
	h.produce("t", 0, 100)
	ds := poll(t, c, 100, 10*time.Second)

	// Hold the next save at the broker.
	held, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hold := func(kmsg.Request) (kmsg.Response, error, bool) {
		once.Do(func() {
			close(held)
			h.kf.SleepControl(func() { <-resume })
		})
		return nil, nil, false
	}
	h.kf.ControlKey(int16(kmsg.TxnOffsetCommit), hold)
	h.kf.ControlKey(int16(kmsg.OffsetCommit), hold)

	c.Ack(ids(ds[:40])...)
	saveDone := make(chan error, 1)
	go func() {
		_, _, err := c.save(context.Background(), saveReq{})
		saveDone <- err
	}()
	<-held
	c.Ack(ids(ds[40:])...) // after the held save took its snapshot
	c.Assign(nil)
	released := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		released <- c.Release(ctx, []broker.ShardID{shard("t", 0)})
	}()
	close(resume)
	require.NoError(t, <-saveDone)
	require.NoError(t, <-released)
	assert.EqualValues(t, 100, h.saved("s", "t", 0)[0].at, "the release saved every ack made before it")
}

// Issue 7.7: one shard failing to save does not hold another's release.
func TestConsumer_ReleaseIsNotHeldByAnotherShardsFailingSaves(t *testing.T) {
	h := newHarness(t, 2, "t")
	b := h.backend(nil)
	c := h.consume(b, "s", broker.StartEarliest, shard("t", 0), shard("t", 1))
	h.produce("t", 0, 10)
	h.produce("t", 1, 10)
	ds := poll(t, c, 20, 10*time.Second)
	defer h.kf.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.TxnOffsetCommit, kmsg.OffsetCommit}, Topic: "t", Partitions: []int32{1}, Err: kerr.UnknownServerError, Count: -1}).Remove()
	c.Ack(ids(ds)...)
	c.Assign([]broker.ShardID{shard("t", 1)})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	require.NoError(t, c.Release(ctx, []broker.ShardID{shard("t", 0)}))
	assert.Less(t, time.Since(start), 2*time.Second, "released at once, not after the other shard's retries")
	assert.EqualValues(t, 10, h.saved("s", "t", 0)[0].at)
}

// Issue 7.3: a reader that lost its shard to a newer one (it was frozen,
// or cut off) cannot move the saved position backwards: its saves are
// fenced, and it reports the shard lost.
func TestConsumer_AStaleReaderCannotMoveASavedPositionBackwards(t *testing.T) {
	h := newHarness(t, 1, "t")
	old, fresh := h.backend(nil), h.backend(nil)
	h.produce("t", 0, 30)
	a := h.consume(old, "s", broker.StartEarliest, shard("t", 0))
	da := poll(t, a, 30, 10*time.Second)
	a.Ack(ids(da[:10])...)
	saveNow(t, a)
	require.EqualValues(t, 10, h.saved("s", "t", 0)[0].at)

	// Another node takes the shard over (a was declared dead) and moves on.
	b := h.consume(fresh, "s", broker.StartEarliest, shard("t", 0))
	db := poll(t, b, 20, 10*time.Second)
	require.Equal(t, da[10].ID, db[0].ID, "the new reader starts at the saved position")
	b.Ack(ids(db)...)
	saveNow(t, b)
	require.EqualValues(t, 30, h.saved("s", "t", 0)[0].at)

	// The stale reader comes back with its old in-memory position.
	a.Ack(ids(da[10:15])...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, lost, err := a.save(ctx, saveReq{})
	require.NoError(t, err)
	require.Len(t, lost, 1, "the stale save is fenced")
	assert.EqualValues(t, 30, h.saved("s", "t", 0)[0].at, "the saved position did not move backwards")
	select {
	case <-a.Events():
	case <-time.After(5 * time.Second):
		t.Fatal("no event for the lost shard")
	}
	evs := a.TakeEvents()
	require.Len(t, evs, 1)
	assert.Equal(t, broker.ShardLost, evs[0].Kind)
	a.Ack(ids(da[15:])...) // ignored: the shard is forgotten
	saveNow(t, a)
	assert.EqualValues(t, 30, h.saved("s", "t", 0)[0].at)
}

// Issue 7.5: delivery counts of un-acked messages travel with the saved
// position, to the next reader.
func TestConsumer_DeliveryCountsTravelWithTheSavedPosition(t *testing.T) {
	h := newHarness(t, 1, "t")
	h.produce("t", 0, 5)
	first := h.backend(nil)
	a := h.consume(first, "s", broker.StartEarliest, shard("t", 0))
	da := poll(t, a, 5, 10*time.Second)
	for _, d := range da {
		assert.Zero(t, d.Attempts, "never delivered before")
	}
	a.Delivered(ids(da)...)
	a.Delivered(da[1].ID, da[3].ID) // redelivered after a nack
	a.Ack(da[0].ID, da[2].ID)
	saveNow(t, a)

	b := h.consume(h.backend(nil), "s", broker.StartEarliest, shard("t", 0))
	db := poll(t, b, 3, 10*time.Second)
	got := map[string]uint32{}
	for _, d := range db {
		got[d.ID] = d.Attempts
	}
	assert.Equal(t, map[string]uint32{da[1].ID: 2, da[3].ID: 2, da[4].ID: 1}, got)
}

// Issue 7.6: a topic deleted and created again under a consumer is read
// from the new log's start, with a reset event, and nothing of the new log
// is skipped.
func TestConsumer_TopicDeletedAndCreatedAgainIsReadFromTheNewLogsStart(t *testing.T) {
	h := newHarness(t, 1, "t")
	b := h.backend(func(c *Config) { c.TopicCheckInterval = 100 * time.Millisecond })
	h.produce("t", 0, 20)
	c := h.consume(b, "s", broker.StartEarliest, shard("t", 0))
	ds := poll(t, c, 20, 10*time.Second)
	c.Ack(ids(ds)...)
	saveNow(t, c)

	ctx := context.Background()
	_, err := h.admin.DeleteTopics(ctx, "t")
	require.NoError(t, err)
	waitFor(t, 10*time.Second, "an unavailable poll", func() bool {
		_, err := c.Poll(ctx, 10)
		return err != nil
	})
	_, err = h.admin.CreateTopic(ctx, 1, 1, nil, "t")
	require.NoError(t, err)
	// A new producer: the old one knows the old topic id.
	prod, err := kgo.NewClient(kgo.SeedBrokers(h.kf.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	defer prod.Close()
	for i := range 5 {
		require.NoError(t, prod.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: fmt.Appendf(nil, "new-%d", i)}).FirstErr())
	}
	fresh := poll(t, c, 5, 15*time.Second)
	for i, d := range fresh {
		assert.Equal(t, fmt.Sprintf("new-%d", i), string(d.Message.Payload))
	}
	evs := c.TakeEvents()
	require.Len(t, evs, 1)
	assert.Equal(t, broker.ShardReset, evs[0].Kind)
	c.Ack(ids(fresh)...)
	saveNow(t, c)
	assert.EqualValues(t, 5, h.saved("s", "t", 0)[0].at, "the saved position belongs to the new log")
}

// Issue 7.6: a log cut back under the reader (franz-go reports data loss,
// reset below what it consumed) is read again from the cut: the records
// there are new ones, and none is skipped.
func TestConsumer_ALogTruncatedBackwardsIsReadAgainFromTheCut(t *testing.T) {
	h := newHarness(t, 1, "t")
	b := h.backend(nil)
	h.produce("t", 0, 10)
	c := h.consume(b, "s", broker.StartEarliest, shard("t", 0))
	ds := poll(t, c, 10, 10*time.Second)
	c.Ack(ids(ds[:6])...)
	saveNow(t, c)

	// The broker says the position is out of range; franz-go cannot tell
	// where the log diverged and resets to its start (ConsumeResetOffset).
	h.kf.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: "t", Partitions: []int32{0}, Err: kerr.OffsetOutOfRange})
	h.produce("t", 0, 2)
	again := poll(t, c, 12, 15*time.Second)
	var offsets []int64
	for _, d := range again {
		p, err := decodeID(d.ID)
		require.NoError(t, err)
		offsets = append(offsets, p.offset)
	}
	assert.Equal(t, []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, offsets, "every record from the cut on, once")
	evs := c.TakeEvents()
	require.Len(t, evs, 1)
	assert.Equal(t, broker.ShardReset, evs[0].Kind)
}
