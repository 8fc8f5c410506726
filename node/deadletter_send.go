// Dead letters, the sending side (deadletter.go has the rest): the
// publishes run queues, the sender goroutine that makes them in queue
// order, the dead letter's headers, and the backoff after failed
// publishes.

package node

import (
	"context"
	"slices"
	"strconv"
	"time"

	"github.com/streamgate/streamgate/broker"
)

// publishDeadLetter publishes dl once. The stored setting in force names
// the topic, so that a dead-letter topic corrected by an update takes the
// messages held for the wrong one.
func (s *subscription) publishDeadLetter(dl *deadLetter) {
	d := &s.dead
	if s.settings.deadLetter != "" {
		dl.topic = s.settings.deadLetter
	}
	d.gen++
	dl.gen = d.gen
	d.mu.Lock()
	d.out = append(d.out, deadLetterSend{shard: dl.m.d.Shard, msg: s.deadLetterMessage(dl), r: deadLetterResult{id: dl.m.d.ID, gen: dl.gen}})
	d.mu.Unlock()
	signal(d.outSig)
	if d.senderQ != s.quit { // none runs for this consumer yet
		d.senderQ = s.quit
		s.releases.Add(1)
		go s.sendDeadLetters(s.quit)
	}
}

// sendDeadLetters publishes the queued dead letters, in order, until quit
// closes (the consumer closes: closeConsumer waits for it through
// releases). It runs on a goroutine of its own, so that a slow hand-off
// waits here rather than on run.
func (s *subscription) sendDeadLetters(quit chan struct{}) {
	defer s.releases.Done()
	d := &s.dead
	for {
		select {
		case <-d.outSig:
		case <-quit:
			return
		}
		d.mu.Lock()
		batch := d.out
		d.out = nil
		d.mu.Unlock()
		for _, p := range batch {
			select {
			case <-quit:
				return // finishDeadLetters gave up on them: they are delivered again
			default:
			}
			r := p.r
			ctx, cancel := context.WithTimeout(context.Background(), deadLetterHandOff)
			s.publisher.Publish(ctx, p.msg, func(res broker.PublishResult) {
				r.err = res.Err
				d.post(r)
			})
			cancel()
		}
	}
}

// deadLetterMessage is what dl's message becomes on the dead-letter
// topic: its key, payload and headers, and the headers that say where it
// came from and why it left.
func (s *subscription) deadLetterMessage(dl *deadLetter) *broker.Message {
	src := &dl.m.d.Message
	hs := make([]broker.Header, 0, len(src.Headers)+len(deadLetterHeaderKeys))
	for _, h := range src.Headers {
		if !slices.Contains(deadLetterHeaderKeys, h.Key) {
			hs = append(hs, h)
		}
	}
	hs = append(hs,
		broker.Header{Key: headerSourceSubscription, Value: []byte(s.name)},
		broker.Header{Key: headerSourceTopic, Value: []byte(dl.m.d.Shard.Topic)},
		broker.Header{Key: headerSourceShard, Value: []byte(shardName(dl.m.d.Shard))},
		broker.Header{Key: headerSourceMessageID, Value: []byte(dl.m.d.ID)},
		broker.Header{Key: headerDeliveryAttempts, Value: strconv.AppendUint(nil, uint64(dl.m.attempt), 10)},
		broker.Header{Key: headerErrorReason, Value: []byte(dl.reason)},
	)
	return &broker.Message{Topic: dl.topic, Key: src.Key, Payload: src.Payload, Headers: hs}
}

// deadLetterBackoff is the wait before publishing again after failures
// failed publishes.
func deadLetterBackoff(failures int) time.Duration {
	d := deadLetterRetryMin
	for i := 1; i < failures && d < deadLetterRetryMax; i++ {
		d *= 2
	}
	return min(d, deadLetterRetryMax)
}

// retryDeadLetters publishes again the failed dead letters whose backoff
// has passed (the retry timer fired).
func (s *subscription) retryDeadLetters(now time.Time) {
	s.dead.timerAt = time.Time{}
	var due []*deadLetter
	for _, dl := range s.dead.held {
		if dl.gen == 0 && !now.Before(dl.retryAt) {
			due = append(due, dl)
		}
	}
	slices.SortFunc(due, func(a, b *deadLetter) int { return bySeq(a.m, b.m) }) // as they were fetched
	on := s.settings.maxAttempts > 0 && s.settings.deadLetter != ""
	for _, dl := range due {
		if on {
			s.publishDeadLetter(dl)
		} else {
			s.handBackDeadLetter(dl)
		}
	}
	s.armDeadLetterRetry()
}

// handBackDeadLetter returns a dead letter whose publish failed to its
// shard's queue, in fetch order, once an update turned dead letters off:
// held for a topic that fails, it would hold its shard for good. It is
// delivered again like a nacked message (or, when this node no longer
// reads its shard, by the shard's next reader).
func (s *subscription) handBackDeadLetter(dl *deadLetter) {
	m, sh := dl.m, dl.m.d.Shard
	delete(s.dead.held, m.d.ID)
	q := s.queue(sh)
	q.deadLettering--
	q.settle(1)
	s.metrics.redeliveries.Inc()
	s.log.Info("dead letters turned off: a held message is delivered again", "id", m.d.ID, "attempts", m.attempt)
	if !s.readsLocally(sh) {
		delete(s.known, m.d.ID)
		s.maybeRelease(sh)
		return
	}
	q.pending = mergeBySeq([]*message{m}, q.pending)
	s.addBuffered(1)
}

// armDeadLetterRetry sets the retry timer for the earliest failed dead
// letter, unless it is armed for then or earlier.
func (s *subscription) armDeadLetterRetry() {
	d := &s.dead
	var next time.Time
	for _, dl := range d.held {
		if dl.gen == 0 && (next.IsZero() || dl.retryAt.Before(next)) {
			next = dl.retryAt
		}
	}
	if next.IsZero() || (!d.timerAt.IsZero() && !next.Before(d.timerAt)) {
		return
	}
	wait := max(time.Until(next), 0)
	if d.timer == nil {
		d.timer = time.NewTimer(wait)
	} else {
		d.timer.Stop()
		d.timer.Reset(wait)
	}
	d.timerAt = next
}

// stopDeadLetterTimer disarms the retry timer (run returns).
func (s *subscription) stopDeadLetterTimer() {
	if s.dead.timer != nil {
		s.dead.timer.Stop()
	}
	s.dead.timerAt = time.Time{}
}
