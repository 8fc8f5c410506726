package client_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/broker/kafka"
	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/testenv"
)

// noRegularSaves leaves saving to the confirmations.
func noRegularSaves(c *kafka.Config) { c.CommitInterval = time.Hour; c.CommitEvery = 1 << 30 }

func recvN(t *testing.T, s *client.Subscriber, n int) []client.Received {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	var got []client.Received
	for len(got) < n {
		msgs, _, err := s.RecvContext(ctx)
		require.NoError(t, err)
		got = append(got, msgs...)
	}
	return got
}

// TestAckWithResult_SavedMeansSavedAndUnknownIDsFail: each result says
// saved only once the saved position covers its ack; an id the stream
// does not hold fails with FailedPrecondition; a subscriber opened without
// ConfirmAcks acks but cannot confirm.
func TestAckWithResult_SavedMeansSavedAndUnknownIDsFail(t *testing.T) {
	e := testenv.Start(t, testenv.Options{Topics: []string{"conf"}, Partitions: 1, Kafka: noRegularSaves})
	publish(t, e.Client, "conf", 10)
	s, err := e.Client.Subscribe(t.Context(), client.SubscribeOptions{Subscription: "conf-sub", Topics: []string{"conf"}, FromBeginning: true, ConfirmAcks: true})
	require.NoError(t, err)
	defer s.Close()
	msgs := recvN(t, s, 10)
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	for i, m := range msgs {
		r := s.AckWithResult(m.ID)
		require.NoError(t, r.Get(ctx), "message %d", i)
		assert.GreaterOrEqual(t, e.Committed(t, "conf-sub")["conf"][0], int64(i+1), "saved when the result said so")
	}
	unknown := s.AckWithResult("no-such-id")
	err = unknown.Get(ctx)
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	again := s.AckWithResults(msgs[0].ID)[0]
	err = again.Get(ctx)
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "acked already: %v", err)

	plain, err := e.Client.Subscribe(t.Context(), client.SubscribeOptions{Subscription: "plain-sub", Topics: []string{"conf"}, FromBeginning: true})
	require.NoError(t, err)
	defer plain.Close()
	pm := recvN(t, plain, 1)
	err = plain.AckWithResult(pm[0].ID).Get(ctx)
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
}

// TestAckWithResult_AStreamBrokenBeforeTheAnswerIsUnavailable: the save
// of an ack is held at the broker and the connection breaks: the result
// reports Unavailable, not saved.
func TestAckWithResult_AStreamBrokenBeforeTheAnswerIsUnavailable(t *testing.T) {
	e := testenv.Start(t, testenv.Options{Topics: []string{"brk"}, Partitions: 1, Kafka: noRegularSaves})
	proxy := testenv.NewProxy(t, e.Addr)
	c, err := client.Dial(proxy.Addr)
	require.NoError(t, err)
	defer c.Close()
	publish(t, e.Client, "brk", 2)
	s, err := c.Subscribe(t.Context(), client.SubscribeOptions{Subscription: "brk-sub", Topics: []string{"brk"}, FromBeginning: true, ConfirmAcks: true})
	require.NoError(t, err)
	defer s.Close()
	msgs := recvN(t, s, 2)

	held, resume := make(chan struct{}), make(chan struct{})
	var once, resumeOnce sync.Once
	release := func() { resumeOnce.Do(func() { close(resume) }) }
	t.Cleanup(release)
	e.Cluster.ControlKey(int16(kmsg.TxnOffsetCommit), func(kmsg.Request) (kmsg.Response, error, bool) {
		once.Do(func() {
			close(held)
			e.Cluster.SleepControl(func() { <-resume })
		})
		return nil, nil, false
	})
	r := s.AckWithResult(msgs[0].ID)
	select {
	case <-held:
	case <-time.After(15 * time.Second):
		t.Fatal("the ack's save never reached the broker")
	}
	select {
	case <-r.Ready():
		t.Fatalf("answered while the save is held: %v", r.Get(t.Context()))
	default:
	}
	proxy.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	err = r.Get(ctx)
	assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	release()
	// Later results of the broken stream fail at once.
	err = s.AckWithResult(msgs[1].ID).Get(ctx)
	assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
}

