package kafka

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/broker/brokertest"
)

// TestConfirmConformance runs the ack confirmation conformance subtests
// (broker.AckSaver) against one kfake broker.
func TestConfirmConformance(t *testing.T) {
	kf, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	t.Cleanup(kf.Close)
	brokertest.RunAckSaver(t, &conformance{kf: kf})
}

// TestConfirm_ConcurrentSaveAcksCoalesceIntoFewSaves: while one save of a
// partition is in flight (held at the broker), a hundred SaveAcks calls
// wait; they are all answered saved by the one next save, not a hundred.
func TestConfirm_ConcurrentSaveAcksCoalesceIntoFewSaves(t *testing.T) {
	h := newHarness(t, 1, "t")
	c := h.consume(h.backend(nil), "s", broker.StartEarliest, shard("t", 0))
	h.produce("t", 0, 100)
	ds := poll(t, c, 100, 10*time.Second)

	commits := h.kf.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.TxnOffsetCommit}, Observe: true, Count: -1})
	defer commits.Remove()
	held, resume := make(chan struct{}), make(chan struct{})
	var once, resumeOnce sync.Once
	release := func() { resumeOnce.Do(func() { close(resume) }) }
	defer release()
	h.kf.ControlKey(int16(kmsg.TxnOffsetCommit), func(kmsg.Request) (kmsg.Response, error, bool) {
		once.Do(func() {
			close(held)
			h.kf.SleepControl(func() { <-resume })
		})
		return nil, nil, false
	})

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	first := c.AckForSave(ds[0].ID)
	require.Len(t, first, 1)
	errs := make(chan error, len(ds))
	go func() { errs <- c.SaveAcks(ctx, first)[0] }()
	select {
	case <-held:
	case <-ctx.Done():
		t.Fatal("the first save never reached the broker")
	}
	var wg sync.WaitGroup
	for _, d := range ds[1:] {
		rs := c.AckForSave(d.ID) // taken while the first save is in flight
		require.Len(t, rs, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.SaveAcks(ctx, rs)[0]
		}()
	}
	release()
	wg.Wait()
	for range ds {
		require.NoError(t, <-errs)
	}
	assert.EqualValues(t, 100, h.saved("s", "t", 0)[0].at, "every ack saved")
	assert.LessOrEqual(t, commits.Hits(), 3, "the held save and about one more, not one per call")
	t.Logf("%d saves for 100 confirmed acks", commits.Hits())
}

// TestConfirm_AbandonAnswersAWaitingSaveAcksAtOnce: a SaveAcks waiting
// for a save that will not come (the node abandons the shard first: a
// seek's hold, a claim another node took) is answered void at once, not
// unavailable when its context ends.
func TestConfirm_AbandonAnswersAWaitingSaveAcksAtOnce(t *testing.T) {
	h := newHarness(t, 1, "t")
	c := h.consume(h.backend(nil), "s", broker.StartEarliest, shard("t", 0))
	h.produce("t", 0, 2)
	ds := poll(t, c, 2, 10*time.Second)
	rs := c.AckForSave(ds[0].ID)
	require.Len(t, rs, 1)
	// Stands for a save of the partition in flight that began before the
	// ack: manage skips the partition, and no save ends to wake the call.
	c.mu.Lock()
	c.parts[tp{"t", 0}].saving = true
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := make(chan error, 1)
	go func() { errs <- c.SaveAcks(ctx, rs)[0] }()
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.savedSig != nil
	}, 10*time.Second, time.Millisecond, "SaveAcks to wait")
	c.Abandon([]broker.ShardID{shard("t", 0)})
	select {
	case err := <-errs:
		require.ErrorIs(t, err, broker.ErrAckVoid)
	case <-time.After(5 * time.Second):
		t.Fatal("SaveAcks still waits after the shard was abandoned")
	}
}
