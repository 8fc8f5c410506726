package node

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker"
)

func TestRetry_BackoffDoublesFromTheMinimumUpToTheMaximum(t *testing.T) {
	const s = time.Second
	for _, c := range []struct {
		lo, hi  time.Duration
		attempt uint32
		want    time.Duration
	}{
		{0, 0, 1, 0},
		{0, 600 * s, 3, 0}, // no minimum: at once
		{10 * s, 600 * s, 1, 10 * s},
		{10 * s, 600 * s, 2, 20 * s},
		{10 * s, 600 * s, 6, 320 * s},
		{10 * s, 600 * s, 7, 600 * s},
		{10 * s, 600 * s, 1 << 31, 600 * s},
		{10 * s, 10 * s, 5, 10 * s},
		{10 * s, 0, 3, 10 * s}, // a maximum under the minimum is the minimum
	} {
		assert.Equal(t, c.want, retryBackoff(c.lo, c.hi, c.attempt), "%s..%s attempt %d", c.lo, c.hi, c.attempt)
	}
	assert.Equal(t, deadLetterRetryMin, deadLetterBackoff(1))
	assert.Equal(t, 2*deadLetterRetryMin, deadLetterBackoff(2))
	assert.Equal(t, deadLetterRetryMax, deadLetterBackoff(1000))
}

// dlPublisher records dead-letter publishes (made by the subscription's
// sender goroutine); the test calls their done.
type dlPublisher struct {
	mu    sync.Mutex // guards msgs and dones
	msgs  []*broker.Message
	dones []func(broker.PublishResult)
}

func (p *dlPublisher) Publish(_ context.Context, msg *broker.Message, done func(broker.PublishResult)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs = append(p.msgs, msg)
	p.dones = append(p.dones, done)
}

// wait waits until n publishes were made, and returns them.
func (p *dlPublisher) wait(t *testing.T, n int) ([]*broker.Message, []func(broker.PublishResult)) {
	t.Helper()
	require.Eventually(t, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.msgs) >= n
	}, 5*time.Second, time.Millisecond, "%d publishes", n)
	p.mu.Lock()
	defer p.mu.Unlock()
	require.Len(t, p.msgs, n)
	return slices.Clone(p.msgs), slices.Clone(p.dones)
}

// count is the publishes made so far.
func (p *dlPublisher) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.msgs)
}

// dlConsumer records acks; nothing else of it is used.
type dlConsumer struct {
	broker.Consumer
	acked []string
}

func (c *dlConsumer) Ack(ids ...string) { c.acked = append(c.acked, ids...) }

// dlSubscription is a subscription with dead letters on, to drive by hand
// (no run goroutine: the test is its only user).
func dlSubscription() (*subscription, *dlPublisher, *dlConsumer) {
	s := newSubscription("s", DefaultConfig(), nil, newMetrics(nil), slog.New(slog.DiscardHandler), nil, nil, nil, &atomic.Bool{})
	p, c := &dlPublisher{}, &dlConsumer{}
	s.publisher, s.consumer = p, c
	s.settings.maxAttempts, s.settings.deadLetter = 5, "dlq"
	return s, p, c
}

// failing hands sess a message of shard t/0 on its attempt'th delivery,
// and returns it.
func failing(s *subscription, sess *session, id string, attempt uint32) *message {
	sh := broker.ShardID{Topic: "t"}
	m := &message{d: broker.Delivery{ID: id, Shard: sh, Message: broker.Message{Topic: "t", Payload: []byte(id)}}, attempt: attempt, holder: sess}
	sess.inflight[id] = m
	s.known[id] = true
	q := s.queue(sh)
	q.holder = sess
	q.held++
	return m
}

// A confirmed dead letter is acked and settled; a result for one that was
// voided meanwhile, or for an older publish of a message dead-lettered
// again, is dropped; a failed one is published again after its backoff.
func TestDeadLetter_ResultsForVoidedMessagesAreDropped(t *testing.T) {
	s, p, c := dlSubscription()
	defer s.stopDeadLetterTimer()
	defer func() { close(s.quit); s.releases.Wait() }() // stops the sender
	sess := newSession(10)
	q := s.queue(broker.ShardID{Topic: "t"})

	// Under the maximum: handed back.
	m := failing(s, sess, "a", 4)
	assert.Equal(t, []*message{m}, s.takeDeadLetters(sess, []*message{m}, ""))
	assert.Zero(t, p.count())

	// At it: held until confirmed, then acked.
	m.attempt = 5
	m.reason = "bad"
	require.Empty(t, s.takeDeadLetters(sess, []*message{m}, ""))
	msgs, dones := p.wait(t, 1)
	assert.Equal(t, "dlq", msgs[0].Topic)
	assert.NotContains(t, sess.inflight, "a")
	assert.Equal(t, 1, q.held)
	assert.Equal(t, 1, q.deadLettering)
	dones[0](broker.PublishResult{Err: errors.New("broker down")})
	s.afterDeadLetters()
	assert.Empty(t, c.acked, "acked after a failed publish")
	assert.False(t, s.dead.timerAt.IsZero(), "no retry armed")
	s.retryDeadLetters(time.Now().Add(time.Minute))
	_, dones = p.wait(t, 2) // published again
	dones[1](broker.PublishResult{ID: "dlq/0@0"})
	s.afterDeadLetters()
	assert.Equal(t, []string{"a"}, c.acked)
	assert.Zero(t, q.held)
	assert.Nil(t, q.holder)
	assert.Zero(t, q.deadLettering)
	assert.NotContains(t, s.known, "a")
	assert.Equal(t, 1.0, counterValue(t, s.metrics.deadLettered.WithLabelValues("s")))
	assert.Equal(t, 1.0, counterValue(t, s.metrics.deadLetterFailures))

	// Voided while its publish is in flight: the result is dropped.
	m = failing(s, sess, "b", 5)
	require.Empty(t, s.takeDeadLetters(sess, []*message{m}, reasonDeadline))
	p.wait(t, 3) // in flight: a publish not sent yet would be dropped
	s.voidMessages(m.d.Shard, map[*session]int{})
	assert.Zero(t, q.deadLettering)
	assert.NotContains(t, s.known, "b")
	// Delivered again (by the shard's next read) and dead-lettered again
	// before the first publish's result comes.
	q = s.queue(m.d.Shard)
	m = failing(s, sess, "b", 6)
	require.Empty(t, s.takeDeadLetters(sess, []*message{m}, reasonDeadline))
	_, dones = p.wait(t, 4)
	dones[2](broker.PublishResult{ID: "dlq/0@1"}) // the voided publish
	s.afterDeadLetters()
	assert.Equal(t, []string{"a"}, c.acked, "a voided publish's result was taken for the new one")
	assert.Equal(t, 1, q.deadLettering)
	dones[3](broker.PublishResult{ID: "dlq/0@2"})
	s.afterDeadLetters()
	assert.Equal(t, []string{"a", "b"}, c.acked)
	assert.Zero(t, q.deadLettering)
}

// counterValue reads a counter.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, c.Write(&m))
	return m.GetCounter().GetValue()
}