// TestAckWithResult_ReceiveDeliveriesConfirmTheirAcks: with ConfirmAcks,
// handlers wait for Delivery.AckWithResult; every ack is saved when its
// result says so, and a second settle of a message fails.
func TestAckWithResult_ReceiveDeliveriesConfirmTheirAcks(t *testing.T) {
	e := testenv.Start(t, testenv.Options{Topics: []string{"rconf"}, Partitions: 2, Kafka: noRegularSaves})
	const n = 50
	publish(t, e.Client, "rconf", n)
	sub := e.Client.Subscription("rconf-sub", "rconf")
	sub.ReceiveSettings.FromBeginning = true
	sub.ReceiveSettings.ConfirmAcks = true
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var saved, twice atomic.Int64
	var mu sync.Mutex
	var errs []error
	err := sub.Receive(ctx, func(hctx context.Context, m *client.Delivery) {
		wctx, wcancel := context.WithTimeout(hctx, 15*time.Second)
		defer wcancel()
		err := m.AckWithResult().Get(wctx)
		if err == nil {
			saved.Add(1)
		} else {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
		if status.Code(m.AckWithResult().Get(wctx)) == codes.FailedPrecondition {
			twice.Add(1)
		}
		mu.Lock()
		done := saved.Load()+int64(len(errs)) == n
		mu.Unlock()
		if done {
			cancel()
		}
	})
	require.NoError(t, err)
	assert.Empty(t, errs)
	assert.EqualValues(t, n, saved.Load())
	assert.EqualValues(t, n, twice.Load(), "a second settle fails")
	sum := int64(0)
	for _, off := range e.Committed(t, "rconf-sub")["rconf"] {
		sum += off
	}
	assert.EqualValues(t, n, sum, "every confirmed ack is saved")
}

// TestAckWithResult_CloseWaitsForAnswersAtMostCloseTimeout: Close waits
// for unanswered acks before its half-close, but no longer than
// CloseTimeout in all; the result then reports Unavailable.
func TestAckWithResult_CloseWaitsForAnswersAtMostCloseTimeout(t *testing.T) {
	e := testenv.Start(t, testenv.Options{Topics: []string{"cl"}, Partitions: 1, Kafka: noRegularSaves})
	publish(t, e.Client, "cl", 1)
	s, err := e.Client.Subscribe(t.Context(), client.SubscribeOptions{Subscription: "cl-sub", Topics: []string{"cl"}, FromBeginning: true,
		ConfirmAcks: true, CloseTimeout: 500 * time.Millisecond})
	require.NoError(t, err)
	msgs := recvN(t, s, 1)

	held, resume := make(chan struct{}), make(chan struct{})
	var once, resumeOnce sync.Once
	release := func() { resumeOnce.Do(func() { close(resume) }) }
	t.Cleanup(release)
	e.Cluster.ControlKey(int16(kmsg.TxnOffsetCommit), func(kmsg.Request) (kmsg.Response, error, bool) {
		once.Do(func() {
			close(held)
			e.Cluster.SleepControl(func() { <-resume })
		})
		return nil, nil, false
	})
	r := s.AckWithResult(msgs[0].ID)
	<-held
	start := time.Now()
	assert.Error(t, s.Close(), "the server did not end the stream in time")
	assert.Less(t, time.Since(start), 5*time.Second, "Close is bounded by CloseTimeout")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	err = r.Get(ctx)
	assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
}

// TestAckWithResult_AnIDAckedTwiceBeforeItsAnswerKeepsItsOwnAnswer: answers
// are matched to acks by id, so a second ack of an id whose answer is
// pending is refused by the client (FailedPrecondition), and the first
// ack's result still says saved (the server's refusal of the repeat could
// otherwise reach the first result, and "saved" the second).
func TestAckWithResult_AnIDAckedTwiceBeforeItsAnswerKeepsItsOwnAnswer(t *testing.T) {
	e := testenv.Start(t, testenv.Options{Topics: []string{"twice"}, Partitions: 1, Kafka: noRegularSaves})
	publish(t, e.Client, "twice", 3)
	s, err := e.Client.Subscribe(t.Context(), client.SubscribeOptions{Subscription: "twice-sub", Topics: []string{"twice"}, FromBeginning: true, ConfirmAcks: true})
	require.NoError(t, err)
	defer s.Close()
	msgs := recvN(t, s, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	rs := s.AckWithResults(msgs[0].ID, msgs[0].ID, msgs[1].ID)
	again := s.AckWithResult(msgs[1].ID)
	require.NoError(t, rs[0].Get(ctx), "the first ack of the id is saved")
	assert.Equal(t, codes.FailedPrecondition, status.Code(rs[1].Get(ctx)), "a repeat in the same request")
	require.NoError(t, rs[2].Get(ctx))
	err = again.Get(ctx)
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a repeat after the first ack's answer or while it is pending fails with FailedPrecondition, got %v", err)
	}
	assert.GreaterOrEqual(t, e.Committed(t, "twice-sub")["twice"][0], int64(2), "both acks saved")
}
